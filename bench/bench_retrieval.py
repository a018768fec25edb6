"""BM25 index build and search at scale: srlm's BM25Retriever (bm25s) against rank_bm25, on a synthetic corpus made
from the shared texts.

The corpus: `--words`-word windows at random offsets of the word stream of ../shared/data/corpus (WikiText-2,
the Wikipedia demo, tiny Shakespeare, C4 demo), so the vocabulary and term statistics are those of real text.
Queries: the 1,190 XQuAD-en questions (real questions; over this corpus they test speed, not relevance).

Every (implementation, size) runs in a fresh subprocess, so peak memory is that run's own: build time
(tokenisation + index), peak RSS growth over the build and search, and queries/s (top-10). rank_bm25 scores
every passage in Python per query, so it runs at the small size only, and the table gives bm25s's ratios there.

    nice -n 10 python bench/bench_retrieval.py --sizes 20000,1000000 [--rank-bm25-size 20000]
Prints a table and writes bench/results/bench_retrieval-cpu.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import Passage

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPUS_FILES = ["wikitext2_valid.txt", "wikitext2_test.txt", "wiki_demo.txt", "tinyshakespeare.txt"]


def word_stream() -> list[str]:
    words: list[str] = []
    for name in CORPUS_FILES:
        words += (SHARED / "corpus" / name).read_text(encoding="utf-8").split()
    for line in (SHARED / "corpus" / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines():
        words += json.loads(line)["text"].split()
    return words


def synthetic_texts(n: int, words: int, seed: int = 0) -> list[str]:
    stream = word_stream()
    starts = np.random.default_rng(seed).integers(0, len(stream) - words, size=n)
    return [" ".join(stream[s : s + words]) for s in starts.tolist()]


def queries() -> list[str]:
    data = json.loads((SHARED / "rag" / "xquad_en.json").read_text(encoding="utf-8"))
    return [qa["question"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]


def child(impl: str, n: int, words: int, n_queries: int) -> dict:
    texts = synthetic_texts(n, words)
    qs = queries()[:n_queries]
    mark = common.rss_mark()
    t0 = time.perf_counter()
    if impl == "bm25s":
        r = BM25Retriever().index([Passage(str(i), t) for i, t in enumerate(texts)])
        del texts
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        r.search(qs, k=10)
    else:
        from rank_bm25 import BM25Okapi

        token = re.compile(r"(?u)\b\w\w+\b")  # the same words bm25s indexes, lower-cased
        bm = BM25Okapi([token.findall(t.lower()) for t in texts])
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        for q in qs:
            scores = bm.get_scores(token.findall(q.lower()))
            np.argpartition(-scores, 10)[:10]
    search_s = time.perf_counter() - t1
    peak = common._proc_status_mb("VmHWM") - mark
    return {"impl": impl, "passages": n, "build_s": round(build_s, 2), "peak_rss_mb": round(peak, 1),
            "queries": len(qs), "queries_per_s": round(len(qs) / search_s, 1)}  # fmt: skip


def run_child(impl: str, n: int, words: int, n_queries: int) -> dict:
    args = ["--child", impl, "--n", str(n), "--words", str(words), "--queries", str(n_queries)]
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,1000000", help="comma-separated corpus sizes for bm25s")
    ap.add_argument("--rank-bm25-size", type=int, default=20000, help="the size rank_bm25 also runs at")
    ap.add_argument(
        "--words", type=int, default=50, help="words per synthetic passage (MS MARCO's mean is ~56)"
    )
    ap.add_argument("--queries", type=int, default=1190, help="queries for bm25s (rank_bm25: 100)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.words, args.queries)))
        return
    rows = []
    small = args.rank_bm25_size
    rows.append(run_child("rank_bm25", small, args.words, min(100, args.queries)))
    for n in (int(x) for x in args.sizes.split(",")):
        rows.append(run_child("bm25s", n, args.words, args.queries))
        print(rows[-1], flush=True)
    ref = rows[0]
    for row in rows[1:]:
        if row["passages"] == small:
            row["build_speedup_vs_rank_bm25"] = round(ref["build_s"] / row["build_s"], 1)
            row["qps_ratio_vs_rank_bm25"] = round(row["queries_per_s"] / ref["queries_per_s"], 1)
            row["memory_ratio_vs_rank_bm25"] = round(row["peak_rss_mb"] / max(ref["peak_rss_mb"], 1e-9), 2)
    cols = ["impl", "passages", "build_s", "peak_rss_mb", "queries", "queries_per_s",
            "build_speedup_vs_rank_bm25", "qps_ratio_vs_rank_bm25", "memory_ratio_vs_rank_bm25"]  # fmt: skip
    common.print_table(rows, cols)
    from importlib.metadata import version

    payload = {
        "date": _dt.date.today().isoformat(),
        "device": common.device_name(common.pick_device("cpu")),
        "versions": {**common.versions(), **{m: version(m) for m in ("bm25s", "rank-bm25", "PyStemmer")}},
        "shapes": {"words_per_passage": args.words, "query_set": "XQuAD-en questions", "top_k": 10},
        "note": "shared 2-core machine, niced, other jobs running: absolute times are pessimistic, ratios fair",
        "rows": rows,
    }
    print(f"wrote {common.write_results('bench_retrieval', common.pick_device('cpu'), payload)}")


if __name__ == "__main__":
    main()
