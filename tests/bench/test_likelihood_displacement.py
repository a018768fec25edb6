"""bench/likelihood_displacement.py: the summary of how DPO moved a pair's chosen and rejected log-probs, on rows
small enough to check by hand."""

import pytest

from bench.likelihood_displacement import (
    DESTINATIONS,
    destination,
    destinations,
    greedy_right,
    grouped,
    summarise,
)


def row(family, chosen, rejected, outcome="right"):
    return {"family": family, "outcome": outcome, "chosen": chosen, "rejected": rejected}


def test_summarise_means_the_changes_and_counts_pairs_whose_chosen_and_rejected_both_fell():
    rows = [row("min", -1.0, -3.0), row("min", 0.5, -0.5), row("max", -0.2, 0.4), row("max", -0.1, -0.1)]
    s = summarise(rows)
    assert s["n"] == 4
    assert s["d_logp_chosen"] == pytest.approx(-0.2)
    assert s["d_logp_rejected"] == pytest.approx(-0.8)
    assert s["d_margin"] == pytest.approx(0.6)
    assert s["chosen_fell"] == 0.75
    assert s["both_fell"] == 0.5  # rows 1 and 4; a change of exactly 0 would not count as a fall
    assert summarise([]) == {"n": 0}


def test_grouped_summarises_each_family_alone():
    rows = [row("min", -1.0, -3.0), row("max", 0.5, -0.5), row("min", 1.0, 1.0, outcome="both_wrong")]
    by_family = grouped(rows, "family")
    assert list(by_family) == ["max", "min"]
    assert by_family["max"]["both_fell"] == 0.0 and by_family["min"]["n"] == 2
    assert grouped(rows, "outcome")["both_wrong"]["d_margin"] == 0.0


def test_the_intervals_hold_the_means_and_collapse_when_every_pair_agrees():
    rows = [row("min", -1.0, -3.0), row("min", 0.5, -0.5), row("max", -0.2, 0.4), row("max", -0.1, -0.1)]
    s = summarise(rows)
    assert s["d_logp_chosen_ci95"][0] <= s["d_logp_chosen"] <= s["d_logp_chosen_ci95"][1]
    assert s["both_fell_ci95"][0] <= 0.5 <= s["both_fell_ci95"][1]
    assert summarise([row("min", -1.0, -2.0)] * 5)["both_fell_ci95"] == [1.0, 1.0]


def test_destination_sorts_a_greedy_answer_into_chosen_rejected_or_another_right_or_wrong_one():
    prompt = "Which is larger, 37 or 82?"
    assert destination(prompt, " 82 ", "82", "71") == "chosen"
    assert destination(prompt, "71", "82", "71") == "rejected"
    assert destination(prompt, "82", "37", "71") == "other, right"  # a pair of two wrong answers
    assert destination(prompt, "64", "82", "71") == "other, wrong"


def test_destinations_shares_before_and_after_over_all_pairs_and_over_those_where_both_fell():
    rows = [
        {**row("min", -1.0, -2.0), "before": "chosen", "after": "other, wrong"},
        {**row("min", -0.5, -1.0), "before": "rejected", "after": "other, wrong"},
        {**row("min", 0.5, -1.0), "before": "chosen", "after": "chosen"},
    ]
    d = destinations(rows)
    assert d["all"]["n"] == 3 and d["both_fell"]["n"] == 2
    assert d["both_fell"]["before"] == {
        "chosen": 0.5,
        "rejected": 0.5,
        "other, right": 0.0,
        "other, wrong": 0.0,
    }
    assert d["both_fell"]["after"]["other, wrong"] == 1.0
    assert d["all"]["after"]["chosen"] == pytest.approx(0.333)
    # the rows are right-over-wrong pairs: M_t's greedy chosen answer was right, M_{t+1}'s other wrong one is not
    assert d["right_by_outcome"] == {"right": {"pairs": 3, "lost": 1, "won": 0}}
    assert destinations([])["both_fell"] == {"n": 0, "before": dict.fromkeys(DESTINATIONS, 0.0),
                                             "after": dict.fromkeys(DESTINATIONS, 0.0)}  # fmt: skip


def test_right_by_outcome_counts_greedy_answers_that_went_from_right_to_wrong_and_back():
    rows = [
        {**row("min", -1.0, -2.0, outcome="both_wrong"), "before": "other, right", "after": "other, wrong"},
        {**row("min", -1.0, -2.0, outcome="both_wrong"), "before": "other, right", "after": "chosen"},
        {
            **row("min", 0.5, -1.0, outcome="wrong"),
            "before": "rejected",
            "after": "chosen",
        },  # rejected was right
        {**row("min", 0.5, -1.0, outcome="right"), "before": "rejected", "after": "chosen"},
        {**row("min", 0.5, -1.0, outcome="right"), "before": "chosen", "after": "chosen"},
    ]
    assert greedy_right(rows[2], "before") and not greedy_right(rows[2], "after")
    assert destinations(rows)["right_by_outcome"] == {
        "both_wrong": {"pairs": 2, "lost": 2, "won": 0},
        "right": {"pairs": 2, "lost": 0, "won": 1},
        "wrong": {"pairs": 1, "lost": 1, "won": 0},
    }
