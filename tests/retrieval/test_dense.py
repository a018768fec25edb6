"""Dense retrieval (skipped without faiss): a checkpoint's mean-pooled hidden states as unit vectors, exact
cosine search equal to a plain numpy ranking, a save/load round trip, and hybrid fusion (standardised scores
averaged, or RRF) checked by hand."""

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
from srlm_fast.retrieval.hybrid import HybridRetriever, rrf_scores, zscore_scores
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
    hybrids = [
        HybridRetriever(BM25Retriever(), DenseRetriever(embedder), fusion=f, depth=4)
        for f in ("zscore", "rrf")
    ]
    for r in (DenseRetriever(embedder), *hybrids):
        r.index(passages())
        where = tmp_path / f"{r.kind}-{getattr(r, 'fusion', '')}"
        r.save(where)
        loaded = load_index(where)  # loads the embedder its manifest names
        assert loaded.kind == r.kind and loaded.params() == r.params()
        assert loaded.search(queries, k=3) == r.search(queries, k=3)


def test_rrf_fuses_ranks() -> None:
    fused = rrf_scores([np.array([2, 0, 1]), np.array([0, 3])], n=5, c=60)
    expected = np.array([1 / 62 + 1 / 61, 1 / 63, 1 / 61, 1 / 62, 0.0])
    np.testing.assert_allclose(fused, expected, rtol=1e-6)
    assert top_k(fused, 5).tolist() == [0, 2, 3, 1, 4]  # agreed on by both beats first in one


def test_zscore_fusion_averages_standardised_scores() -> None:
    lexical = np.array([[9.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]])  # the 2nd query matches no term
    semantic = np.array([[0.1, 0.5, 0.2, 0.4], [0.3, 0.1, 0.2, 0.0]])

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / x.std() if x.std() > 0 else np.zeros_like(x)

    fused = zscore_scores([lexical, semantic])
    np.testing.assert_allclose(fused[0], (z(lexical[0]) + z(semantic[0])) / 2, rtol=1e-6)
    np.testing.assert_allclose(fused[1], z(semantic[1]) / 2, rtol=1e-6)  # no NaN from a constant row
    # The scale of either retriever's scores does not matter, only how far each passage stands out.
    np.testing.assert_allclose(zscore_scores([100 * lexical, semantic - 7]), fused, rtol=1e-5, atol=1e-6)
    # Passage 3, second in both, beats passage 0 (first by BM25, last by cosine) and passage 1 (first by cosine,
    # last by BM25): by hand, the fused scores are 0.316, 0.224, 0.184, -0.724.
    assert top_k(fused[0], 4).tolist() == [3, 1, 0, 2]


def test_hybrid_scores_are_the_named_fusion_of_its_parts(embedder) -> None:
    queries = ["red fox", "whale song"]
    for fusion in ("zscore", "rrf"):
        r = HybridRetriever(BM25Retriever(), DenseRetriever(embedder), fusion=fusion, depth=6).index(
            passages()
        )
        lexical, semantic = r.bm25.scores(queries), r.dense.scores(queries)
        if fusion == "zscore":
            expected = zscore_scores([lexical, semantic])
        else:
            expected = np.stack(
                [rrf_scores([top_k(lx, 6), top_k(se, 6)], len(TEXTS)) for lx, se in zip(lexical, semantic)]
            )
        np.testing.assert_allclose(r.scores(queries), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="fusion must be one of"):
        HybridRetriever(BM25Retriever(), DenseRetriever(embedder), fusion="max")


def test_a_hybrid_index_written_before_fusion_existed_loads_as_rrf(tmp_path: Path, embedder) -> None:
    import json

    from srlm_fast.retrieval.base import MANIFEST

    r = HybridRetriever(BM25Retriever(), DenseRetriever(embedder), fusion="rrf", depth=4).index(passages())
    r.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / MANIFEST).read_text())
    del manifest["params"]["fusion"]
    (tmp_path / "old" / MANIFEST).write_text(json.dumps(manifest))
    loaded = load_index(tmp_path / "old")
    assert loaded.fusion == "rrf" and loaded.search(["red fox"], k=3) == r.search(["red fox"], k=3)
