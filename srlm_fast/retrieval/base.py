"""The retriever interface, deterministic top-k selection, and the index manifest that ties an index to its corpus.

Every retriever scores all of its passages for a query (`scores`) and `search` keeps the k best with ties broken
by the lower passage position. That one rule makes results reproducible across runs, platforms and shardings: a
retriever cut into contiguous shards (`shard`) returns, merged, exactly what the whole one returns
(`sharded.py`).

An index on disk is a directory: `index.json` (the manifest: kind, parameters, the corpus fingerprint),
`passages.jsonl` (the corpus, so a search can return text) and the retriever's own files. It is written to a
temporary directory and renamed into place, so a killed build leaves no half index; it is never appended to: a
changed corpus means a new index.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srlm_fast.io import DataError, fsync_dir, read_json, write_json_atomic, write_jsonl_atomic
from srlm_fast.retrieval.corpus import Passage, corpus_sha256, read_jsonl_passages

INDEX_FORMAT = "srlm-index/1"
MANIFEST = "index.json"
PASSAGES = "passages.jsonl"


class CorpusMismatchError(DataError):
    """An index used with a corpus other than the one it was built from."""


@dataclass(frozen=True)
class Hit:
    """One retrieved passage: its position in the corpus, its id and the retriever's score."""

    index: int
    id: str
    score: float

    def to_dict(self, passages: Sequence[Passage] | None = None) -> dict:
        out = {"id": self.id, "score": self.score}
        if passages is not None:
            out["text"] = passages[self.index].text
        return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first; equal scores in ascending position (deterministic,
    unlike `argpartition` alone). Returns min(k, len(scores)) positions."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]  # the k-th largest value
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[: k - above.size]  # the lowest positions among the ties
        cand = np.concatenate([above, ties])
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -scores[cand].astype(np.float64)))  # score descending, then position
    return cand[order]


class Retriever(ABC):
    """Passages in, ranked hits out. Subclasses implement `_index`, `scores`, `_save`, `_load` and `_shard`."""

    kind: str = ""

    def __init__(self) -> None:
        self.passages: list[Passage] = []
        self.corpus_sha256: str = ""
        self.offset = 0  # position of passages[0] in the whole corpus (non-zero in a shard)

    # ---- building -------------------------------------------------------------------------------------------

    def index(self, passages: Sequence[Passage]) -> Retriever:
        """Index `passages` from scratch (an index is rebuilt, never appended to)."""
        if not passages:
            raise ValueError("cannot index an empty corpus")
        self.passages = list(passages)
        self.corpus_sha256 = corpus_sha256(self.passages)
        self.offset = 0
        self._index(self.passages)
        return self

    @abstractmethod
    def _index(self, passages: list[Passage]) -> None: ...

    @abstractmethod
    def params(self) -> dict:
        """The parameters that change results (recorded in the manifest)."""

    # ---- searching ------------------------------------------------------------------------------------------

    @abstractmethod
    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """(len(queries), len(self.passages)) float32 scores, higher is better."""

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """The k best passages of each query, best first (ties: lower corpus position first)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not self.passages:
            raise ValueError("the retriever has no index: call index() or load() first")
        out = []
        # Chunks of queries bound the (queries, passages) score matrix to ~64M entries.
        step = max(1, (1 << 26) // len(self.passages))
        for lo in range(0, len(queries), step):
            block = self.scores(queries[lo : lo + step])
            for row in block:
                out.append(
                    [Hit(self.offset + int(i), self.passages[i].id, float(row[i])) for i in top_k(row, k)]
                )
        return out

    # ---- sharding -------------------------------------------------------------------------------------------

    def shard(self, rank: int, world: int) -> Retriever:
        """The contiguous slice `shard_bounds(len, rank, world)` of this index, scoring as the whole does."""
        lo, hi = shard_bounds(len(self.passages), rank, world)
        part = self._shard(lo, hi)
        part.passages = self.passages[lo:hi]
        part.corpus_sha256 = self.corpus_sha256
        part.offset = self.offset + lo
        return part

    @abstractmethod
    def _shard(self, lo: int, hi: int) -> Retriever: ...

    # ---- saving ---------------------------------------------------------------------------------------------

    def manifest(self, sources: Sequence[str] = ()) -> dict:
        return {
            "format": INDEX_FORMAT,
            "kind": self.kind,
            "params": self.params(),
            "corpus_sha256": self.corpus_sha256,
            "n_passages": len(self.passages),
            "sources": [str(s) for s in sources],
        }

    def save(self, directory: str | os.PathLike, *, sources: Sequence[str] = ()) -> Path:
        """Write the index to `directory` atomically (a complete new index replaces any old one)."""
        if not self.passages:
            raise ValueError("nothing to save: the retriever has no index")
        with atomic_directory(directory) as tmp:
            write_jsonl_atomic(tmp / PASSAGES, (p.to_dict() for p in self.passages))
            self._save(tmp)
            write_json_atomic(tmp / MANIFEST, self.manifest(sources))  # last: its presence means complete
        return Path(directory)

    @abstractmethod
    def _save(self, directory: Path) -> None: ...

    @abstractmethod
    def _load(self, directory: Path, manifest: dict) -> None: ...


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of shard `rank` of `world` over n items: contiguous, sizes differing by at most one."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside `path`, renamed over it on a clean exit (an old `path` is removed only
    after the new one is complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of an index directory, checked; a directory that is not an index is a clear error."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such index directory")
    if not path.is_file():
        raise DataError(
            f"{directory}: not an index directory (no {MANIFEST}; build one with `srlm index build`)"
        )
    m = read_json(path)
    if not isinstance(m, dict) or m.get("format") != INDEX_FORMAT:
        raise DataError(f"{path}: not an index manifest of format {INDEX_FORMAT}")
    for key, kind in (("kind", str), ("params", dict), ("corpus_sha256", str), ("n_passages", int)):
        if not isinstance(m.get(key), kind):
            raise DataError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    return m


def load_passages(directory: Path, manifest: dict) -> tuple[list[Passage], str]:
    """The passages stored with an index, checked against the manifest's fingerprint."""
    passages = read_jsonl_passages(directory / PASSAGES)
    digest = corpus_sha256(passages)
    if digest != manifest["corpus_sha256"] or len(passages) != manifest["n_passages"]:
        raise CorpusMismatchError(
            f"{directory / PASSAGES}: does not match the corpus the index was built from "
            f"(sha256 {digest[:12]}… vs {manifest['corpus_sha256'][:12]}…); rebuild the index"
        )
    return passages, digest


def check_corpus(retriever: Retriever, passages: Sequence[Passage], where: str) -> None:
    """Refuse to use `retriever` with a corpus other than the one it indexes."""
    digest = corpus_sha256(passages)
    if digest != retriever.corpus_sha256:
        raise CorpusMismatchError(
            f"{where}: the index was built from another corpus (sha256 {retriever.corpus_sha256[:12]}…, "
            f"this corpus {digest[:12]}…, {len(passages)} passages); rebuild it with `srlm index build`"
        )
