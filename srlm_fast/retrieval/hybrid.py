"""Hybrid retrieval: BM25 and dense scores fused per query.

Two fusions (`fusion`):
- "zscore" (default): each retriever's scores standardised over the corpus for that query (mean 0, sd 1), then
  averaged with equal weights. Standardising is what makes BM25's unbounded, query-length-dependent scale and
  cosine's [-1, 1] comparable without a per-corpus weight; the weight is left at ½, untuned.
- "rrf": reciprocal rank fusion (Cormack et al., 2009), score(p) = Σ_r 1 / (c + rank_r(p)), rank 1-based,
  c = 60, over each retriever's top `depth`. Ranks only, so it ignores how far ahead a retriever's first hit is.

Measured on XQuAD-en (1,190 questions, 240 paragraphs; `bench/recall_xquad.py`, README "Retrieval"), recall@1:
BM25 0.931; with all-MiniLM-L6-v2 as the embedder, dense 0.882, RRF 0.935 (+0.4 points over BM25, an interval
that holds 0), zscore 0.950 (+1.8 [+0.8, +3.0]); with SmolLM2-135M's hidden states (a poor embedder), RRF 0.610 and
zscore 0.930. RRF gives a confident BM25 hit and a marginal one the same vote; standardised scores keep how far
a hit stands out, so a retriever that separates nothing moves the fused ranking little.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from srlm_fast.retrieval.base import Retriever, top_k
from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import Passage
from srlm_fast.retrieval.dense import DenseRetriever

RRF_C = 60


def rrf_scores(rankings: Sequence[np.ndarray], n: int, c: int = RRF_C) -> np.ndarray:
    """(n,) fused scores from rankings (each an array of positions, best first)."""
    out = np.zeros(n, dtype=np.float64)
    for ranking in rankings:
        out[ranking] += 1.0 / (c + 1 + np.arange(len(ranking)))
    return out.astype(np.float32)


def zscore_scores(per_retriever: Sequence[np.ndarray]) -> np.ndarray:
    """(queries, n) fused scores: the mean over retrievers of each one's (queries, n) scores standardised per
    query (a query whose scores are all equal contributes 0)."""
    out = np.zeros(per_retriever[0].shape, dtype=np.float64)
    for scores in per_retriever:
        x = np.asarray(scores, dtype=np.float64)
        sd = x.std(axis=1, keepdims=True)
        out += (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    return (out / len(per_retriever)).astype(np.float32)


FUSIONS = ("zscore", "rrf")
LEGACY_FUSION = "rrf"  # of a hybrid index written before `fusion` existed (its manifest names none)


def fuse(
    fusion: str, lexical: np.ndarray, semantic: np.ndarray, depth: int = 100, c: int = RRF_C
) -> np.ndarray:
    """(queries, n) hybrid scores from BM25's and the dense retriever's (queries, n) scores."""
    if fusion == "zscore":
        return zscore_scores([lexical, semantic])
    if fusion == "rrf":
        n = lexical.shape[1]
        return np.stack(
            [rrf_scores([top_k(lx, depth), top_k(se, depth)], n, c) for lx, se in zip(lexical, semantic)]
        )
    raise ValueError(f"hybrid fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


class HybridRetriever(Retriever):
    """BM25 + dense, fused by `fusion` ("zscore": standardised scores averaged; "rrf": over the top `depth`)."""

    kind = "hybrid"

    def __init__(
        self,
        bm25: BM25Retriever,
        dense: DenseRetriever,
        *,
        fusion: str = "zscore",
        depth: int = 100,
        c: int = RRF_C,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"hybrid fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.bm25, self.dense, self.fusion, self.depth, self.c = bm25, dense, fusion, depth, c

    def params(self) -> dict:
        return {"fusion": self.fusion, "depth": self.depth, "c": self.c, "bm25": self.bm25.params(),
                "dense": self.dense.params()}  # fmt: skip

    def _index(self, passages: list[Passage]) -> None:
        self.bm25.index(passages)
        self.dense.index(passages)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return fuse(self.fusion, self.bm25.scores(queries), self.dense.scores(queries), self.depth, self.c)

    def _shard(self, lo: int, hi: int) -> Retriever:
        # A shard's ranks, score means and spreads are not the corpus's: fusing per shard would change the result.
        raise NotImplementedError(
            "a hybrid index is not sharded; shard its BM25 and dense parts and fuse after"
        )

    def _save(self, directory: Path) -> None:
        self.bm25._save(directory)
        self.dense._save(directory)

    def _load(self, directory: Path, manifest: dict, mmap: bool = False) -> None:
        self.depth, self.c = int(manifest["params"]["depth"]), int(manifest["params"]["c"])
        self.fusion = manifest["params"].get("fusion", LEGACY_FUSION)
        if self.fusion not in FUSIONS:
            raise ValueError(
                f"{directory}: unknown hybrid fusion {self.fusion!r} (this version reads {FUSIONS})"
            )
        for part in (self.bm25, self.dense):
            part._load(directory, {**manifest, "params": manifest["params"][part.kind]}, mmap)
