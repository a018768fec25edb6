"""bench/reading_judge.py: the judge reads the item's own evidence, its verdicts are cached, and agreement,
balanced accuracy and their changes are computed as by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bench.reading_judge as RJ
from srlm_fast.eval.experiment_report import balanced_accuracy_of
from srlm_fast.io import write_jsonl_atomic
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.evidence import split_evidence, with_evidence
from srlm_fast.recipe.judge import JudgeResult
from srlm_fast.recipe.task_reading import reading_items
from srlm_fast.retrieval.corpus import Passage
from srlm_fast.retrieval.index import new_retriever


def test_balanced_accuracy_by_hand_and_undefined_without_both_kinds_of_answer() -> None:
    right = np.array([True, True, True, False])
    says = np.array([True, False, True, True])  # hits 2 of 3 right answers, rejects 0 of 1 wrong one
    assert balanced_accuracy_of(right, says) == pytest.approx((2 / 3 + 0) / 2)
    assert math.isnan(balanced_accuracy_of(np.array([True, True]), np.array([True, False])))
    # A judge that calls everything right agrees with a mostly right model, and has no information.
    assert balanced_accuracy_of(np.array([True] * 9 + [False]), np.ones(10, bool)) == 0.5
    # Rows at once (the bootstrap's resamples): each row on its own.
    rows = balanced_accuracy_of(np.stack([right, right]), np.stack([says, right]))
    assert rows.tolist() == pytest.approx([(2 / 3 + 0) / 2, 1.0])


def test_verdicts_count_an_invalid_judgment_as_wrong() -> None:
    right, says = RJ.verdicts([{"correct": True}, {"correct": False}, {"correct": True}], [3.0, 2.9, None])
    assert right.tolist() == [True, False, True] and says.tolist() == [True, False, False]


def test_a_change_is_paired_and_pooled_over_runs() -> None:
    right = np.array([True, False, True, False, True, False])
    m1 = (right, np.ones(6, bool))  # says right to everything: agreement 0.5, balanced 0.5
    m3 = (right, right.copy())  # perfect
    s = RJ.summarise({"x/s0": {1: m1, 3: m3}, "x/s1": {1: m1, 3: m1}})
    assert s["models"] == ["M1", "M3"]
    change = s["runs"]["x/s0"]["M3"]["change_from_M1"]
    assert change["agreement"]["value"] == pytest.approx(0.5) and change["balanced_accuracy"]["value"] == 0.5
    same = s["runs"]["x/s1"]["M3"]["change_from_M1"]["agreement"]
    assert same == {"value": 0.0, "low": 0.0, "high": 0.0}  # paired: the same items, no spread
    assert s["pooled"]["M3"]["agreement"]["value"] == pytest.approx(0.75)
    assert s["pooled"]["M1"]["hit_rate"] == 1.0 and s["pooled"]["M1"]["rejection_rate"] == 0.0
    assert s["agree"]["x/s0"] == {"M1": "101010", "M3": "111111"}
    # A judge that reads only the first evidence line: perfect where the fact is there, blind where it is not.
    lines = np.array([1, 1, 1, 2, 2, 2, 2, 1])
    right8 = np.array([True, False, True, True, False, True, False, False])
    first_line_reader = np.where(lines == 1, right8, False)
    by_line = RJ.summarise({"x/s0": {1: (right8, first_line_reader)}}, lines)["pooled"]["M1"]["by_fact_line"]
    assert (
        by_line["1"]["balanced_accuracy"]["value"] == 1.0
        and by_line["2"]["balanced_accuracy"]["value"] == 0.5
    )
    v = RJ.versus({"x/s0": {1: m1, 3: m3}}, {"y/s0": {1: m1, 3: m1}})
    assert v["M3"]["balanced_accuracy"]["value"] == 0.5
    d = RJ.difference({"x/s0": {1: m1, 3: m3}}, {"y/s0": {1: m1, 3: m1}})  # levels, not changes
    assert d["M1"]["balanced_accuracy"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert d["M3"]["balanced_accuracy"]["value"] == v["M3"]["balanced_accuracy"]["value"]


def test_the_judge_reads_the_items_own_evidence_and_its_verdicts_are_cached(tmp_path, monkeypatch) -> None:
    items = reading_items(3, seed=5)
    answers = [{"family": f, "prompt": p, "answer": a, "response": a, "correct": True} for f, p, a in items]
    seen = []

    class Stub:
        def close(self) -> None:
            pass

    monkeypatch.setattr(RJ.Policy, "load", lambda *a, **k: Stub())

    def judge(policy, spec, xs, seed):
        seen.append((spec.template, list(xs)))
        return [JudgeResult(4.0, 1, 0, (4.0,), ("Score: 4",)) for _ in xs]

    monkeypatch.setattr(RJ, "judge_items", judge)
    cfg = LoopConfig()
    cfg.retrieval.task_corpus = cfg.retrieval.judge = True
    cache = tmp_path / "eval" / "judge.jsonl"
    evidence = RJ.item_evidence(answers)
    assert RJ.judge_answers(tmp_path / "m1", answers, evidence, cfg, cache) == [4.0] * 3
    template, xs = seen[0]
    assert template == "grounded"  # the run's judge: compact becomes its grounded variant
    question, response, read = xs[0]
    passages, plain = split_evidence(items[0][1])
    assert question == plain and read == passages and "Evidence" not in question
    assert response == items[0][2] and len(read) == 2 and any(items[0][2] in line for line in read)
    assert RJ.judge_answers(tmp_path / "m1", answers, evidence, cfg, cache) == [4.0] * 3 and len(seen) == 1
    other = [{**r, "response": "Nobody"} for r in answers]
    RJ.judge_answers(tmp_path / "m1", other, evidence, cfg, cache)
    assert len(seen) == 2  # other answers: judged again
    reversed_evidence = [ev[::-1] for ev in evidence]
    RJ.judge_answers(tmp_path / "m1", other, reversed_evidence, cfg, cache)
    assert len(seen) == 3 and seen[-1][1][0][2] == reversed_evidence[0]  # other evidence: judged again
    write_jsonl_atomic(cache, [{"prompt": "torn"}])
    RJ.judge_answers(tmp_path / "m1", other, evidence, cfg, cache)
    assert len(seen) == 4


def test_retrieved_evidence_is_the_loops_bm25_over_the_corpus_and_the_fresh_passages(tmp_path) -> None:
    corpus = [
        Passage("kb-0", "Velmora is the capital of Istrad."),
        Passage("kb-1", "The Oskel river is 310 km long."),
    ]
    new_retriever("bm25").index(corpus).save(tmp_path / "retrieval" / "index")
    items = reading_items(4, seed=7)
    rows = [{"prompt": p, "answer": a} for _, p, a in items]
    cfg = LoopConfig()
    cfg.retrieval.task_corpus = cfg.retrieval.judge = True
    answers = [{**r, "response": r["answer"]} for r in rows]
    answers.append(
        {"prompt": with_evidence("Which city is the capital of Istrad?", []), "response": "Velmora"}
    )
    evidence = RJ.retrieved_evidence(RJ.fresh_grounding(tmp_path, cfg, answers), answers)
    assert all(len(ev) == cfg.retrieval.k for ev in evidence)
    for row, ev in zip(
        rows, evidence
    ):  # a right answer: its fact's passage first, found among the fresh ones
        assert ev[0] == split_evidence(row["prompt"])[0][RJ.fact_line(row) - 1]
    assert evidence[-1][0] == corpus[0].text  # the run's corpus is searched too
    cfg.retrieval.kind = "dense"
    with pytest.raises(SystemExit, match="BM25"):
        RJ.fresh_grounding(tmp_path, cfg, answers)


def test_answers_are_sorted_into_kinds_and_each_kinds_share_called_right_pools_the_runs_counts() -> None:
    prompt = "Evidence: The Zydra river is 855 km long.\nEvidence: The Dython river is 900 km long.\n"
    prompt += "Question: How long is the Dython river?"
    row = {"prompt": prompt, "answer": "900"}
    kinds = [
        RJ.answer_kind({**row, "response": r, "correct": c})
        for r, c in [("900", True), ("855", False), ("Score: 4", False), ("1000 km", False)]
    ]
    assert kinds == ["right, fact on line 2", "wrong, copied", "wrong, a score", "wrong, other"]
    # Run a: 3 copied answers, 1 called right; run b: 1, called right. Pooled counts: 2 of 4 (pooling the
    # runs' rates instead would give (1/3 + 1) / 2).
    a = (np.array(["wrong, copied"] * 3 + ["right, fact on line 1"]), np.array([True, False, False, True]))
    b = (np.array(["wrong, copied", "wrong, other", "right, fact on line 1"]), np.array([True, False, True]))
    by_kind = RJ.called_right_by_kind([a, b])
    assert by_kind["wrong, copied"]["n"] == 4 and by_kind["wrong, copied"]["value"] == 0.5
    assert by_kind["wrong, copied"]["low"] < 0.5 < by_kind["wrong, copied"]["high"]
    assert by_kind["right, fact on line 1"] == {"n": 2, "value": 1.0, "low": 1.0, "high": 1.0}
    assert by_kind["wrong, other"]["value"] == 0.0 and "wrong, a score" not in by_kind
    grades = {
        "x/a": {1: (np.array([False, False, False, True]), a[1])},
        "x/b": {1: (np.array([False, False, True]), b[1])},
    }
    s = RJ.summarise(grades, kinds={"x/a": {1: a[0]}, "x/b": {1: b[0]}})
    assert s["pooled"]["M1"]["called_right_by_kind"]["wrong, copied"]["value"] == 0.5
    assert s["runs"]["x/a"]["M1"]["called_right_by_kind"]["wrong, copied"]["value"] == pytest.approx(1 / 3)


def test_the_judging_model_is_its_own_the_runs_m_k_or_a_model_directory(tmp_path) -> None:
    run = tmp_path / "run"
    assert RJ.judge_model(run, 4, None) == (run / "m4", "")
    assert RJ.judge_model(run, 4, "4") == (run / "m4", "")  # its own: the own judge's cache
    assert RJ.judge_model(run, 4, "1") == (run / "m1", "_by_m1")
    other = tmp_path / "other run" / "m1"
    with pytest.raises(SystemExit, match="neither a model number nor a model directory"):
        RJ.judge_model(run, 4, str(other))
    other.mkdir(parents=True)
    (other / "config.json").write_text("{}")
    path, suffix = RJ.judge_model(run, 4, str(other))
    assert path == other.resolve() and suffix.startswith("_by_") and suffix.endswith("other-run-m1")
    assert " " not in suffix and "/" not in suffix
