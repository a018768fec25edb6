"""BM25 (the default retriever) through `bm25s`.

Why bm25s: it precomputes every (passage, term) BM25 weight into one sparse matrix at index time, so a query is a
sum of a few sparse columns, in numpy alone (no Java, as Pyserini needs; no Python loop over passages, as
`rank_bm25` runs per query; bench/bench_retrieval.py measures the difference). Its saved index is plain `.npy`
and JSON (no pickle), and loads memory-mapped.

Text analysis: lower-cased words of two or more characters, English stopwords removed, Snowball English
stemming (PyStemmer). On XQuAD-en (1,190 questions over its 240 paragraphs) stemming lifts recall@1 from 0.918 to
0.929 (k1 = 1.5, b = 0.75, Lucene's BM25 variant; README "Retrieval").

Sharding: a shard keeps the columns of its passages from the *whole* index's score matrix, so its weights use the
corpus-wide IDF and mean length and its scores equal the whole index's bit for bit (a shard indexed on its own
would get its own IDF, and a different ranking).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np
import Stemmer  # PyStemmer: Snowball stemmers

from srlm_fast.io import DataError
from srlm_fast.retrieval.base import Retriever
from srlm_fast.retrieval.corpus import Passage

STEMMERS = ("english", "none")


def _stemmer(name: str) -> Stemmer.Stemmer | None:
    if name not in STEMMERS:
        raise ValueError(f"stemmer must be one of {', '.join(STEMMERS)}, got {name!r}")
    return None if name == "none" else Stemmer.Stemmer(name)


class BM25Retriever(Retriever):
    """Okapi BM25 over `Passage.indexed_text`."""

    kind = "bm25"

    def __init__(
        self, *, k1: float = 1.5, b: float = 0.75, stopwords: str = "en", stemmer: str = "english"
    ) -> None:
        super().__init__()
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        if stopwords not in ("en", "none"):
            raise ValueError(f"stopwords must be 'en' or 'none', got {stopwords!r}")
        self.k1, self.b, self.stopwords, self.stemmer_name = k1, b, stopwords, stemmer
        self._stem = _stemmer(stemmer)
        self.model: bm25s.BM25 | None = None

    def params(self) -> dict:
        return {"k1": self.k1, "b": self.b, "stopwords": self.stopwords, "stemmer": self.stemmer_name}

    def _tokenize(self, texts: Sequence[str], ids: bool):
        return bm25s.tokenize(
            list(texts),
            stopwords=None if self.stopwords == "none" else self.stopwords,
            stemmer=self._stem,
            return_ids=ids,
            show_progress=False,
        )

    def _index(self, passages: list[Passage]) -> None:
        tokens = self._tokenize([p.indexed_text for p in passages], ids=True)
        self.model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        self.model.index(tokens, show_progress=False)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        assert self.model is not None
        vocab = self.model.vocab_dict
        out = np.zeros((len(queries), len(self.passages)), dtype=np.float32)
        for i, words in enumerate(self._tokenize(queries, ids=False)):
            ids = [vocab[w] for w in words if w in vocab]
            if ids:  # a query with no indexed word scores 0 everywhere
                out[i] = self.model.get_scores_from_ids(ids)
        return out

    def _shard(self, lo: int, hi: int) -> BM25Retriever:
        assert self.model is not None
        s = self.model.scores
        data, rows, indptr = s["data"], s["indices"], s["indptr"]
        keep = (rows >= lo) & (rows < hi)  # the CSC matrix is (passages, vocab): rows are passages
        column = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        counts = np.bincount(column[keep], minlength=len(indptr) - 1)
        part = BM25Retriever(k1=self.k1, b=self.b, stopwords=self.stopwords, stemmer=self.stemmer_name)
        part.model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        part.model.vocab_dict = self.model.vocab_dict
        part.model.nonoccurrence_array = None
        part.model.scores = {
            "data": data[keep],
            "indices": (rows[keep] - lo).astype(rows.dtype),
            "indptr": np.concatenate([[0], np.cumsum(counts)]).astype(indptr.dtype),
            "num_docs": hi - lo,
        }
        return part

    def _save(self, directory: Path) -> None:
        assert self.model is not None
        self.model.save(directory / "bm25", show_progress=False)

    def _load(self, directory: Path, manifest: dict, mmap: bool = False) -> None:
        path = directory / "bm25"
        if not path.is_dir():
            raise DataError(f"{directory}: a bm25 index without its bm25/ directory; rebuild it")
        self.model = bm25s.BM25.load(os.fspath(path), mmap=mmap, show_progress=False, verbosity=0)
        if self.model.scores["num_docs"] != manifest["n_passages"]:
            raise DataError(f"{path}: holds {self.model.scores['num_docs']} passages, the manifest says "
                            f"{manifest['n_passages']}; rebuild the index")  # fmt: skip
