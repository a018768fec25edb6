"""Dense retrieval (skipped without faiss): a checkpoint's mean-pooled hidden states as unit vectors, exact
cosine search equal to a plain numpy ranking, a save/load round trip, and hybrid fusion by RRF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from srlm_fast.model.checkpoint import save_pretrained
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.retrieval.base import top_k
from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import Passage
from srlm_fast.retrieval.dense import DenseRetriever, LlamaEmbedder
from srlm_fast.retrieval.hybrid import HybridRetriever, rrf_scores
from srlm_fast.retrieval.index import load_index
from tests._train_fixtures import TEST_MODEL, one_thread

pytest.importorskip("faiss")
_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)

TEXTS = [
    "the red fox runs over the hill",
    "blue whales sing long songs",
    "green frogs sit on lily pads",
    "a red fox and a blue bird",
    "songs of the humpback whale",
    "stone bridges over quiet rivers",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dense")
    tok = Tokenizer.train_bpe(TEXTS * 20, vocab_size=TEST_MODEL.vocab_size)
    return save_pretrained(build_model(TEST_MODEL, seed=0), root / "ckpt", tokenizer=tok)


@pytest.fixture(scope="module")
def embedder(checkpoint) -> LlamaEmbedder:
    return LlamaEmbedder(str(checkpoint), batch_size=4)


def passages() -> list[Passage]:
    return [Passage(f"t{i}", t) for i, t in enumerate(TEXTS)]


def test_embeddings_are_mean_pooled_unit_vectors(embedder) -> None:
    import torch

    vecs = embedder.embed(TEXTS)
    assert vecs.shape == (len(TEXTS), TEST_MODEL.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    # Batching and padding change nothing: one text alone, unpadded, by hand.
    ids = torch.tensor([embedder.tokenizer.encode(TEXTS[2])])
    with torch.no_grad():
        h = embedder.model(ids)[0].mean(0).numpy()
    np.testing.assert_allclose(vecs[2], h / np.linalg.norm(h), atol=2e-5)


def test_dense_search_equals_a_numpy_ranking(embedder) -> None:
    r = DenseRetriever(embedder).index(passages())
    queries = ["red fox", "whale song", TEXTS[5]]
    q = embedder.embed(queries)
    ref = q @ embedder.embed(TEXTS).T
    for row, hits in zip(ref, r.search(queries, k=4)):
        assert [h.index for h in hits] == top_k(row, 4).tolist()
        np.testing.assert_allclose([h.score for h in hits], row[top_k(row, 4)], atol=1e-5)
    assert r.search([TEXTS[5]], k=1)[0][0].id == "t5"  # a passage is its own nearest neighbour


def test_dense_and_hybrid_round_trip(tmp_path: Path, embedder) -> None:
    queries = ["red fox", "quiet river bridge"]
    for r in (DenseRetriever(embedder), HybridRetriever(BM25Retriever(), DenseRetriever(embedder), depth=4)):
        r.index(passages())
        r.save(tmp_path / r.kind)
        loaded = load_index(tmp_path / r.kind)  # loads the embedder its manifest names
        assert loaded.kind == r.kind and loaded.params() == r.params()
        assert loaded.search(queries, k=3) == r.search(queries, k=3)


def test_rrf_fuses_ranks() -> None:
    fused = rrf_scores([np.array([2, 0, 1]), np.array([0, 3])], n=5, c=60)
    expected = np.array([1 / 62 + 1 / 61, 1 / 63, 1 / 61, 1 / 62, 0.0])
    np.testing.assert_allclose(fused, expected, rtol=1e-6)
    assert top_k(fused, 5).tolist() == [0, 2, 3, 1, 4]  # agreed on by both beats first in one
