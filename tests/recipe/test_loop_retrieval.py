"""`srlm run` end to end with `[retrieval]` on (the task world's knowledge corpus, evidence for candidates and
judge): it completes, its candidates were prompted with evidence, and a second call reuses the run's index."""

from __future__ import annotations

import json
import os

import pytest

from srlm_fast.config import load_job_config
from srlm_fast.io import read_jsonl
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.evidence import split_evidence
from srlm_fast.recipe.judge import JudgeTemplate
from srlm_fast.recipe.loop import run_loop
from srlm_fast.recipe.task_families import DEFAULT_FAMILIES, KNOWLEDGE_FAMILY_NAMES
from tests.recipe.test_loop import SMOKE

pytestmark = pytest.mark.slow

RAG = [
    f"--seed_data.families={json.dumps([*DEFAULT_FAMILIES, *KNOWLEDGE_FAMILY_NAMES])}",
    "--retrieval.task_corpus=true", "--retrieval.candidates=true", "--retrieval.judge=true", "--retrieval.k=2",
]  # fmt: skip


def test_a_tiny_run_with_retrieval_completes_with_evidence_in_its_prompts(tmp_path, capsys) -> None:
    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=rag", *SMOKE, *RAG])
    root = run_loop(cfg)
    assert (root / "report.md").is_file() and (root / "m2" / "model.safetensors").is_file()
    index = root / "retrieval" / "index" / "index.json"
    assert json.loads(index.read_text())["n_passages"] == 300
    rows = read_jsonl(root / "iter1" / "candidates.jsonl")[0]
    assert rows
    for r in rows:
        passages, question = split_evidence(r["prompt"])
        assert len(passages) == 2 and question == r["question"] and r["prompt"].startswith("Evidence: ")
    judged = read_jsonl(root / "iter1" / "judgments.jsonl")[0]
    assert all(len(ev) == 2 for r in judged for ev in r["judge_evidence"])
    pairs = read_jsonl(root / "iter1" / "pairs.jsonl")[0]
    assert all(p["prompt"].startswith("Evidence: ") for p in pairs)  # DPO trains on the prompt it answered
    assert "Evidence: " in (root / "seed" / "ift.jsonl").read_text()
    # Resumed: the index is reused, not rebuilt.
    before = os.stat(index).st_mtime_ns
    capsys.readouterr()
    run_loop(load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=rag", *SMOKE, *RAG]))
    assert "✓ retrieval index" in capsys.readouterr().out and os.stat(index).st_mtime_ns == before


def test_a_tiny_run_with_a_grounded_meta_judge_trains_its_judge_on_what_it_read(tmp_path) -> None:
    meta = ["--judge.meta=true", "--judge.meta_candidates=8"]
    root = run_loop(
        load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=m", *SMOKE, *RAG, *meta])
    )
    stats = json.loads((root / "iter1" / "stats.json").read_text())["meta"]
    assert (
        stats["meta_judged"] == 8 and stats["judgments"] >= 16
    )  # every judged candidate has two or more scores
    judge_pairs = read_jsonl(root / "iter1" / "judge_pairs.jsonl")[0]
    assert len(judge_pairs) == stats["pairs"] > 0
    grounded, meta_rubric = JudgeTemplate.grounded(), JudgeTemplate.meta_grounded()
    assert all(p["prompt"].startswith(grounded.prefix) and "\nEvidence: " in p["prompt"] for p in judge_pairs)
    pairs = read_jsonl(root / "iter1" / "pairs.jsonl")[0]
    assert sum(p["prompt"].startswith(grounded.prefix) for p in pairs) == len(judge_pairs)  # DPO trains them
    sft = [r["prompt"] for r in read_jsonl(root / "seed" / "eft.jsonl")[0]]
    assert sum(p.startswith(meta_rubric.prefix) and "\nEvidence: " in p for p in sft) == 20  # n_meft of SMOKE
