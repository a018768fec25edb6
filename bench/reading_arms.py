"""The arms of one experiment on freshly invented facts: each arm's gain and the contrasts the issue asks for (#15).

    python bench/reading_arms.py self=SELF.json random=RANDOM.json oracle=ORACLE.json [--half oracle] \\
        [--seeds 0,2] [--out FILE] [--plot PNG]

Each JSON is a `bench/reading_transfer.py` summary of one arm's runs, which keeps every model's grade per item
(`correct`). Runs are matched across arms by seed (`s<seed>-` in the run's name); every run answered the same items
(`--item-seed`), so a contrast between arms is paired per item within a seed and pooled over the seeds the arms
share, stratified, as `srlm experiment` pools. The first arm is the one the others are compared with:
gain(first) − gain(other), a gain being M_last − M1 (the arms share M1, so this is also M_last(first) −
M_last(other)). `--half ARM` adds gain(first) − ½ gain(ARM): the issue's "the self-judge gain is at least half the
oracle's". Reads no run directory, so it works from committed summaries.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reading_transfer import band_plot, summary_header
from srlm_fast.eval.experiment_report import stratified_bootstrap
from srlm_fast.io import write_json_atomic

_SEED = re.compile(r"(?:^|/)s(\d+)-")


def seed_of(run: str) -> int:
    m = _SEED.search(run)
    if m is None:
        raise ValueError(f"run {run!r}: no seed in its name (expected s<seed>-<arm>)")
    return int(m.group(1))


def load_arm(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """seed → model ("M1", …) → 0/1 grade per item, from a reading_transfer JSON."""
    data = json.loads(path.read_text())
    if "correct" not in data:
        raise ValueError(
            f"{path}: no per-item grades ('correct'); rerun bench/reading_transfer.py with --out"
        )
    out: dict[int, dict[str, np.ndarray]] = {}
    for run, models in data["correct"].items():
        seed = seed_of(run)
        if seed in out:
            raise ValueError(f"{path}: two runs of seed {seed}")
        out[seed] = {m: np.array([c == "1" for c in s], dtype=np.float64) for m, s in models.items()}
    return out


def _model_key(m: str) -> int:
    return int(m[1:])


def common_models(arms: dict[str, dict[int, dict[str, np.ndarray]]]) -> list[str]:
    sets = [set(models) for runs in arms.values() for models in runs.values()]
    return sorted(set.intersection(*sets), key=_model_key)


def arm_table(runs: dict[int, dict[str, np.ndarray]], models: list[str]) -> dict:
    """Per model: accuracy pooled over seeds; for the last, its gain over the first, paired per item."""
    seeds = sorted(runs)
    first, last = models[0], models[-1]
    return {
        "seeds": seeds,
        "accuracy": {m: stratified_bootstrap([runs[s][m] for s in seeds]).to_dict() for m in models},
        "gain": stratified_bootstrap([runs[s][last] - runs[s][first] for s in seeds]).to_dict(),
        "gain_per_seed": {
            str(s): stratified_bootstrap([runs[s][last] - runs[s][first]]).to_dict() for s in seeds
        },
    }


def contrast(
    a: dict[int, dict[str, np.ndarray]],
    b: dict[int, dict[str, np.ndarray]],
    models: list[str],
    weight: float = 1.0,
) -> dict:
    """gain(a) − weight · gain(b), paired per item within each seed both have, pooled over those seeds."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two arms share no seed")
    first, last = models[0], models[-1]
    for s in seeds:
        if a[s][first].shape != b[s][first].shape:
            raise ValueError(f"seed {s}: the arms answered different numbers of items")
    diffs = [(a[s][last] - a[s][first]) - weight * (b[s][last] - b[s][first]) for s in seeds]
    return {"seeds": seeds, "weight": weight, **stratified_bootstrap(diffs).to_dict()}


def _pts(iv: dict) -> str:
    return f"{100 * iv['value']:+.1f} [{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]"


def plot(summary: dict, path: Path) -> None:
    models = summary["models"]
    bands = [
        (f"{arm} (seeds {res['seeds']})", models, [res["accuracy"][m] for m in models], None)
        for arm, res in summary["arms"].items()
    ]
    band_plot(models, bands, path, f"arms on {summary['n_items']} fresh facts per model and seed (95% bands)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "arms", nargs="+", help="ARM=reading_transfer.json, the first arm is compared with the others"
    )
    ap.add_argument("--half", help="an arm whose half gain the first arm's is compared with (the oracle)")
    ap.add_argument("--seeds", help="comma-separated seeds to keep (default: every seed of each file)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    keep = {int(x) for x in args.seeds.split(",")} if args.seeds else None
    arms: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for spec in args.arms:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{spec!r}: expected ARM=FILE")
        arms[name] = load_arm(Path(path))
        if keep is not None:
            arms[name] = {seed: runs for seed, runs in arms[name].items() if seed in keep}
            if not arms[name]:
                raise SystemExit(f"{path}: none of the seeds {sorted(keep)}")
    if args.half and args.half not in arms:
        raise SystemExit(f"--half {args.half}: not one of the arms {list(arms)}")
    models = common_models(arms)
    if len(models) < 2:
        raise SystemExit(f"the arms share fewer than two models ({models})")
    first = next(iter(arms))
    n_items = {len(g) for runs in arms.values() for ms in runs.values() for g in ms.values()}
    what = "each arm's accuracy on freshly invented facts (bench/reading_transfer.py) and contrasts of gains"
    summary: dict = {
        **summary_header(
            what,
            files={name: path for name, _, path in (s.partition("=") for s in args.arms)},
            models=models,
            n_items=max(n_items),
        ),
        "arms": {name: arm_table(runs, models) for name, runs in arms.items()},
        "contrasts": {
            f"{first} − {other}": contrast(arms[first], arms[other], models)
            for other in arms
            if other != first
        },
    }
    if args.half:
        summary["contrasts"][f"{first} − ½ {args.half}"] = contrast(arms[first], arms[args.half], models, 0.5)
    last = models[-1]
    print(f"| arm | {' | '.join(models)} | gain {last} − {models[0]} | per seed |")
    print(f"|---|{'---|' * len(models)}---|---|")
    for name, res in summary["arms"].items():
        accs = " | ".join(f"{100 * res['accuracy'][m]['value']:.1f}%" for m in models)
        per_seed = ", ".join(f"{100 * iv['value']:+.1f}" for iv in res["gain_per_seed"].values())
        print(f"| {name} | {accs} | {_pts(res['gain'])} | {per_seed} |")
    for label, c in summary["contrasts"].items():
        print(f"{label} (gains, paired per item, seeds {c['seeds']}): {_pts(c)} points")
    if args.out:
        write_json_atomic(args.out, summary)
    if args.plot:
        plot(summary, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
