"""bench/loop_judge.py: candidates sorted by the checker, the judge's rates per kind, prompt-level bootstrap,
unpaired contrasts; a missing judgments file is an error."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.loop_judge import KINDS, RATES, kind_of, prompt_counts, rates, summarize
from srlm_fast.io import write_jsonl_atomic
from srlm_fast.recipe.task_knowledge import CAPITAL_OF

ROOT = Path(__file__).resolve().parents[2]
(P1, C1), (P2, C2) = list(CAPITAL_OF.items())[:2]


def _row(place: str, responses: list[str], scores: list[float | None]) -> dict:
    evidence = [
        f"{CAPITAL_OF[place]} is the capital of {place}.",
        f"{C2 if place == P1 else C1} is the capital.",
    ]
    return {
        "prompt": f"Evidence: …\nQuestion: Which city is the capital of {place}?",
        "question": f"Which city is the capital of {place}?",
        "responses": responses,
        "scores": scores,
        "judge_evidence": [evidence] * len(responses),
    }


def test_a_candidate_is_right_copied_from_another_line_or_other():
    question, evidence = (
        f"Which city is the capital of {P1}?",
        [f"{C1} is the capital of {P1}.", f"{C2} is it."],
    )
    assert kind_of(question, C1, evidence) == "right"
    assert kind_of(question, f"{C2}.", evidence) == "wrong, copied"
    assert kind_of(question, "Score: 5", evidence) == "wrong, a score"
    assert kind_of(question, "Nowhere", evidence) == "wrong, other"
    assert kind_of(question, C2, None) == "wrong, other"  # an ungrounded judge read no evidence


def test_rates_per_kind_and_balanced_accuracy():
    rows = [
        _row(P1, [C1, C1, C2, "x"], [5.0, 2.0, 4.0, 0.0]),  # right 1 of 2 called right, copied 1/1, other 0/1
        _row(
            P2, [C2, C1, "Score: 4", "z"], [3.0, 1.0, 4.0, 1.0]
        ),  # right 1/1, copied 0/1, a score 1/1, other 0/1
    ]
    counts = prompt_counts(rows)
    assert counts.shape == (2, len(KINDS), 3)
    assert counts[:, :, 2].sum() == 8  # _row puts the asked fact's passage first
    rows[1]["judge_evidence"] = [ev[::-1] for ev in rows[1]["judge_evidence"]]
    assert prompt_counts(rows)[:, :, 2].tolist() == [[2, 1, 0, 1], [0, 0, 0, 0]]
    got = dict(zip(RATES, rates(counts)))
    assert got["called right: right"] == pytest.approx(2 / 3)
    assert got["called right: wrong, copied"] == pytest.approx(1 / 2)
    assert got["called right: wrong, a score"] == 1 and got["called right: wrong, other"] == 0
    assert got["balanced accuracy"] == pytest.approx((2 / 3 + (1 - 2 / 5)) / 2)


def test_groups_pool_runs_and_contrasts_are_unpaired(tmp_path):
    rng = np.random.default_rng(0)

    def run(name: str, p_copied: float) -> Path:
        rows = [
            _row(
                P1,
                [C1, C2, C2, "x"],
                [5.0, *(4.0 if rng.random() < p_copied else 1.0 for _ in range(2)), 0.0],
            )
            for _ in range(60)
        ]
        write_jsonl_atomic(tmp_path / name / "iter1" / "judgments.jsonl", rows)
        return tmp_path / name

    good, bad = [run("g0", 0.0), run("g1", 0.0)], [run("b0", 0.9), run("b1", 0.9)]
    s = summarize({"good": good, "bad": bad}, [1], n_boot=200)
    g, b = s["groups"]["good"]["iterations"]["1"], s["groups"]["bad"]["iterations"]["1"]
    assert g["candidates"] == {"right": 120, "wrong, copied": 240, "wrong, a score": 0, "wrong, other": 120}
    assert g["fact_on_line_1"] == g["candidates"]
    assert g["balanced accuracy"]["value"] == 1 and g["balanced accuracy"]["low"] == 1  # no spread: all right
    c = s["contrasts"]["good - bad"]["1"]["called right: wrong, copied"]
    assert c["high"] < -0.8 < c["low"] + 0.2 and b["called right: wrong, copied"]["low"] > 0.8


def test_cli_refuses_a_run_without_judgments(tmp_path):
    out = subprocess.run([sys.executable, "bench/loop_judge.py", f"a={tmp_path}"], cwd=ROOT, capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode != 0 and "no judgments" in out.stderr
    bad = subprocess.run(
        [sys.executable, "bench/loop_judge.py", "nolabel"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "LABEL=RUN" in bad.stderr


def test_cli_refuses_a_control_arm_whose_judgments_are_its_reward(tmp_path):
    run = tmp_path / "s0-random"
    write_jsonl_atomic(run / "iter1" / "judgments.jsonl", [_row(P1, [C1, "x"], [5.0, 0.0])])
    (run / "config.toml").write_text('[judge]\nreward = "random"\n')
    out = subprocess.run([sys.executable, "bench/loop_judge.py", f"a={run}"], cwd=ROOT, capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode != 0 and "s0-random (random)" in out.stderr and "reading_judge" in out.stderr
    (run / "config.toml").write_text('[judge]\nreward = "self"\n')
    ok = subprocess.run([sys.executable, "bench/loop_judge.py", f"a={run}"], cwd=ROOT, capture_output=True,
                        text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
