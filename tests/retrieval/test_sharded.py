"""Sharded search under a real 2-process torchrun (gloo on CPU) returns exactly one process's top-k: the same
passages, in the same order, with the same float scores; and so does `srlm index search` launched by torchrun."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import Passage
from srlm_fast.retrieval.index import load_index
from tests.helpers import torchrun

WORKER = Path(__file__).with_name("_sharded_worker.py")
QUERIES = ["red fox", "blue whale song", "green tree frog", "fox", "the", "purple", "red red fox whale"]
WORDS = ["red", "blue", "green", "fox", "whale", "song", "tree", "frog", "river", "stone", "cloud", "night"]


def corpus() -> list[Passage]:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(61)]
    texts += texts[:5]  # exact duplicates: ties that straddle the shard boundary
    return [Passage(f"p{i}", t) for i, t in enumerate(texts)]


@pytest.mark.slow
def test_torchrun_sharded_search_equals_one_process(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    r = BM25Retriever().index(corpus())
    r.save(index)
    expected = [[[h.index, h.id, h.score] for h in hs] for hs in load_index(index).search(QUERIES, 7)]

    out = tmp_path / "out.json"
    proc = torchrun(str(WORKER), str(index), str(out), timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["world"] == 2 and res["shard_passages"] == 33  # each rank held half the index
    assert res["hits"] == expected

    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"query": q}) + "\n" for q in QUERIES))
    cli_out = tmp_path / "hits.jsonl"
    proc = torchrun("-m", "srlm_fast.cli", "index", "search", str(index), "--queries", str(queries),
                    "--k", "7", "--out", str(cli_out), timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(x) for x in cli_out.read_text().splitlines()]
    assert [row["query"] for row in rows] == QUERIES
    assert [[[h["id"], h["score"]] for h in row["hits"]] for row in rows] == [
        [[i, s] for _, i, s in hs] for hs in expected
    ]
