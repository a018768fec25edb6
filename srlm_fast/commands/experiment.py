"""`srlm experiment`: the loop under reward arms × seeds (self, random, oracle, meta, no DPO), one table and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from srlm_fast.config import ConfigError, load_job_config
from srlm_fast.eval.experiment_report import write_experiment_report
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.experiment import ARMS, DEFAULT_ARMS, collect, resolve_arms, run_experiment

HELP = "run the loop under several reward arms × seeds and write one table and plots (experiment.md)"
ACCEPTS_OVERRIDES = True


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: a comma-separated list of integers, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None, help="TOML loop config of every arm (default: the embedded one)"
    )
    parser.add_argument("--name", default="experiment", help="experiment directory under runs_dir")
    parser.add_argument(
        "--arms",
        default=",".join(DEFAULT_ARMS),
        help="comma-separated arms: " + "; ".join(f"{a.name}: {a.description}" for a in ARMS.values()),
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument(
        "--report-only", action="store_true", help="only collect the finished runs and write the report"
    )
    parser.add_argument(
        "--m1-from",
        type=Path,
        default=None,
        help="an earlier experiment directory: every seed starts from its M1 (refused when this config would make "
        "another M1); for sweeps over the iterations' settings",
    )
    parser.epilog = (
        "Loop config overrides apply to every arm (--iterations=2 --eval.n_task_prompts=1000 ...). Seeds can run in "
        "separate processes with the same --name (--seeds=0, --seeds=1, ...); then --report-only --seeds=0,1,2 "
        "writes the table of all of them."
    )


def main(args: argparse.Namespace) -> int:
    base = load_job_config(LoopConfig, args.config, list(args.overrides))
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    resolve_arms(arms)
    seeds = _ints(args.seeds)
    if args.report_only:
        root = Path(base.runs_dir) / args.name
        write_experiment_report(
            collect(root, arms, seeds, base.iterations), root, title=f"srlm experiment `{args.name}`"
        )
        print(f"experiment report: {root / 'experiment.md'}")
        return 0
    run_experiment(base, arms, seeds, name=args.name, m1_from=args.m1_from)
    return 0
