"""`srlm eft build`: judge-training (EFT) data from human-ranked replies, judged by an SFT model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srlm_fast.device import resolve_device
from srlm_fast.io import write_jsonl_atomic
from srlm_fast.recipe.eft import build_eft
from srlm_fast.recipe.judge import JudgeTemplate
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
    b.add_argument("--template", default="full", help="judge template: compact, full, or a file")
    b.add_argument("--max-new-tokens", type=int, default=256)
    b.add_argument("--limit", type=int, default=0, help="use at most this many prompts (0: all)")
    b.add_argument("--device", default="auto")
    b.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    ranked = []
    for path in args.ranked:
        prompts, errors = read_ranked(path, on_error="skip")
        for e in errors:
            print(f"skipped: {e}")
        ranked += prompts
    if args.limit:
        ranked = ranked[: args.limit]
    policy = Policy.load(args.checkpoint, device=resolve_device(args.device))
    with policy.progress("judging ranked replies"):
        rows, stats = build_eft(ranked, policy.generate, JudgeTemplate.from_spec(args.template),
                                max_new_tokens=args.max_new_tokens, seed=args.seed)  # fmt: skip
    write_jsonl_atomic(args.out, rows)
    print(json.dumps(stats.to_dict(), indent=2))
    print(f"wrote {len(rows)} EFT examples → {args.out}")
    return 0
