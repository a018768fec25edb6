"""`srlm eval qa`: retrieval recall and QA exact match / F1 in four conditions (closed-book, RAG, oracle passage,
shuffled passage); see `srlm_fast/recipe/qa.py`.

srlm eval qa --data XQUAD.json [--checkpoint DIR] [--index DIR | --corpus FILE...] [--conditions ...] [--k K]

Data: SQuAD/XQuAD JSON (each question's paragraph known: recall by id, all four conditions) or NQ-open JSONL
(recall by answer string; closed and rag only). The retriever: a built index (--index), a BM25 index built in
memory from --corpus files, or (SQuAD data) from the data's own paragraphs. Without --checkpoint only retrieval
is measured. --limit N takes N questions evenly spaced over the file, so every article is represented.
Everything is read and the output checked before a model loads.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from srlm_fast.commands._args import add_overwrite, device, nonnegative_int, positive_int
from srlm_fast.commands.index import add_bm25_arguments, bm25_params
from srlm_fast.device import resolve_device
from srlm_fast.eval.qa_data import read_qa_data
from srlm_fast.io import check_output, looks_like_json, write_json_atomic
from srlm_fast.model.checkpoint import is_checkpoint_dir
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.qa import CONDITIONS, QASettings, run_qa
from srlm_fast.retrieval.corpus import read_corpus
from srlm_fast.retrieval.index import load_index, new_retriever


def add_qa_arguments(sub) -> None:
    p = sub.add_parser("qa", help="QA with retrieval: recall@k, EM/F1 closed-book, RAG, oracle, shuffled")
    p.add_argument("--data", required=True, help="SQuAD/XQuAD .json or NQ-open .jsonl")
    p.add_argument("--checkpoint", default=None, help="the model that answers (without: retrieval only)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--index", default=None, help="an index directory (srlm index build)")
    src.add_argument("--corpus", nargs="+", default=None, help="corpus files for an in-memory BM25 index")
    add_bm25_arguments(p)
    p.add_argument(
        "--conditions", default=",".join(CONDITIONS), help=f"comma-separated, of {', '.join(CONDITIONS)}"
    )
    p.add_argument("--k", type=positive_int, default=3, help="retrieved passages in a RAG prompt (default 3)")
    p.add_argument("--limit", type=nonnegative_int, default=0, help="at most this many questions (0: all)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)
    p.add_argument("--max-len", type=positive_int, default=2048,
                   help="prompt + answer tokens per sequence: the KV cache's length (default 2048)")  # fmt: skip
    p.add_argument("--max-batch", type=positive_int, default=16, help="rows decoded at once (default 16)")
    p.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device, default="auto")
    p.add_argument("--out", default=None, help="write the results and every answer as JSON here")
    add_overwrite(p, "--out file")


def _conditions(text: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in names if c not in CONDITIONS]
    if not names or bad:
        raise ValueError(f"--conditions: expected some of {', '.join(CONDITIONS)}, got {text!r}")
    return names


def evenly_spaced(n: int, limit: int) -> list[int]:
    """`limit` positions spread evenly over range(n) (all of them when limit is 0 or at least n)."""
    if not limit or limit >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def qa_main(args: argparse.Namespace) -> int:
    conditions = _conditions(args.conditions)
    params = bm25_params(args)
    if args.out:
        check_output(args.out, kind="JSON file", overwrite=args.overwrite, is_kind=looks_like_json,
                     inputs=[args.data, args.checkpoint, args.index, *(args.corpus or [])])  # fmt: skip
    if args.checkpoint is not None and not is_checkpoint_dir(args.checkpoint):
        raise ValueError(
            f"--checkpoint: {args.checkpoint}: not a checkpoint directory (config.json + model.safetensors)"
        )
    examples = read_qa_data(args.data)
    examples = [examples[i] for i in evenly_spaced(len(examples), args.limit)]
    has_gold = all(ex.passage_id is not None for ex in examples)
    if args.checkpoint and not has_gold and {"oracle", "shuffled"} & set(conditions):
        raise ValueError(f"{args.data}: oracle and shuffled need each question's paragraph (SQuAD data); "
                         "pass --conditions closed,rag")  # fmt: skip
    retriever = None
    if args.index:
        retriever = load_index(args.index, device="cpu")
    elif args.corpus or has_gold:
        retriever = new_retriever("bm25", bm25_params=params).index(read_corpus(args.corpus or [args.data]))
    elif args.checkpoint and "rag" in conditions:
        raise ValueError(f"{args.data}: has no passages; the rag condition needs --index or --corpus")
    if retriever is None and not args.checkpoint:
        raise ValueError("nothing to measure: give --checkpoint and/or a retriever (--index or --corpus)")
    if args.checkpoint and retriever is None:
        conditions = tuple(c for c in conditions if c != "rag")
    settings = QASettings(conditions=conditions, k=args.k, max_new_tokens=args.max_new_tokens, seed=args.seed,
                          n_boot=args.n_boot)  # fmt: skip
    policy = None
    if args.checkpoint:
        policy = Policy.load(args.checkpoint, device=resolve_device(args.device), max_batch=args.max_batch,
                             max_len=args.max_len)  # fmt: skip
    try:
        result = run_qa(examples, settings, retriever=retriever, policy=policy)
    finally:
        if policy is not None:
            policy.close()
    result = {"data": str(args.data), "checkpoint": args.checkpoint, "index": args.index, **result}
    if args.out:
        write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    return 0
