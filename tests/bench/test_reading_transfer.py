"""bench/reading_transfer.py: which models a run has, the answers' cache, and the summary's gains and pooling,
on answers small enough to check by hand."""

from __future__ import annotations

import pytest

from bench.reading_transfer import answer_items, fact_line, models_of, plot, summarise, versus
from srlm_fast.io import write_jsonl_atomic
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.task_reading import reading_items


def answers(correct: list[int], family: str = "kb_river", lines: list[int] | None = None) -> list[dict]:
    """Graded answers to items whose fact is on evidence line `lines[i]` (1 for all by default)."""
    rows = []
    for i, c in enumerate(correct):
        facts = [f"Dorel{i} is the capital of Mab{i}.", f"Zuvo{i} is the capital of Kel{i}."]
        if lines and lines[i] == 2:
            facts.reverse()
        prompt = (
            "".join(f"Evidence: {f}\n" for f in facts) + f"Question: Which city is the capital of Mab{i}?"
        )
        response = f"Dorel{i}" if c else "Score: 5"  # a right answer, or M1's usual wrong one
        rows.append({"family": family, "prompt": prompt, "answer": f"Dorel{i}", "response": response,
                     "correct": bool(c)})  # fmt: skip
    return rows


def test_models_of_lists_the_finished_models_after_m0(tmp_path) -> None:
    for name in ("m0", "m1", "m2", "m3"):
        (tmp_path / name).mkdir()
    for name in ("m0", "m1", "m2"):
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "m2x").mkdir()
    assert models_of(tmp_path) == [1, 2]  # m3 has no weights yet: an iteration still running


def test_answers_come_from_the_cache_only_when_it_holds_the_same_items(tmp_path) -> None:
    items = reading_items(3, seed=5)
    rows = [{"family": f, "prompt": p, "answer": a, "response": a, "correct": True} for f, p, a in items]
    cache = tmp_path / "eval" / "reading.jsonl"
    write_jsonl_atomic(cache, rows)
    # No model exists under tmp_path: answering would have to load one and fail.
    assert answer_items(tmp_path, 1, items, LoopConfig(), cache) == rows
    with pytest.raises(FileNotFoundError, match="m1"):  # other items: M1 must answer them
        answer_items(tmp_path, 1, reading_items(3, seed=6), LoopConfig(), cache)
    cache.write_text("not json\n")
    with pytest.raises(FileNotFoundError, match="m1"):  # a torn cache is answered again, not trusted
        answer_items(tmp_path, 1, items, LoopConfig(), cache)


def test_gains_are_paired_per_item_and_pooled_over_runs() -> None:
    a = {1: answers([0, 0, 1, 0]), 3: answers([1, 1, 1, 0])}
    b = {
        1: answers([0, 0, 0, 0], "kb_capital"),
        3: answers([1, 0, 0, 0], "kb_capital"),
        2: answers([1, 1, 1, 1]),
    }
    s = summarise({"x/s0": a, "x/s1": b})
    assert s["models"] == ["M1", "M3"]  # M2 only in one run: left out
    assert s["runs"]["x/s0"]["M3"]["accuracy"]["value"] == 0.75
    assert s["runs"]["x/s0"]["M3"]["gain_over_M1"]["value"] == 0.5
    assert s["runs"]["x/s0"]["M1"]["gain_over_M1"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    pooled = s["pooled"]["M3"]
    # The runs' mean gains, averaged:
    assert pooled["gain_over_M1"]["value"] == pytest.approx((0.5 + 0.25) / 2)
    assert pooled["gain_over_M1"]["low"] <= 0.375 <= pooled["gain_over_M1"]["high"]
    assert pooled["gain_over_previous"] == pooled["gain_over_M1"]  # M1 is the model before M3 here
    assert pooled["by_family"]["kb_river"]["value"] == 0.75
    assert pooled["by_family"]["kb_capital"]["value"] == 0.25
    # Every answer's grade is kept, in item order, so these runs can be pooled with later ones item by item:
    assert s["correct"] == {"x/s0": {"M1": "0010", "M3": "1110"}, "x/s1": {"M1": "0000", "M3": "1000"}}


def test_versus_pairs_each_run_with_its_baseline_item_by_item() -> None:
    grounded = {"g/s0": {1: answers([0, 0, 0, 0]), 2: answers([1, 1, 0, 0]), 3: answers([1, 1, 1, 1])}}
    ungrounded = {"u/s0": {1: answers([1, 0, 0, 0]), 3: answers([1, 0, 0, 0])}}
    res = versus(grounded, ungrounded)
    assert list(res) == ["M1", "M3"]  # the models both runs have
    assert res["M3"]["accuracy_difference"]["value"] == 0.75
    assert res["M3"]["gain_over_M1_difference"]["value"] == 1.0  # +1.0 against +0.0
    assert res["M1"]["accuracy_difference"]["value"] == -0.25
    other_items = {"u/s0": {1: [{**r, "prompt": "other"} for r in ungrounded["u/s0"][1]]}}
    with pytest.raises(SystemExit, match="different items"):
        versus(grounded, other_items)


def test_the_plot_draws_the_runs_and_a_baseline_with_fewer_models(tmp_path) -> None:
    grounded = {
        "g/s0": {1: answers([0, 1]), 2: answers([1, 1])},
        "g/s1": {1: answers([0, 0]), 2: answers([1, 0])},
    }
    summary = {"n": 2, **summarise(grounded), "baseline_label": "ungrounded"}
    summary["baseline"] = summarise({"u/s0": {2: answers([0, 1])}})
    plot(summary, tmp_path / "plots" / "reading.png")
    assert (tmp_path / "plots" / "reading.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_by_the_evidence_line_that_states_the_fact() -> None:
    rows = answers([1, 1, 0, 0, 1], lines=[1, 1, 2, 2, 2])
    assert [fact_line(r) for r in rows] == [1, 1, 2, 2, 2]
    by_line = summarise({"x/s0": {1: rows}})["pooled"]["M1"]["by_fact_line"]
    assert by_line["1"]["value"] == 1.0 and by_line["2"]["value"] == pytest.approx(1 / 3)
    (_, prompt, answer), *_ = reading_items(1, seed=3)
    assert fact_line({"prompt": prompt, "answer": answer}) in (1, 2)


def test_copying_some_evidence_line_is_told_from_copying_the_right_one() -> None:
    rows = answers([1, 0, 0, 0], lines=[1, 2, 1, 1])
    rows[1]["response"] = "Zuvo1."  # the distractor's city: a copy, wrong
    rows[2]["response"] = "Dorel"  # part of a word is no copy
    pooled = summarise({"x/s0": {1: rows}})["pooled"]["M1"]
    assert pooled["copies_a_line"]["value"] == pytest.approx(2 / 4)
    assert pooled["right_among_copies"]["value"] == pytest.approx(1 / 2)
    none = summarise({"x/s0": {1: answers([0, 0])}})["pooled"]["M1"]
    assert none["copies_a_line"]["value"] == 0 and none["right_among_copies"]["value"] is None
    assert none["score_lines"]["value"] == 1 and pooled["score_lines"]["value"] == pytest.approx(1 / 4)
