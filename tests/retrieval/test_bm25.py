"""BM25 through bm25s: scores equal a plain hand-written Lucene BM25, top-k is deterministic, an index survives a
save/load round trip unchanged, refuses another corpus, and its shards merge into exactly its own results."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from srlm_fast.retrieval.base import CorpusMismatchError, shard_bounds, top_k
from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import Passage
from srlm_fast.retrieval.index import load_index
from srlm_fast.retrieval.sharded import merge_hits

DOCS = [
    "the quick brown fox jumps over the lazy dog",
    "a fox is quick and a dog is lazy",
    "brown bears eat honey in the forest",
    "honey bees make honey from flower nectar",
    "the lazy cat sleeps all day",
    "quick quick quick fox",
    "dogs and cats and foxes",
    "nectar flower bee forest bear",
]
QUERIES = ["quick fox", "honey forest", "lazy dog sleeps", "zebra", "bee nectar flower honey", "fox fox"]


def passages(docs=DOCS) -> list[Passage]:
    return [Passage(f"d{i}", t) for i, t in enumerate(docs)]


def reference_bm25(docs, query, k1=1.5, b=0.75) -> np.ndarray:
    """Lucene's BM25, written out: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
    tf part = tf / (tf + k1 (1 - b + b dl / avgdl)) (Lucene drops the constant (k1 + 1)); one term per query word."""
    tok = [re.findall(r"\b\w\w+\b", d.lower()) for d in docs]
    n, avgdl = len(tok), sum(map(len, tok)) / len(tok)
    df = Counter(w for t in tok for w in set(t))
    out = np.zeros(n)
    for w in re.findall(r"\b\w\w+\b", query.lower()):
        if w not in df:
            continue
        idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
        for i, t in enumerate(tok):
            tf = t.count(w)
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(t) / avgdl))
    return out


def plain() -> BM25Retriever:
    return BM25Retriever(stopwords="none", stemmer="none")


def test_scores_equal_a_hand_written_bm25() -> None:
    r = plain().index(passages())
    got = r.scores(QUERIES)
    for q, row in zip(QUERIES, got):
        np.testing.assert_allclose(row, reference_bm25(DOCS, q), rtol=1e-5, atol=1e-6, err_msg=q)
    assert got[QUERIES.index("zebra")].max() == 0  # no indexed word: no score
    r2 = BM25Retriever(k1=0.9, b=0.4, stopwords="none", stemmer="none").index(passages())
    np.testing.assert_allclose(
        r2.scores(["quick fox"])[0], reference_bm25(DOCS, "quick fox", 0.9, 0.4), rtol=1e-5
    )


def test_stemming_and_stopwords_match_word_forms() -> None:
    r = BM25Retriever().index(passages())
    hits = r.search(["foxes"], k=3)[0]
    assert {h.id for h in hits} <= {"d0", "d1", "d5", "d6"} and hits[0].score > 0  # "foxes" ~ "fox"
    assert r.scores(["the and a"]).max() == 0  # stopwords only


def _reference_top_k(scores: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


@pytest.mark.parametrize("seed", range(5))
def test_top_k_breaks_ties_by_position(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=57).astype(np.float32)  # many ties
    for k in (1, 3, 10, 57, 80):
        assert top_k(scores, k).tolist() == _reference_top_k(scores, k)


def test_search_ranks_by_score_then_position() -> None:
    r = plain().index(passages())
    for q, hits in zip(QUERIES, r.search(QUERIES, k=4)):
        ref = reference_bm25(DOCS, q)
        # Distinct non-zero scores here; zeros tie and go by position.
        assert [h.index for h in hits] == _reference_top_k(ref, 4), q
        assert [h.id for h in hits] == [f"d{h.index}" for h in hits]
    with pytest.raises(ValueError, match="k must be at least 1"):
        r.search(["fox"], k=0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    r = BM25Retriever(k1=1.2).index(passages())
    r.save(tmp_path / "idx", sources=["docs"])
    m = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert m["kind"] == "bm25" and m["n_passages"] == len(DOCS) and m["corpus_sha256"] == r.corpus_sha256
    assert m["params"] == {"k1": 1.2, "b": 0.75, "stopwords": "en", "stemmer": "english"}
    for mmap in (False, True):
        loaded = load_index(tmp_path / "idx", mmap=mmap)
        assert loaded.params() == r.params() and loaded.passages == r.passages
        assert loaded.search(QUERIES, k=5) == r.search(QUERIES, k=5)
    assert not [p for p in tmp_path.iterdir() if p.name != "idx"]  # no temporary left behind


def test_an_index_refuses_another_corpus(tmp_path: Path) -> None:
    r = BM25Retriever().index(passages())
    r.save(tmp_path / "idx")
    load_index(tmp_path / "idx", expected=passages())  # the same corpus: fine
    with pytest.raises(CorpusMismatchError, match="built from another corpus"):
        load_index(tmp_path / "idx", expected=passages([*DOCS, "one more"]))
    # A stored corpus that is not the one the index was built from (edited by hand) is refused too.
    stored = tmp_path / "idx" / "passages.jsonl"
    stored.write_text(stored.read_text().replace("honey bees", "honey wasps"))
    with pytest.raises(CorpusMismatchError, match="rebuild the index"):
        load_index(tmp_path / "idx")


def test_rebuilding_replaces_rather_than_appends(tmp_path: Path) -> None:
    BM25Retriever().index(passages()).save(tmp_path / "idx")
    BM25Retriever().index(passages(DOCS[:3])).save(tmp_path / "idx")
    assert len(load_index(tmp_path / "idx").passages) == 3


@pytest.mark.parametrize("world", [1, 2, 3, 5, 11])
def test_shards_merge_into_the_whole_index(world: int) -> None:
    docs = DOCS + [d.replace("fox", "dog") for d in DOCS] + ["quick fox"] * 3  # duplicates: tied scores
    r = BM25Retriever().index(passages(docs))
    whole = r.search(QUERIES, k=6)
    per_shard = [r.shard(rank, world).search(QUERIES, 6) for rank in range(world)
                 if shard_bounds(len(docs), rank, world)[1] > shard_bounds(len(docs), rank, world)[0]]  # fmt: skip
    merged = [merge_hits([s[q] for s in per_shard], 6) for q in range(len(QUERIES))]
    assert merged == whole  # ids, positions and float scores identical


def test_shard_bounds_cover_everything_once() -> None:
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3, 4, 12):
            spans = [shard_bounds(n, r, world) for r in range(world)]
            assert [i for lo, hi in spans for i in range(lo, hi)] == list(range(n))
