"""Building and loading indexes by kind: the one place that knows which retriever class a manifest names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from srlm_fast.io import DataError
from srlm_fast.retrieval.base import Retriever, check_corpus, load_passages, read_manifest
from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import Passage
from srlm_fast.retrieval.dense import DenseRetriever, load_embedder
from srlm_fast.retrieval.hybrid import HybridRetriever

KINDS = ("bm25", "dense", "hybrid")


def new_retriever(
    kind: str, *, embedder=None, bm25_params: dict | None = None, fusion: str = "zscore"
) -> Retriever:
    """An empty retriever of `kind`; dense and hybrid need an embedder (see `dense.load_embedder`), and a hybrid
    fuses by `fusion` (see `hybrid`)."""
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "bm25":
        return BM25Retriever(**(bm25_params or {}))
    if embedder is None:
        raise ValueError(f"a {kind} index needs an embedding model (--embedder DIR)")
    if kind == "dense":
        return DenseRetriever(embedder)
    return HybridRetriever(BM25Retriever(**(bm25_params or {})), DenseRetriever(embedder), fusion=fusion)


def _embedder_spec(manifest: dict) -> dict:
    params = manifest["params"]
    return (
        (params.get("dense") or {}).get("embedder")
        if manifest["kind"] == "hybrid"
        else params.get("embedder")
    )


def load_index(
    directory: str | os.PathLike,
    *,
    embedder=None,
    device: str = "cpu",
    mmap: bool = False,
    expected: Sequence[Passage] | None = None,
) -> Retriever:
    """The index saved in `directory`, its stored corpus checked against its manifest (and against `expected`,
    when given: an index built from another corpus is a `CorpusMismatchError`). A dense or hybrid index loads
    the embedder its manifest names unless one is passed."""
    directory = Path(directory)
    m = read_manifest(directory)
    kind = m["kind"]
    if kind not in KINDS:
        raise DataError(f"{directory}: unknown index kind {kind!r} (this version reads {', '.join(KINDS)})")
    passages, digest = load_passages(directory, m)
    if kind != "bm25" and embedder is None:
        spec = _embedder_spec(m) or {}
        if not isinstance(spec.get("path"), str):
            raise DataError(f"{directory}: the manifest names no embedding model; pass one")
        embedder = load_embedder(spec["path"], kind=spec.get("type", "auto"), device=device)
    bm25_params = m["params"].get("bm25", m["params"]) if kind != "dense" else None
    try:
        retriever = new_retriever(kind, embedder=embedder, bm25_params=bm25_params)
    except (TypeError, ValueError) as e:
        raise DataError(f"{directory / 'index.json'}: bad parameters ({e})") from None
    retriever._load(directory, m, mmap)
    parts = [
        retriever,
        *([retriever.bm25, retriever.dense] if isinstance(retriever, HybridRetriever) else []),
    ]
    for r in parts:
        r.passages, r.corpus_sha256, r.offset = passages, digest, 0
    if expected is not None:
        check_corpus(retriever, expected, str(directory))
    return retriever
