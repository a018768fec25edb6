"""Judge-agreement metrics against hand-computed cases: ties (human and judge), invalid judgments, τ-b, ρ."""

import math

import pytest

from srlm_fast.eval.metrics import (
    RankedJudgment,
    count_pairs,
    judge_agreement,
    kendall_tau_b,
    pair_agreement,
    rank_data,
    spearman,
)


def test_rank_data_average_ranks_for_ties() -> None:
    assert rank_data([3, 1, 4, 1, 5]) == [3.0, 1.5, 4.0, 1.5, 5.0]
    assert rank_data([2, 2, 2]) == [2.0, 2.0, 2.0]
    assert rank_data([]) == []


def test_spearman_with_ties_by_hand() -> None:
    # ranks of y = [1, 2, 3.5, 5, 3.5]; Σdxdy = 8, Σdx² = 10, Σdy² = 9.5
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # constant side: undefined
    assert spearman([1], [2]) is None


def test_kendall_tau_b_by_hand() -> None:
    # 10 pairs: 8 concordant, 1 discordant (4,5), 1 tied in y (3,5): (8 - 1) / sqrt(10 * 9)
    assert kendall_tau_b([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(7 / math.sqrt(90))
    # ties on both sides: x ties (0,1), y ties (1,2); C = 1 (0,2), D = 0; n0 = 3 → 1 / sqrt(2 * 2)
    assert kendall_tau_b([1, 1, 2], [1, 2, 2]) == pytest.approx(0.5)
    assert kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 1], [1, 2]) is None


def test_count_pairs_skips_human_ties_and_counts_invalid() -> None:
    c = count_pairs([0, 0, 1, 2], [1.0, 2.0, None, 0.5])
    # (0,1) human tie: skipped; (0,2),(1,2),(2,3) invalid; (0,3) correct, (1,3) correct
    assert (c.correct, c.wrong, c.tied, c.invalid) == (2, 0, 0, 3)


def test_judge_agreement_hand_computed() -> None:
    items = [
        # A: pairs (0,1) ok, (0,2) ok, (1,2) wrong; ρ = 0.5, τ = 1/3; top-1 hit; one perfect 5, on the best
        RankedJudgment([0, 1, 2], [5, 3, 4]),
        # B: a judge tie: pair tied, correlations undefined → 0, top tied (miss), no exact match
        RankedJudgment([0, 1], [4, 4]),
        # C: one invalid judgment: 2 pairs invalid, (0,2) wrong; left out of prompt-level metrics; a 5 on rank 2
        RankedJudgment([1, 0, 2], [2, None, 5]),
        # D: perfect agreement
        RankedJudgment([0, 1], [3, 1]),
    ]
    m = judge_agreement(items)
    assert (m.n_pairs, m.n_pairs_correct, m.n_pairs_tied, m.n_pairs_invalid) == (6, 3, 1, 2)
    assert m.pairwise_accuracy == pytest.approx(3 / 6)
    assert m.pairwise_accuracy_ties_half == pytest.approx(3.5 / 6)
    assert m.pairwise_accuracy_decided == pytest.approx(3 / 5)
    assert (m.n_perfect, m.five_best) == (2, pytest.approx(0.5))
    assert (m.n_prompts, m.n_prompts_scored, m.n_prompts_with_invalid, m.n_prompts_constant) == (4, 3, 1, 1)
    assert m.top1 == pytest.approx(2 / 3) and m.n_top_tied == 1
    assert m.exact_match == pytest.approx(1 / 3)
    assert m.spearman == pytest.approx((0.5 + 0 + 1) / 3)
    assert m.kendall_tau == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert (m.n_responses, m.n_invalid) == (10, 1)


def test_exact_match_requires_matching_ties() -> None:
    assert judge_agreement([RankedJudgment([0, 0, 1], [4, 4, 1])]).exact_match == 1.0
    m = judge_agreement([RankedJudgment([0, 0, 1], [1, 2, 3])])
    assert m.exact_match == 0.0 and m.n_pairs == 2 and m.pairwise_accuracy == 0.0


def test_five_best_threshold_and_empty() -> None:
    items = [RankedJudgment([0, 1], [4.6, 4.4])]
    assert judge_agreement(items).five_best is None  # no perfect 5: undefined, not 0
    assert judge_agreement(items, perfect=4.5).five_best == 1.0
    empty = judge_agreement([])
    assert empty.pairwise_accuracy is None and empty.spearman is None and empty.n_prompts == 0


def test_all_invalid_prompt() -> None:
    m = judge_agreement([RankedJudgment([0, 1, 2], [None, None, None])])
    assert (
        m.pairwise_accuracy is None
        and m.n_pairs_invalid == 3
        and m.n_invalid == 3
        and m.n_prompts_scored == 0
    )


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 human ranks but 3"):
        RankedJudgment([0, 1], [1, 2, 3])


def test_pair_agreement_hand_computed() -> None:
    m = pair_agreement([5, 3, None, 2], [1, 3, 4, 4])  # correct, tie, invalid, wrong
    assert (m.n_pairs, m.n_correct, m.n_tied, m.n_invalid) == (3, 1, 1, 1)
    assert m.accuracy == pytest.approx(1 / 3)
    assert m.accuracy_ties_half == pytest.approx(0.5)
    assert m.accuracy_decided == pytest.approx(0.5)
    assert m.tie_rate == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        pair_agreement([1], [1, 2])
