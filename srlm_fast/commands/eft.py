"""`srlm eft build`: judge-training (EFT) data from human-ranked replies, judged by an SFT model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srlm_fast.commands._args import add_overwrite, device, judge_template, nonnegative_int, positive_int
from srlm_fast.device import resolve_device
from srlm_fast.io import DataError, check_output, looks_like_jsonl, write_jsonl_atomic
from srlm_fast.model.checkpoint import is_checkpoint_dir
from srlm_fast.recipe.eft import build_eft
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.seed_data import read_ranked

HELP = "build EFT (judge-training) data: the model judges human-ranked replies, agreeing judgments are kept"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help=HELP)
    b.add_argument("--checkpoint", type=Path, required=True, help="the SFT model (HF checkpoint directory)")
    b.add_argument("--ranked", type=Path, nargs="+", required=True,
                   help="JSONL with human-ranked or -scored replies (e.g. the OpenAssistant seed files)")  # fmt: skip
    b.add_argument("--out", type=Path, required=True, help="output JSONL of {prompt, response, score}")
    add_overwrite(b, "--out file")
    b.add_argument("--template", default="full", help="judge template: compact, full, or a file")
    b.add_argument("--max-new-tokens", type=positive_int, default=256)
    b.add_argument("--limit", type=nonnegative_int, default=0, help="use at most this many prompts (0: all)")
    b.add_argument("--device", type=device, default="auto")
    b.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    # Everything that can be refused is checked before the model is loaded.
    check_output(args.out, kind="JSONL file", overwrite=args.overwrite, inputs=[*args.ranked, args.checkpoint],
                 is_kind=looks_like_jsonl)  # fmt: skip
    if not is_checkpoint_dir(args.checkpoint):
        raise ValueError(
            f"--checkpoint: {args.checkpoint}: not a checkpoint directory (config.json + weights)"
        )
    template = judge_template(args.template)
    ranked = []
    for path in args.ranked:
        prompts, errors = read_ranked(path, on_error="skip")
        for e in errors:
            print(f"skipped: {e}")
        ranked += prompts
    if not ranked:
        raise DataError(f"no prompts with ranked or scored replies in {', '.join(map(str, args.ranked))}")
    if args.limit:
        ranked = ranked[: args.limit]
    policy = Policy.load(args.checkpoint, device=resolve_device(args.device))
    with policy.progress("judging ranked replies"):
        rows, stats = build_eft(ranked, policy.generate, template,
                                max_new_tokens=args.max_new_tokens, seed=args.seed)  # fmt: skip
    write_jsonl_atomic(args.out, rows)
    print(json.dumps(stats.to_dict(), indent=2))
    print(f"wrote {len(rows)} EFT examples → {args.out}")
    return 0
