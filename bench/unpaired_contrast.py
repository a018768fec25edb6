"""Two experiments' arms compared from their committed summaries, when the run directories are gone.

`collect_experiments.py --contrast` pairs two experiments per seed and held-out prompt, which needs both runs'
per-prompt outcomes. A committed summary (`bench/results/self_rewarding_*.json`, written by
`collect_experiments.py`) keeps each arm's per-seed rates only. Rebuilding the 0/1 outcomes from a rate and the
number of prompts per seed gives the same outcomes up to their order, so an *unpaired* bootstrap is still
exact: the prompts of each arm and model are resampled independently, within each seed (stratified), and the
seeds' means are averaged, as `srlm experiment` pools. Only the seeds both experiments ran are compared (seeds
differ more than prompts do). For the judge's agreement, which each arm measures on its own model's answers,
unpairing loses nothing. For a gain (last − M1) it ignores the positive correlation of a prompt's outcomes under
M1 and under the last model, so the interval is wider than the paired one: conservative.

    python bench/unpaired_contrast.py \\
        bench/results/self_rewarding_evidence_smollm2-cpu.json:evidence_hard_mc8_3seeds/self \\
        bench/results/self_rewarding_evidence_smollm2-cpu.json:evidence_ungrounded_hard_3seeds/self \\
        --n 62 --out bench/results/evidence_grounded_vs_ungrounded-cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import versions
from srlm_fast.eval.experiment_report import stratified_resampled_means
from srlm_fast.io import write_json_atomic

N_BOOT = 2000


def outcomes_from_rate(rate: float, n: int) -> np.ndarray:
    """The 0/1 outcomes of `n` prompts whose mean is `rate` (in some order); refuses a rate no count of `n` gives."""
    k = round(rate * n)
    if abs(k / n - rate) > 1e-6:
        raise ValueError(f"rate {rate} is not a count out of {n} prompts: is --n the prompts per seed?")
    return np.r_[np.ones(k), np.zeros(n - k)]


def unpaired_difference(
    terms: Sequence[tuple[float, Sequence[np.ndarray]]], n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, float]:
    """Σ sign · (mean over seeds of each seed's mean) over independent samples, with a 95% percentile interval.

    `terms`: (sign, per-seed outcomes) pairs, e.g. [(+1, a_last), (−1, a_m1), (−1, b_last), (+1, b_m1)] for a
    difference of gains; every term is resampled on its own."""
    rng = np.random.default_rng(seed)
    point = sum(sign * float(np.mean([g.mean() for g in gs])) for sign, gs in terms)
    boots = sum(sign * stratified_resampled_means(gs, rng, n_boot) for sign, gs in terms)
    low, high = np.quantile(boots, [0.025, 0.975])
    return {"value": point, "low": float(low), "high": float(high)}


def arm_summary(path: str, label: str, arm: str) -> dict:
    """The arm `arm` of experiment `label` in a committed `collect_experiments.py` JSON."""
    data = json.loads(Path(path).read_text())
    for e in data["experiments"]:
        if e["label"] == label:
            if arm not in e["arms"]:
                raise KeyError(
                    f"{path}: experiment {label!r} has no arm {arm!r} (it has {sorted(e['arms'])})"
                )
            return e["arms"][arm]
    raise KeyError(f"{path}: no experiment {label!r} (it has {[e['label'] for e in data['experiments']]})")


def common_seeds(a: dict, b: dict) -> list[str]:
    seeds = sorted(set(a["per_seed"]) & set(b["per_seed"]), key=int)
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a['per_seed'])} and {sorted(b['per_seed'])}")
    return seeds


def contrast(a: dict, b: dict, n: int, n_boot: int = N_BOOT) -> dict[str, dict[str, float]]:
    """A − B over their common seeds: the gain (last − M1), and the judge's agreement with the checker at M1 and
    at the last model."""
    seeds = common_seeds(a, b)

    def per_seed(arm: dict, metric: str, model: int) -> list[np.ndarray]:
        return [outcomes_from_rate(arm["per_seed"][s][metric][model], n) for s in seeds]

    gain = [
        (+1, per_seed(a, "accuracy", -1)),
        (-1, per_seed(a, "accuracy", 0)),
        (-1, per_seed(b, "accuracy", -1)),
        (+1, per_seed(b, "accuracy", 0)),
    ]
    out = {"gain_difference": unpaired_difference(gain, n_boot)}
    for name, model in (("agreement_first_difference", 0), ("agreement_last_difference", -1)):
        terms = [(+1, per_seed(a, "agreement", model)), (-1, per_seed(b, "agreement", model))]
        out[name] = unpaired_difference(terms, n_boot)
    return out


def _spec(s: str) -> tuple[str, str, str]:
    path, _, rest = s.rpartition(":")
    label, _, arm = rest.partition("/")
    if not (path and label and arm):
        raise argparse.ArgumentTypeError(f"expected FILE:LABEL/ARM, got {s!r}")
    return path, label, arm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=_spec, help="FILE:LABEL/ARM (A of A − B)")
    ap.add_argument("b", type=_spec, help="FILE:LABEL/ARM")
    ap.add_argument("--n", type=int, required=True, help="held-out prompts per seed (both experiments)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    a, b = arm_summary(*args.a), arm_summary(*args.b)
    result = {
        "name": Path(args.out).name.removesuffix(".json").removesuffix("-cpu"),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "command": "python bench/unpaired_contrast.py " + " ".join(sys.argv[1:]),
        "a": "{}:{}/{}".format(*args.a),
        "b": "{}:{}/{}".format(*args.b),
        "seeds": [int(s) for s in common_seeds(a, b)],
        "n_per_seed": args.n,
        "unpaired": contrast(a, b, args.n),
    }
    write_json_atomic(args.out, result)
    for k, v in result["unpaired"].items():
        print(f"{k:28s} {100 * v['value']:+6.1f} [{100 * v['low']:+6.1f}, {100 * v['high']:+6.1f}] points")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
