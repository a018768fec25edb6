"""Ablations of one iteration's preference pairs by the checker's verdict (they read the checker: diagnostics,
not levers). From a finished run of `srlm experiment` (an arm directory with iteration 1 done), redo iteration 1
from its pairs with only the pairs of the given outcomes kept, then reference log-probs, DPO and the evaluation of
M2, as the loop does:

    python bench/ablate_pairs.py SOURCE_ARM_DIR --keep right,wrong --out-dir DIR [loop overrides ...]

`--keep right,wrong` ("abstain": the judge abstains exactly where no pair carries a correctness signal: both
answers wrong, or no task) or `--keep right` ("precise": only the pairs preferring a right answer to a wrong one).
`--subsample N` then keeps a random N of those pairs (seeded by the run's seed): with an oracle arm as the source,
whether its gain needs its number of pairs or only their content. The same M1, prompts, candidates, judgments and
replay rows are reused (hard links). The loop overrides must be the source run's own (its config is checked on
resume); `--iterations=1` is implied.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srlm_fast.config import load_job_config, read_toml
from srlm_fast.io import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.experiment import share_artifacts, start_run_dir
from srlm_fast.recipe.loop import run_loop
from srlm_fast.recipe.stage_checks import PAIR_OUTCOMES, pair_outcome

SHARED = ("seed", "tokenizer", "m0", "m1", "eval/m1.json",
          "iter1/prompts.jsonl", "iter1/candidates.jsonl", "iter1/judgments.jsonl")  # fmt: skip


def kept_pairs(
    rows: list[dict], keep: set[str], subsample: int | None = None, seed: int = 0
) -> tuple[list[dict], int]:
    """The pairs.jsonl rows whose checker outcome is in `keep` (at most `subsample` of them, drawn at random, in
    their order) and every replay row, and how many pairs were removed."""
    kept = [i for i, r in enumerate(rows)
            if not r.get("replay") and pair_outcome(r["prompt"], r["chosen"], r["rejected"])[0] in keep]  # fmt: skip
    if subsample is not None and subsample < len(kept):
        kept = sorted(random.Random(f"ablate:{seed}").sample(kept, subsample))
    chosen = set(kept)
    out = [r for i, r in enumerate(rows) if r.get("replay") or i in chosen]
    return out, len(rows) - len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="an arm directory of a finished experiment (iteration 1 done)")
    ap.add_argument(
        "--keep", required=True, help=f"comma-separated pair outcomes to keep, of {PAIR_OUTCOMES}"
    )
    ap.add_argument(
        "--out-dir", required=True, help="where the ablated run goes (as <out-dir>/<source name>)"
    )
    ap.add_argument("--subsample", type=int, help="keep a random N of the kept pairs")
    args, overrides = ap.parse_known_args()
    keep = set(args.keep.split(","))
    if unknown := keep - set(PAIR_OUTCOMES):
        ap.error(f"unknown outcomes {sorted(unknown)}; known: {', '.join(PAIR_OUTCOMES)}")
    src = Path(args.source)
    saved = read_toml(src / "config.toml")
    cfg = load_job_config(LoopConfig, None, [*overrides, f"--runs_dir={args.out_dir}", f"--name={src.name}",
                                             f"--seed={saved['seed']}", f"--judge.reward={saved['judge']['reward']}",
                                             "--iterations=1"])  # fmt: skip
    dst = Path(args.out_dir) / src.name
    start_run_dir(cfg, dst)
    print("shared:", share_artifacts(src, dst, SHARED, iter1_stats=False), flush=True)
    if not (dst / "iter1" / "pairs.jsonl").exists():
        stats = read_json(src / "iter1" / "stats.json")
        rows, removed = kept_pairs(
            read_jsonl(src / "iter1" / "pairs.jsonl")[0], keep, args.subsample, cfg.seed
        )
        pairs = {**stats["pairs"], "pairs": stats["pairs"]["pairs"] - removed, "removed_by_checker": removed,
                 "kept_outcomes": sorted(keep), "subsample": args.subsample}  # fmt: skip
        kept_stats = {k: v for k, v in stats.items() if k in ("prompts", "candidates", "judge")}
        write_json_atomic(dst / "iter1" / "stats.json", {**kept_stats, "pairs": pairs})
        write_jsonl_atomic(dst / "iter1" / "pairs.jsonl", rows)
        print(f"kept {len(rows)} rows, removed {removed} pairs", flush=True)
    run_loop(cfg)


if __name__ == "__main__":
    main()
