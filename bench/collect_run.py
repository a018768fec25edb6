"""One finished `srlm run` as a committed result: every model's evaluation (the judge against human rankings and
pairs with 95% bootstrap intervals and the length baseline beside it, the task world where there is one), the
stats and response lengths of every iteration, and the wall time and memory of every stage.

    python bench/collect_run.py RUN_DIR [--log RUN_LOG] [--time-v TIME_LOG] --name NAME [--note TEXT ...]

Stage times and the peak RSS so far come from the run's provenance.json (recorded by runs of today's code); for
an older run, give its printed log (`--log`): its "<stage> took <s>s" lines are read instead. `--time-v` reads
the wall time and peak RSS of the whole process from a `/usr/bin/time -v` report.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from srlm_fast.config import read_toml
from srlm_fast.io import read_json, read_jsonl
from srlm_fast.recipe.experiment import model_evaluations
from srlm_fast.recipe.rundir import stage_costs

HUMAN_KEYS = ("human_rankings", "human_pairs")


def stages_from_log(text: str) -> list[dict]:
    """{stage, seconds} from a run log's "    <stage> took <s>s" lines, in order."""
    return [
        {"stage": m[1], "seconds": float(m[2])} for m in re.finditer(r"^    (.+) took ([\d.]+)s$", text, re.M)
    ]


def time_v(text: str) -> dict:
    """Wall time (s) and peak RSS (MB) from a `/usr/bin/time -v` report."""
    out = {}
    if m := re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text):
        parts = [float(x) for x in m[1].split(":")]
        out["wall_s"] = sum(x * 60**i for i, x in enumerate(reversed(parts)))
    if m := re.search(r"Maximum resident set size \(kbytes\): (\d+)", text):
        out["peak_rss_mb"] = int(m[1]) // 1024
    return out


def model_summary(m: dict) -> dict:
    """The headline numbers of one eval/m<k>.json: per human data set, judge and length baseline with intervals."""
    out: dict = {"model": m["model"]}
    for key in HUMAN_KEYS:
        if key in m:
            out[key] = {
                "judge": m[key],
                "judge_ci95": m.get(f"{key}_ci95"),
                "length_baseline": m.get(f"{key}_length_baseline"),
                "length_baseline_ci95": m.get(f"{key}_length_baseline_ci95"),
            }
    for key in ("task_accuracy", "judge_agreement_own", "win_rate_vs_previous"):
        if key in m:
            out[key] = m[key]
    return out


def iteration_summary(it: Path) -> dict:
    """An iteration's stats and its candidates' lengths (characters)."""
    stats = read_json(it / "stats.json") if (it / "stats.json").exists() else {}
    lengths = [len(x) for r in read_jsonl(it / "candidates.jsonl")[0] for x in r["responses"]]
    return {
        "stats": stats,
        "candidate_chars": {
            "n": len(lengths),
            "mean": statistics.fmean(lengths),
            "median": statistics.median(lengths),
        }
        if lengths
        else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--log", help="the run's printed log (stage times of runs older than provenance timing)")
    ap.add_argument("--time-v", help="a /usr/bin/time -v report of the run's process")
    ap.add_argument("--name", required=True, help="results file name: bench/results/<name>-<device>.json")
    ap.add_argument("--note", action="append", default=[], help="a note stored with the result (repeatable)")
    args = ap.parse_args()
    run = Path(args.run_dir)
    config = read_toml(run / "config.toml")
    iterations = int(config.get("iterations", 0))
    stages = stage_costs(run)
    if not stages and args.log:
        stages = stages_from_log(Path(args.log).read_text())
    payload = {
        "run_dir": str(run),
        "config": config,
        "process": time_v(Path(args.time_v).read_text()) if args.time_v else None,
        "stages": stages,
        "stage_seconds_total": sum(s["seconds"] for s in stages),
        "models": [model_summary(m) for m in model_evaluations(run)],
        "iterations": [
            iteration_summary(run / f"iter{t}")
            for t in range(1, iterations + 1)
            if (run / f"iter{t}").exists()
        ],
        "command": "python " + " ".join(sys.argv),
        "notes": args.note,
    }
    path = common.write_results(args.name, torch.device("cpu"), payload)
    for m in payload["models"]:
        cells = []
        for key in HUMAN_KEYS:
            if key in m:
                metric = "pairwise_accuracy" if key == "human_rankings" else "accuracy"
                ci = (m[key]["judge_ci95"] or {}).get(metric) or [None, None]
                cells.append(
                    f"{key} {m[key]['judge'][metric]} {ci} (length {m[key]['length_baseline'][metric]})"
                )
        print(m["model"], "; ".join(cells))
    print(f"{len(stages)} stages, {payload['stage_seconds_total'] / 60:.1f} min -> {path}")


if __name__ == "__main__":
    main()
