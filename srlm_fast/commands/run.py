"""`srlm run`: the self-rewarding loop, resumable, on the embedded default or a config file."""

from __future__ import annotations

import argparse

from srlm_fast.config import load_job_config
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.loop import run_loop

HELP = "run (or resume) the self-rewarding loop: SFT → M1, then self-instruct, judge, pairs, DPO, evaluate"
ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML loop config (default: the embedded default)")
    parser.add_argument(
        "--name", default=None, help="run name (directory under runs_dir); same as --name=..."
    )
    parser.epilog = (
        "Any config key can be overridden: --iterations=2 --model.preset=tiny --sft.optim.lr=1e-3 ... "
        "A killed run resumes where it stopped when started again with the same options. "
        "Many GPUs: torchrun --nproc_per_node=N -m srlm_fast.cli run ... (every rank runs the loop; "
        "[generation] mode = data_parallel or lockstep)."
    )


def main(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.name:
        overrides.append(f"--name={args.name}")
    cfg = load_job_config(LoopConfig, args.config, overrides)
    run_loop(cfg)
    return 0
