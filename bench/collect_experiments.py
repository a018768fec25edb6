"""Collect finished `srlm experiment` directories into one committed result: each experiment's arms (accuracy per
model, gain with its bootstrap interval, per-iteration pair stats) and how well the self-judge separates its own
correct and wrong candidates (the diagnostic behind the gains, or their absence).

    python bench/collect_experiments.py DIR[=LABEL] ... --out bench/results/self_rewarding_levers-cpu.json \
        [--contrast LABEL_A/ARM LABEL_B/ARM ...]

`--contrast` compares two experiments whose M1s differ (an ablation of the judge's training data): the difference
of their gains, paired per seed and held-out prompt, with a bootstrap interval (`experiment_report.gain_contrast`).
Both must have evaluated the same prompts: their runs' seed and `[eval]` and `seed_data.families` are checked.

The judge's separation in iteration 1 (checker labels, computed here after the fact; no stage reads them):
`auc_within_prompt`, over the prompts whose candidates are partly right, the chance that a correct candidate scores
above a wrong one of the same prompt (ties half): what pair selection sees; 0.5 means the reward carries no
information about correctness, whatever the loop then does with it. `auc_pooled` compares all correct with all
wrong candidates, across prompts (confounded by family: easy families' answers are right more often).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_name, versions
from srlm_fast.config import read_toml
from srlm_fast.eval.experiment_report import gain_contrast
from srlm_fast.io import read_jsonl
from srlm_fast.recipe import tasks
from srlm_fast.recipe.experiment import candidate_stats


def auc(positive: list[float], negative: list[float]) -> float | None:
    """P(score of a random correct candidate > that of a random wrong one), ties counting half."""
    if not positive or not negative:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def within_prompt_auc(judgments: Path) -> tuple[float | None, int]:
    """The AUC of correct vs wrong candidates within each partly-right prompt, pooled over those prompts."""
    wins = total = prompts = 0
    for row in read_jsonl(judgments)[0]:
        scored = [(s, tasks.check(row["prompt"], r).correct) for r, s in zip(row["responses"], row["scores"])]
        ok = [s for s, c in scored if c and s is not None]
        bad = [s for s, c in scored if not c and s is not None]
        if ok and bad:
            prompts += 1
            wins += sum((p > n) + 0.5 * (p == n) for p in ok for n in bad)
            total += len(ok) * len(bad)
    return (wins / total if total else None), prompts


def collect(root: Path, label: str) -> dict:
    summary = json.loads((root / "experiment.json").read_text())["summary"]
    judge = {}
    for run in sorted(p for p in root.iterdir() if (p / "config.toml").is_file()):
        stats = candidate_stats(run / "iter1")
        if "scores_correct" in stats:
            ok, bad = stats["scores_correct"], stats["scores_wrong"]
            mean = lambda xs: sum(xs) / len(xs) if xs else None
            within, n_mixed = within_prompt_auc(run / "iter1" / "judgments.jsonl")
            judge[run.name] = {
                "auc_within_prompt": within,
                "mixed_prompts": n_mixed,
                "auc_pooled": auc(ok, bad),
                "mean_score_correct": mean(ok),
                "mean_score_wrong": mean(bad),
                "n_correct": len(ok),
                "n_wrong": len(bad),
            }
    overrides = (root / "command.txt").read_text().strip() if (root / "command.txt").exists() else None
    return {
        "label": label,
        "dir": str(root),
        "command": overrides,
        "arms": summary["arms"],
        "judge_iter1": judge,
    }


def _evaluation_settings(root: Path, seed: int) -> dict:
    """What decides a run's held-out prompts: its seed, `[eval]` and task families."""
    cfg = read_toml(next(root.glob(f"s{seed}-*/config.toml")))
    return {"seed": cfg["seed"], "eval": cfg["eval"], "families": cfg["seed_data"]["families"]}


def contrast(experiments: dict[str, Path], a: str, b: str) -> dict:
    """`a` and `b` as LABEL/ARM: the gain of a's arm minus b's, paired per seed and prompt."""
    (label_a, _, arm_a), (label_b, _, arm_b) = a.rpartition("/"), b.rpartition("/")
    results = {}
    for label in (label_a, label_b):
        if label not in experiments:
            raise SystemExit(f"--contrast: no experiment labelled {label!r} ({', '.join(experiments)})")
        results[label] = json.loads((experiments[label] / "experiment.json").read_text())["results"]
    out = gain_contrast(results[label_a], arm_a, results[label_b], arm_b)
    for s in out["seeds"]:
        if _evaluation_settings(experiments[label_a], s) != _evaluation_settings(experiments[label_b], s):
            raise SystemExit(
                f"--contrast {a} {b}: seed {s} evaluated other prompts (seed, [eval] or families differ)"
            )
    return {"a": a, "b": b, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiments", nargs="+", help="experiment directory, optionally =LABEL")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--contrast",
        nargs=2,
        action="append",
        default=[],
        metavar=("LABEL_A/ARM", "LABEL_B/ARM"),
        help="gain of A's arm minus B's, paired per seed and prompt (experiments with different M1s)",
    )
    args = ap.parse_args()
    out = {
        "name": Path(args.out).name.removesuffix(".json").removesuffix("-cpu"),  # the result's file name
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device_name(torch.device("cpu")),
        "versions": versions(),
        "experiments": [],
    }
    dirs = {}
    for spec in args.experiments:
        path, _, label = spec.partition("=")
        dirs[label or Path(path).name] = Path(path)
        out["experiments"].append(collect(Path(path), label or Path(path).name))
    out["contrasts"] = [contrast(dirs, a, b) for a, b in args.contrast]
    for e in out["experiments"]:
        print(f"\n{e['label']}")
        for arm, a in e["arms"].items():
            g = a["gain"]
            acc = " → ".join(f"{x:.1%}" for x in a["accuracy"])
            print(f"  {arm:7s} {acc}   gain {g['value']:+.1%} [{g['low']:+.1%}, {g['high']:+.1%}]")
        for run, j in e["judge_iter1"].items():
            print(
                f"  iter1 {run}: judge AUC within prompt {j['auc_within_prompt']} ({j['mixed_prompts']} prompts)"
            )
    for c in out["contrasts"]:
        g = c["gain_difference"]
        print(
            f"\n{c['a']} − {c['b']} (seeds {c['seeds']}): {g['value']:+.1%} [{g['low']:+.1%}, {g['high']:+.1%}]"
        )
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
