"""`srlm eft build`: judge-training (EFT) data from human-ranked replies, judged by an SFT model or labelled by
the human ranking itself (`--labels human`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srlm_fast.commands._args import add_overwrite, device, judge_template, nonnegative_int, positive_int
from srlm_fast.device import resolve_device
from srlm_fast.io import DataError, check_output, looks_like_jsonl, write_jsonl_atomic
from srlm_fast.model.checkpoint import is_checkpoint_dir
from srlm_fast.recipe.eft import EFTStats, build_eft, held_out_prompts, label_eft, leave_out
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.seed_data import read_ranked

HELP = "build EFT (judge-training) data: the model judges human-ranked replies, agreeing judgments are kept"
LABELS_HELP = (
    "model: the paper's way (the checkpoint judges, judgments that agree with the humans are kept); human: the "
    "human ranking is the score (best 5, worst 1) and the judgment is `Score: <n>`, for a model that agrees too "
    "rarely (no checkpoint needed)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help=HELP)
    b.add_argument("--labels", choices=("model", "human"), default="model", help=LABELS_HELP)
    b.add_argument("--checkpoint", type=Path, help="the SFT model (HF checkpoint directory); --labels model")
    b.add_argument("--ranked", type=Path, nargs="+", required=True,
                   help="JSONL with human-ranked or -scored replies (e.g. the OpenAssistant seed files)")  # fmt: skip
    b.add_argument("--out", type=Path, required=True, help="output JSONL of {prompt, response, score}")
    add_overwrite(b, "--out file")
    b.add_argument("--template", default="full", help="judge template: compact, full, or a file")
    b.add_argument("--max-new-tokens", type=positive_int, default=256)
    b.add_argument("--held-out", type=Path, nargs="*", default=[],
                   help="OpenAssistant tree files (e.g. the judge evaluation's): their prompts are left out")  # fmt: skip
    b.add_argument("--max-response-chars", type=nonnegative_int, default=0,
                   help="--labels human: cut longer replies to this many characters (0: never)")  # fmt: skip
    b.add_argument("--limit", type=nonnegative_int, default=0, help="use at most this many prompts (0: all)")
    b.add_argument("--device", type=device, default="auto")
    b.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    # Everything that can be refused is checked before the model is loaded.
    inputs = [*args.ranked, *args.held_out] + ([args.checkpoint] if args.checkpoint else [])
    check_output(
        args.out, kind="JSONL file", overwrite=args.overwrite, inputs=inputs, is_kind=looks_like_jsonl
    )
    if args.labels == "model" and args.checkpoint is None:
        raise ValueError("--labels model needs --checkpoint (the model that judges)")
    if args.checkpoint is not None and not is_checkpoint_dir(args.checkpoint):
        raise ValueError(
            f"--checkpoint: {args.checkpoint}: not a checkpoint directory (config.json + weights)"
        )
    template = judge_template(args.template)
    held_out = held_out_prompts(args.held_out)
    ranked = []
    for path in args.ranked:
        prompts, errors = read_ranked(path, on_error="skip")
        for e in errors:
            print(f"skipped: {e}")
        ranked += prompts
    if not ranked:
        raise DataError(f"no prompts with ranked or scored replies in {', '.join(map(str, args.ranked))}")
    kept = leave_out(ranked, held_out)
    if held_out:
        print(f"left out {len(ranked) - len(kept)} prompts of the held-out trees")
    ranked = kept[: args.limit] if args.limit else kept
    if args.labels == "human":
        rows, stats = label_eft(ranked, template, max_response_chars=args.max_response_chars)
        return _write(args.out, rows, stats)
    policy = Policy.load(args.checkpoint, device=resolve_device(args.device))
    with policy.progress("judging ranked replies"):
        rows, stats = build_eft(ranked, policy.generate, template,
                                max_new_tokens=args.max_new_tokens, seed=args.seed)  # fmt: skip
    return _write(args.out, rows, stats)


def _write(out: Path, rows: list[dict], stats: EFTStats) -> int:
    write_jsonl_atomic(out, rows)
    print(json.dumps(stats.to_dict(), indent=2))
    print(f"wrote {len(rows)} EFT examples → {out}")
    return 0
