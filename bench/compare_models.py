"""Two models on the same held-out task-world prompts, paired per prompt: accuracy of each and the difference B − A
with a 95% bootstrap interval, over all prompts and per family. For models of different runs (another M1 recipe);
within a run, `srlm experiment`'s report already pairs M_k with M1.

    python bench/compare_models.py RUN_A/eval/m1.json RUN_B/eval/m1.json [--out FILE --merge-key KEY]

Both runs must have drawn the same prompts (the same eval.n_task_prompts, seed and seed_data.families in their
config.toml), or the comparison is refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.common import versions
from srlm_fast.config import from_dict, read_toml
from srlm_fast.eval import experiment_report as ER
from srlm_fast.io import read_json, write_json_atomic
from srlm_fast.recipe import tasks
from srlm_fast.recipe.config import LoopConfig


def _prompts_key(eval_file: Path) -> tuple:
    cfg = from_dict(LoopConfig, read_toml(eval_file.parents[1] / "config.toml"))
    return cfg.eval.n_task_prompts, cfg.seed, tuple(cfg.seed_data.families)


def compare(a: Path, b: Path) -> dict:
    key = _prompts_key(a)
    if _prompts_key(b) != key:
        raise SystemExit(f"{a} and {b} were evaluated on different prompts: {key} vs {_prompts_key(b)}")
    n, seed, families = key
    family = np.array([t.family for t in tasks.eval_prompts(n, seed, list(families) or None)])
    va, vb = (ER.outcomes(read_json(p), "correct") for p in (a, b))
    out = {}
    for name in ["all", *sorted(set(family))]:
        mask = np.ones_like(family, dtype=bool) if name == "all" else family == name
        out[name] = {
            "n": int(mask.sum()),
            "a": float(np.nanmean(va[mask])),
            "b": float(np.nanmean(vb[mask])),
            "b_minus_a": ER.stratified_bootstrap([vb[mask] - va[mask]]).to_dict(),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="eval/m<k>.json of model A")
    ap.add_argument("b", type=Path, help="eval/m<k>.json of model B")
    ap.add_argument("--out", help="JSON results file; with --merge-key the result goes under that key")
    ap.add_argument("--merge-key", default="default")
    args = ap.parse_args()
    result = compare(args.a, args.b)
    for name, r in result.items():
        d = r["b_minus_a"]
        print(f"{name:>12} (n={r['n']:4d}): A {r['a']:6.1%}  B {r['b']:6.1%}  B − A {100 * d['value']:+5.1f} "
              f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]")  # fmt: skip
    if args.out:
        out = Path(args.out)
        doc = read_json(out) if out.exists() else {"name": "compare_models", "results": {}}
        doc.update(date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), versions=versions())
        doc["results"][args.merge_key] = {
            "a": str(args.a), "b": str(args.b), "command": "python " + " ".join(sys.argv), "families": result,
        }  # fmt: skip
        write_json_atomic(out, doc)


if __name__ == "__main__":
    main()
