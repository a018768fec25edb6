"""Shared implementation of `srlm sft` and `srlm dpo` (the same loop; the subcommand sets the task)."""

from __future__ import annotations

import argparse
import sys

from srlm_fast.config import load_job_config
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.trainer import TrainingDiverged, train


def add_arguments(parser: argparse.ArgumentParser, task: str) -> None:
    parser.add_argument("--config", help=f"TOML job config (see srlm_fast/configs/{task}-*.toml)")
    parser.epilog = (
        "Any config key can be overridden as --section.key=value, e.g. --optim.lr=1e-5 "
        "--schedule.max_steps=100. Under torchrun: torchrun --nproc_per_node=8 -m srlm_fast.cli "
        f"{task} --config FILE."
    )


def run(args: argparse.Namespace, task: str) -> int:
    cfg = load_job_config(TrainConfig, args.config, args.overrides)
    cfg.task = task
    try:
        train(cfg)
    except TrainingDiverged as e:
        print(f"srlm {task}: {e}", file=sys.stderr)
        return 3
    return 0
