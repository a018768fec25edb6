"""Search an index sharded over the ranks of a torchrun job: each rank holds a contiguous slice of the passages,
finds its own top-k, and the per-rank lists are merged into the global top-k.

The merge is exact, not approximate: every retriever breaks score ties by the lower corpus position, so
(score descending, position ascending) is one total order, each global top-k passage is in its own shard's
top-k, and the merged list equals what one process searching the whole index returns (tested under a real
2-rank torchrun in tests/retrieval/test_sharded.py). BM25 shards keep the whole corpus's IDF and mean length
(`BM25Retriever._shard`), so their scores are the whole index's.

Memory: load the index with `mmap=True` and each rank copies only its slice into memory. Queries are searched
by every rank (they are small); hits travel as (position, id, score) triples.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from srlm_fast.distributed import DistInfo, all_gather_objects
from srlm_fast.retrieval.base import Hit, Retriever, shard_bounds


def merge_hits(per_shard: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """The k best of several shards' hit lists (each sorted best first), in the retrievers' total order."""
    return heapq.nsmallest(k, (h for hits in per_shard for h in hits), key=lambda h: (-h.score, h.index))


def sharded_search(retriever: Retriever, queries: Sequence[str], k: int, info: DistInfo) -> list[list[Hit]]:
    """Top-k of every query over the whole corpus, with `retriever` cut into `info.world_size` shards; the same
    result on every rank. In one process it is `retriever.search`."""
    if info.world_size <= 1 or not info.initialized:
        return retriever.search(queries, k)
    lo, hi = shard_bounds(len(retriever.passages), info.rank, info.world_size)
    # More ranks than passages leaves some shards empty: they contribute no hits.
    local = (
        retriever.shard(info.rank, info.world_size).search(queries, k) if hi > lo else [[] for _ in queries]
    )
    gathered = all_gather_objects(local, info)  # [rank][query] -> hits
    return [merge_hits([g[q] for g in gathered], k) for q in range(len(queries))]
