"""`srlm dpo --config FILE [--section.key=value ...]`: DPO on preference pairs (plain process or torchrun)."""

from __future__ import annotations

import argparse

from srlm_fast.commands import _train_command

HELP = "DPO on preference pairs; reference log-probs are computed once if missing (works under torchrun)"
ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _train_command.add_arguments(parser, "dpo")


def main(args: argparse.Namespace) -> int:
    return _train_command.run(args, "dpo")
