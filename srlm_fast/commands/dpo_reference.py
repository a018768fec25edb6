"""`srlm dpo-reference --model DIR --pairs IN [--out OUT]`: precompute DPO reference log-probs."""

from __future__ import annotations

import argparse

from srlm_fast.commands._args import add_overwrite, device, positive_int
from srlm_fast.io import check_output, looks_like_jsonl
from srlm_fast.model.checkpoint import is_checkpoint_dir
from srlm_fast.train.data import default_reference_path
from srlm_fast.train.reference import compute_reference_logprobs

HELP = "score DPO pairs with the reference model once; writes <pairs>.ref.jsonl for `srlm dpo`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="reference (initial) HF checkpoint directory")
    parser.add_argument("--pairs", required=True, help="JSONL with prompt, chosen, rejected")
    parser.add_argument("--out", help="output JSONL (default: <pairs stem>.ref.jsonl)")
    add_overwrite(parser, "--out file")
    parser.add_argument(
        "--max-seq-len", type=positive_int, default=1024, help="the DPO run's data.max_seq_len"
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="pairs per forward per rank")
    parser.add_argument("--device", type=device, default="auto")


def main(args: argparse.Namespace) -> int:
    if args.max_seq_len < 2:
        raise ValueError(f"--max-seq-len must be at least 2, got {args.max_seq_len}")
    if not is_checkpoint_dir(args.model):
        raise ValueError(
            f"--model: {args.model}: not a checkpoint directory (config.json + model.safetensors)"
        )
    out = args.out or default_reference_path(args.pairs)
    check_output(
        out, kind="JSONL file", overwrite=args.overwrite, inputs=[args.pairs], is_kind=looks_like_jsonl
    )
    out = compute_reference_logprobs(
        args.model,
        args.pairs,
        out,
        overwrite=args.overwrite,
        max_seq_len=args.max_seq_len,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(out)
    return 0
