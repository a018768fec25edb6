"""`srlm sft --config FILE [--section.key=value ...]`: supervised fine-tuning (plain process or torchrun)."""

from __future__ import annotations

import argparse

from srlm_fast.commands import _train_command

HELP = "supervised fine-tuning on chat JSONL (FSDP2; works under torchrun)"
ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _train_command.add_arguments(parser, "sft")


def main(args: argparse.Namespace) -> int:
    return _train_command.run(args, "sft")
