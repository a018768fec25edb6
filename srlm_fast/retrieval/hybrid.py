"""Hybrid retrieval: BM25 and dense rankings fused by reciprocal rank fusion (RRF, Cormack et al., 2009).

score(p) = sum over retrievers r of 1 / (c + rank_r(p)), rank 1-based, c = 60, over each retriever's top `depth`.

Why RRF rather than a weighted sum of scores: BM25 scores are unbounded and their scale moves with the query's
length and the corpus, cosine similarities sit in [-1, 1]; a weighted sum needs per-corpus normalisation and a
tuned weight, and is dominated by whichever scale is larger. RRF uses ranks only, has one constant that the
literature leaves at 60, and rewards passages both retrievers place high, which is what lexical and semantic
matches agreeing looks like.
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


class HybridRetriever(Retriever):
    """BM25 + dense, fused by RRF over the top `depth` of each."""

    kind = "hybrid"

    def __init__(
        self, bm25: BM25Retriever, dense: DenseRetriever, *, depth: int = 100, c: int = RRF_C
    ) -> None:
        super().__init__()
        self.bm25, self.dense, self.depth, self.c = bm25, dense, depth, c

    def params(self) -> dict:
        return {"depth": self.depth, "c": self.c, "bm25": self.bm25.params(), "dense": self.dense.params()}

    def _index(self, passages: list[Passage]) -> None:
        self.bm25.index(passages)
        self.dense.index(passages)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        n = len(self.passages)
        lexical, semantic = self.bm25.scores(queries), self.dense.scores(queries)
        return np.stack([
            rrf_scores([top_k(lexical[i], self.depth), top_k(semantic[i], self.depth)], n, self.c)
            for i in range(len(queries))
        ])  # fmt: skip

    def _shard(self, lo: int, hi: int) -> Retriever:
        # A shard's ranks are not the corpus's ranks: fusing per shard would change the result.
        raise NotImplementedError(
            "a hybrid index is not sharded; shard its BM25 and dense parts and fuse after"
        )

    def _save(self, directory: Path) -> None:
        self.bm25._save(directory)
        self.dense._save(directory)

    def _load(self, directory: Path, manifest: dict, mmap: bool = False) -> None:
        self.depth, self.c = int(manifest["params"]["depth"]), int(manifest["params"]["c"])
        for part in (self.bm25, self.dense):
            part._load(directory, {**manifest, "params": manifest["params"][part.kind]}, mmap)
