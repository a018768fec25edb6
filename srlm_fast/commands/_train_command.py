"""Shared implementation of `srlm sft` and `srlm dpo` (the same loop; the subcommand sets the task)."""

from __future__ import annotations

import argparse
import sys

from srlm_fast.config import load_job_config
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.trainer import TrainingDiverged, train


def add_arguments(parser: argparse.ArgumentParser, task: str) -> None:
    parser.add_argument("--config", help=f"TOML job config (see srlm_fast/configs/{task}-*.toml)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a run_dir that holds an earlier run, and replace an existing final_dir checkpoint "
        "(same as --checkpoint.overwrite=true); without it such outputs are refused",
    )
    parser.epilog = (
        "Any config key can be overridden as --section.key=value, e.g. --optim.lr=1e-5 "
        "--schedule.max_steps=100. Under torchrun: torchrun --nproc_per_node=8 -m srlm_fast.cli "
        f"{task} --config FILE."
    )


def run(args: argparse.Namespace, task: str) -> int:
    cfg = load_job_config(TrainConfig, args.config, args.overrides)
    cfg.task = task
    if args.overwrite:
        cfg.checkpoint.overwrite = True
    cfg.validate()  # every value and input path, before anything is read or built
    try:
        train(cfg)
    except TrainingDiverged as e:
        print(f"srlm {task}: {e}", file=sys.stderr)
        return 3
    return 0
