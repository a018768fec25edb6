"""A checkpoint as a zero-shot judge against humans, with bootstrap CIs and the length baseline.

    python bench/judge_smollm2.py --checkpoint DIR [--trees N] [--pairs N] [--mode expected] [--out FILE]

Scores every reply of the first N held-out OpenAssistant trees (human ranks) and of the first N HH-RLHF
chosen/rejected pairs with the checkpoint's judge (`srlm eval judge`'s scoring: Policy.judge with the rubric
template), then reports the paper's Table-4 metrics, a 95% bootstrap CI for each (prompts / pairs resampled),
and the same metrics for the "longer is better" baseline (score = reply length in characters). The per-reply
scores are kept in the JSON, so any metric can be recomputed. Results are written after each data set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_name, versions
from srlm_fast.eval.judge_agreement import pair_items, ranked_items, read_hh_pairs, read_oasst_trees
from srlm_fast.eval.judge_intervals import pair_report, ranking_report
from srlm_fast.io import write_json_atomic
from srlm_fast.recipe.evaluation import length_scores
from srlm_fast.recipe.judge import JudgeConfig, JudgeTemplate
from srlm_fast.recipe.policy import Policy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _versions(*packages: str) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--rankings", default=str(DATA / "prefs" / "oasst_en_100_trees.jsonl"))
    ap.add_argument("--pairs-file", default=str(DATA / "prefs" / "hh_rlhf_helpful_base_test.jsonl.gz"))
    ap.add_argument("--trees", type=int, default=30, help="first N trees (0: none)")
    ap.add_argument("--pairs", type=int, default=0, help="first N HH-RLHF pairs (0: none)")
    ap.add_argument("--mode", choices=("sample", "expected"), default="expected")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--template", default="full")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument(
        "--max-len", type=int, default=0, help="prompt + completion tokens per sequence (0: model's)"
    )
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    out: dict = {
        "what": "a checkpoint's judge vs human preferences (Table-4 metrics, 95% bootstrap CIs, length baseline)",
        "date": dt.date.today().isoformat(),
        "device": device_name(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(),
        "versions": {**versions(), **_versions("tokenizers", "gguf"), "srlm_fast_commit": commit},
        "checkpoint": args.checkpoint,
        "judge": {
            "mode": args.mode,
            "k": args.k,
            "template": args.template,
            "max_new_tokens": args.max_new_tokens,
            "max_len": args.max_len,
        },
        "bootstrap": {"n_boot": args.n_boot, "seed": args.seed, "unit": "prompt (trees) / pair"},
        "command": " ".join(sys.argv),
    }
    policy = Policy.load(args.checkpoint, device="cpu", max_len=args.max_len or None)
    template = JudgeTemplate.from_spec(args.template)
    config = JudgeConfig(mode=args.mode, k=args.k, max_new_tokens=args.max_new_tokens)

    def score(items):
        t0 = time.perf_counter()
        scores = [r.score for r in policy.judge(items, template, config, seed=args.seed)]
        return scores, time.perf_counter() - t0

    if args.trees:
        prompts = read_oasst_trees(args.rankings)[: args.trees]
        items = ranked_items(prompts)
        with policy.progress("judging human rankings"):
            scores, secs = score(items)
        perfect = 4.5 if args.mode == "expected" else 5.0
        lengths = length_scores(items)
        out["rankings"] = {
            "file": args.rankings,
            "n_trees": len(prompts),
            "n_responses": len(items),
            "seconds": round(secs, 1),
            "seconds_per_response": round(secs / len(items), 2),
            "judge": ranking_report(prompts, scores, perfect=perfect, n_boot=args.n_boot, seed=args.seed),
            "length_baseline": ranking_report(
                prompts, lengths, perfect=float("inf"), n_boot=args.n_boot, seed=args.seed
            ),
            "scores": scores,
        }
        write_json_atomic(args.out, out)
        m = out["rankings"]["judge"]["metrics"]
        print(f"rankings: pairwise accuracy {m['pairwise_accuracy']} over {m['n_pairs']} pairs; {secs:.0f} s")
    if args.pairs:
        pairs = read_hh_pairs(args.pairs_file).pairs[: args.pairs]
        items = pair_items(pairs)
        with policy.progress("judging human pairs"):
            scores, secs = score(items)
        lengths = length_scores(items)  # chosen, rejected, chosen, ... as the judge's scores
        out["pairs"] = {
            "file": args.pairs_file,
            "n_pairs": len(pairs),
            "seconds": round(secs, 1),
            "seconds_per_response": round(secs / len(items), 2),
            "judge": pair_report(scores[0::2], scores[1::2], n_boot=args.n_boot, seed=args.seed),
            "length_baseline": pair_report(lengths[0::2], lengths[1::2], n_boot=args.n_boot, seed=args.seed),
            "scores": scores,
        }
        write_json_atomic(args.out, out)
        m = out["pairs"]["judge"]["metrics"]
        print(f"pairs: accuracy {m['accuracy']} over {m['n_pairs']} pairs; {secs:.0f} s")
    out["prompts_skipped_too_long"] = policy.skipped_too_long
    write_json_atomic(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
