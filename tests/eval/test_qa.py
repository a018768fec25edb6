"""SQuAD answer metrics against hand-worked cases (the official script's behaviour), recall@k, bootstrap CIs."""

from __future__ import annotations

import json

import pytest

from srlm_fast.eval.qa import (
    answer_in_text,
    exact_match,
    normalize_answer,
    paired_gain,
    recall_at_k,
    score_answers,
    token_f1,
)


def test_normalisation_is_squads() -> None:
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear & the fig.") == "apple pear fig"
    assert normalize_answer("Theory of them") == "theory of them"  # articles only as whole words
    assert normalize_answer("  ") == ""


def test_exact_match_takes_the_best_gold() -> None:
    assert exact_match("the Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Broncos.", ["Denver Broncos"]) == 0.0


@pytest.mark.parametrize(
    ("pred", "golds", "f1"),
    [
        ("Denver Broncos", ["Denver Broncos"], 1.0),
        ("the Denver Broncos team", ["Denver Broncos"], 2 * (2 / 3 * 1) / (2 / 3 + 1)),  # P 2/3, R 1
        ("Broncos", ["Denver Broncos", "Carolina Panthers"], 2 * (1 * 0.5) / 1.5),  # P 1, R 1/2
        ("Panthers", ["Denver Broncos"], 0.0),
        ("x b b", ["b b c"], 2 / 3),  # bag of tokens: common = 2 (b twice)
        ("", ["Denver"], 0.0),
        ("the", ["a"], 1.0),  # both normalise to nothing: SQuAD counts a match
    ],
)
def test_token_f1(pred: str, golds: list[str], f1: float) -> None:
    assert token_f1(pred, golds) == pytest.approx(f1)


def test_answer_in_text_needs_token_boundaries() -> None:
    assert answer_in_text("It landed on 20 July 1969, at night.", ["July 1969"])
    assert not answer_in_text("In 19690 nothing happened", ["1969"])
    assert not answer_in_text("anything", [""])


def test_recall_at_k() -> None:
    ranked = [[False, True, False], [True], [False, False, False], []]
    assert recall_at_k(ranked, ks=(1, 2, 5)) == {"recall@1": 0.25, "recall@2": 0.5, "recall@5": 0.5}


def test_score_answers_intervals_contain_the_mean() -> None:
    preds = ["Denver Broncos", "Broncos", "no", "Paris"] * 5
    golds = [["Denver Broncos"], ["Denver Broncos"], ["yes"], ["Paris"]] * 5
    summary, em, _ = score_answers(preds, golds, n_boot=500, seed=1)
    assert em == [1.0, 0.0, 0.0, 1.0] * 5 and summary.n == 20
    assert summary.exact_match.value == pytest.approx(0.5)
    assert summary.f1.value == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    for iv in (summary.exact_match, summary.f1):
        assert iv.low <= iv.value <= iv.high and iv.high - iv.low > 0
    with pytest.raises(ValueError, match="predictions"):
        score_answers(["x"], [])


def test_paired_gain_difference_and_ratio() -> None:
    base = [0.0, 0.5, 0.5, 1.0] * 10
    # The same shift on every question: the paired difference has no spread.
    treated = [b + 0.25 for b in base]
    gain = paired_gain(treated, base, n_boot=300, seed=0)
    assert gain["difference"] == {"value": pytest.approx(0.25), "low": pytest.approx(0.25),
                                  "high": pytest.approx(0.25)}  # fmt: skip
    r = gain["ratio"]
    assert r["value"] == pytest.approx(0.75 / 0.5) and r["low"] < r["value"] < r["high"]
    # Twice the base on every question: resampled together, every resample's ratio is exactly 2 (resampled
    # apart, the two means would vary independently).
    doubled = paired_gain([2 * b for b in base], base, n_boot=300, seed=0)["ratio"]
    assert doubled == {"value": pytest.approx(2.0), "low": pytest.approx(2.0), "high": pytest.approx(2.0)}
    assert paired_gain([1.0, 0.0], [0.0, 0.0])["ratio"] == {"value": None, "low": None, "high": None}
    with pytest.raises(ValueError, match="paired"):
        paired_gain([1.0], [1.0, 0.0])


def test_paired_gain_with_a_base_that_is_mostly_zero_stays_valid_json() -> None:
    # One question in five has a base score: many resamples have none, and their ratio is unbounded.
    gain = paired_gain([1, 0, 0, 0, 1], [0, 1, 0, 0, 0], n_boot=500, seed=0)
    assert gain["resamples_base_zero"] > 25  # more than the 2.5% tail: the upper end is unbounded
    assert gain["ratio"]["value"] == pytest.approx(2.0) and gain["ratio"]["high"] is None
    json.dumps(gain, allow_nan=False)  # no NaN or Infinity reaches a results file
