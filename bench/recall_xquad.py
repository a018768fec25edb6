"""Recall@1/5/20 on XQuAD-en (each question's own paragraph among the 240) of BM25, dense (a checkpoint's
mean-pooled hidden states) and their RRF hybrid (top 100 of each, c = 60).

    OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 10 python bench/recall_xquad.py CHECKPOINT_DIR
Prints recall per retriever as JSON (README "Retrieval"; ~9 minutes for SmolLM2-135M on the shared 2-core CPU).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from srlm_fast.eval.qa import recall_at_k
from srlm_fast.eval.qa_data import read_squad_questions
from srlm_fast.retrieval.base import top_k
from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import read_squad_passages
from srlm_fast.retrieval.dense import DenseRetriever, LlamaEmbedder
from srlm_fast.retrieval.hybrid import rrf_scores

XQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rag" / "xquad_en.json"


def main() -> None:
    passages, questions = read_squad_passages(XQUAD), read_squad_questions(XQUAD)
    texts = [q.question for q in questions]
    t0 = time.perf_counter()
    embedder = LlamaEmbedder(sys.argv[1], batch_size=8)
    dense = DenseRetriever(embedder).index(passages)
    semantic = embedder.embed(texts) @ dense.embeddings.T  # (questions, passages)
    print(f"embedded in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    lexical = BM25Retriever().index(passages).scores(texts)
    fused = np.stack([rrf_scores([top_k(lexical[i], 100), top_k(semantic[i], 100)], len(passages))
                      for i in range(len(texts))])  # fmt: skip
    out = {}
    for name, scores in (("bm25", lexical), ("dense", semantic), ("hybrid", fused)):
        relevant = [
            [passages[j].id == q.passage_id for j in top_k(scores[i], 20)] for i, q in enumerate(questions)
        ]
        out[name] = recall_at_k(relevant)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
