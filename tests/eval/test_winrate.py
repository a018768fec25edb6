"""Head-to-head in both orders, bootstrap CIs, and the length-controlled win rate."""

import math

import pytest

from srlm_fast.eval.winrate import (
    bootstrap_mean,
    combine_orders,
    fit_length_logit,
    head_to_head,
    head_to_head_from_verdicts,
    is_flip,
    length_stats,
    pointwise_verdict_fn,
    reference_win_rate,
    reference_win_rate_from_outcomes,
    score_verdict,
    summarize_outcomes,
)


@pytest.mark.parametrize(
    ("ab", "ba", "outcome", "flip"),
    [
        ("1", "2", "win", False),  # A first and preferred; then A second and preferred
        ("2", "1", "loss", False),
        ("1", "1", "tie", True),  # the first position won both times: flips with the order
        ("2", "2", "tie", True),
        ("tie", "2", "tie", False),  # one order undecided: not a consistent win
        ("tie", "tie", "tie", False),
        (None, "1", "invalid", False),
        ("A", "b", "win", False),  # letter verdicts normalised
        ("garbage", "2", "invalid", False),
    ],
)
def test_combine_orders(ab: str, ba: str, outcome: str, flip: bool) -> None:
    assert combine_orders(ab, ba) == outcome
    assert is_flip(ab, ba) == flip


def test_head_to_head_calls_both_orders_and_counts() -> None:
    seen: list[tuple[str, str, str]] = []

    def longer_wins(items):  # an order-independent judge: the longer response wins, equal length ties
        seen.extend(items)
        return ["tie" if len(a) == len(b) else ("1" if len(a) > len(b) else "2") for _, a, b in items]

    prompts = ["p1", "p2", "p3", "p4"]
    a = ["aaaa", "aaaa", "aa", "aaa"]
    b = ["a", "aa", "aaaa", "bbb"]
    res = head_to_head(prompts, a, b, longer_wins, n_boot=200)
    assert seen[:4] == list(zip(prompts, a, b)) and seen[4:] == list(zip(prompts, b, a))
    assert res.outcomes == ("win", "win", "loss", "tie")
    assert (res.n, res.n_valid, res.n_invalid, res.n_flips) == (4, 4, 0, 0)
    assert res.win.value == 0.5 and res.tie.value == 0.25 and res.loss.value == 0.25
    assert res.win_rate.value == pytest.approx(2.5 / 4)


def test_position_biased_judge_gives_ties() -> None:
    always_first = lambda items: ["1"] * len(items)
    res = head_to_head(["p"] * 6, ["x"] * 6, ["y"] * 6, always_first, n_boot=100)
    assert res.tie.value == 1.0 and res.n_flips == 6 and res.win_rate.value == 0.5


def test_invalid_verdicts_are_left_out() -> None:
    res = head_to_head_from_verdicts(["1", None, "2"], ["2", "2", "1"], n_boot=100)
    assert (res.n, res.n_valid, res.n_invalid) == (3, 2, 1)
    assert res.win.value == 0.5 and res.loss.value == 0.5
    assert summarize_outcomes(["invalid"]).win_rate.value is None
    with pytest.raises(ValueError, match="unknown outcome"):
        summarize_outcomes(["won"])


def test_verdict_fn_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="returned 1 verdicts for 4"):
        head_to_head(["p", "q"], ["a", "b"], ["c", "d"], lambda items: ["1"])


def test_pointwise_verdicts() -> None:
    assert score_verdict(4, 3) == "1" and score_verdict(3, 4) == "2" and score_verdict(3, 3) == "tie"
    assert score_verdict(3.2, 3.0, margin=0.5) == "tie" and score_verdict(None, 3) is None
    fn = pointwise_verdict_fn(lambda items: [float(len(r)) for _, r in items])
    assert fn([("p", "aa", "a"), ("p", "a", "aa"), ("p", "a", "b")]) == ["1", "2", "tie"]


def test_bootstrap_deterministic_and_contains_estimate() -> None:
    values = [1.0] * 30 + [0.0] * 70
    a = bootstrap_mean(values, n_boot=500, seed=3)
    b = bootstrap_mean(values, n_boot=500, seed=3)
    c = bootstrap_mean(values, n_boot=500, seed=4)
    assert a == b and a != c
    assert a.value == pytest.approx(0.3)
    assert a.low < a.value < a.high
    # the normal approximation: half-width ≈ 1.96 * sqrt(.3 * .7 / 100) ≈ 0.09
    assert 0.06 < (a.high - a.low) / 2 < 0.12
    const = bootstrap_mean([0.5] * 10, n_boot=50)
    assert const.low == const.high == const.value == 0.5
    assert bootstrap_mean([]).value is None


def test_head_to_head_cis_contain_the_rates() -> None:
    verdicts_ab = ["1", "2", "1", "tie", "1", "2", "1", "1"] * 5
    verdicts_ba = ["2", "1", "1", "tie", "2", "1", "2", "2"] * 5
    res = head_to_head_from_verdicts(verdicts_ab, verdicts_ba, n_boot=300, seed=1)
    for iv in (res.win, res.tie, res.loss, res.win_rate):
        assert iv.low <= iv.value <= iv.high
    assert res == head_to_head_from_verdicts(verdicts_ab, verdicts_ba, n_boot=300, seed=1)


def test_length_logit_without_length_signal_is_the_win_rate() -> None:
    theta, phi, sd = fit_length_logit([1, 1, 1, 0], [0, 0, 0, 0])
    assert sd == 0 and phi == 0
    assert 1 / (1 + math.exp(-theta)) == pytest.approx(0.75, abs=0.01)


def test_lc_win_rate_removes_the_length_advantage_by_hand() -> None:
    # 8 prompts where the model is 100 chars longer and wins 90% (fractional), 2 where it is 100 shorter
    # and wins 50%. Two groups, two parameters: the fit is exact, θ = (logit .9 + logit .5) / 2 = ln 3,
    # so LC = sigmoid(ln 3) = 0.75 while the raw win rate is 0.82.
    prefs = [0.9] * 8 + [0.5] * 2
    diffs = [100] * 8 + [-100] * 2
    theta, phi, _ = fit_length_logit(prefs, diffs, l2=0.0)
    assert theta == pytest.approx(math.log(3), abs=1e-6) and phi > 0
    # The same design with real outcomes: 20 longer outputs win 18, lose 2 (0.9); 5 shorter ones tie (0.5).
    outcomes = ["win"] * 18 + ["loss"] * 2 + ["tie"] * 5
    outputs = ["x" * 200] * 20 + ["x" * 100] * 5
    refs = ["x" * 100] * 20 + ["x" * 200] * 5
    res = reference_win_rate_from_outcomes(outcomes, outputs, refs, n_boot=100)
    assert res.win_rate == pytest.approx(20.5 / 25)
    assert res.lc_win_rate == pytest.approx(0.75, abs=0.01)  # the small L2 penalty shrinks θ a little
    assert res.length_coef > 0
    assert res.lengths.mean_len == 180 and res.lengths.frac_longer == 0.8


def test_reference_win_rate_with_verdict_fn() -> None:
    judge = lambda items: ["1" if len(a) > len(b) else "2" for _, a, b in items]
    res = reference_win_rate(["p", "q"], ["long answer", "x"], ["short", "longer ref"], judge, n_boot=50)
    assert res.head_to_head.outcomes == ("win", "loss") and res.win_rate == 0.5
    d = res.to_dict()
    assert set(d) >= {"win_rate", "win_rate_ci", "lc_win_rate", "lengths", "head_to_head"}


def test_length_stats() -> None:
    s = length_stats(["aaa", "a"], ["a", "aaaaa"])
    assert (s.mean_len, s.median_len, s.mean_ref_len, s.mean_len_diff, s.frac_longer) == (2, 2, 3, -1, 0.5)
    with pytest.raises(ValueError):
        length_stats(["a"], [])
