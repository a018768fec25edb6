"""Worker for tests/retrieval/test_sharded.py, run as `torchrun --standalone --nproc_per_node=2 <this> INDEX OUT`.

Every rank loads the saved index memory-mapped, searches its shard and merges (`sharded_search`); rank 0 writes
the merged hits and the size of its own shard for the test to compare with one process's search."""

import json
import sys

import torch

from srlm_fast.distributed import init_distributed, shutdown
from srlm_fast.retrieval.index import load_index
from srlm_fast.retrieval.sharded import sharded_search
from tests.retrieval.test_sharded import QUERIES


def main() -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    retriever = load_index(sys.argv[1], mmap=True)
    hits = sharded_search(retriever, QUERIES, 7, info)
    shard = retriever.shard(info.rank, info.world_size)
    if info.is_main:
        out = {"world": info.world_size, "shard_passages": len(shard.passages),
               "hits": [[[h.index, h.id, h.score] for h in hs] for hs in hits]}  # fmt: skip
        with open(sys.argv[2], "w") as f:
            json.dump(out, f)
    shutdown(info)


if __name__ == "__main__":
    main()
