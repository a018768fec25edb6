"""`srlm dpo-reference --model DIR --pairs IN [--out OUT]`: precompute DPO reference log-probs."""

from __future__ import annotations

import argparse

from srlm_fast.train.reference import compute_reference_logprobs

HELP = "score DPO pairs with the reference model once; writes <pairs>.ref.jsonl for `srlm dpo`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="reference (initial) HF checkpoint directory")
    parser.add_argument("--pairs", required=True, help="JSONL with prompt, chosen, rejected")
    parser.add_argument("--out", help="output JSONL (default: <pairs stem>.ref.jsonl)")
    parser.add_argument("--max-seq-len", type=int, default=1024, help="the DPO run's data.max_seq_len")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward per rank")
    parser.add_argument("--device", default="auto")


def main(args: argparse.Namespace) -> int:
    out = compute_reference_logprobs(
        args.model,
        args.pairs,
        args.out,
        max_seq_len=args.max_seq_len,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(out)
    return 0
