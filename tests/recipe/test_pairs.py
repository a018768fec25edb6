"""Pairs: highest vs lowest, ties and invalid scores dropped, margin, tiers and length control."""

import pytest

from srlm_fast.recipe.pairs import (
    DROP_REASONS,
    PairConfig,
    PromptCandidates,
    is_verdict,
    make_pairs,
    select_pair,
)


def pc(scores, responses=None, prompt="p"):
    responses = responses or [f"r{i}" for i in range(len(scores))]
    return PromptCandidates(prompt, responses, scores)


def test_highest_vs_lowest() -> None:
    pair = select_pair(pc([2.0, 4.5, None, 1.0]), PairConfig())
    assert (pair.chosen, pair.rejected) == ("r1", "r3")
    assert (pair.chosen_score, pair.rejected_score, pair.margin) == (4.5, 1.0, 3.5)
    assert (pair.chosen_len, pair.rejected_len) == (2, 2)
    assert pair.to_dict()["scores"] == [2.0, 4.5, None, 1.0]


def test_drops_with_reasons() -> None:
    items = [
        pc([None, None, 3.0]),  # one valid score
        pc([None, None]),
        pc([3.0, 3.0, None, 3.0]),  # tie
        pc([2.0, 2.5], prompt="small"),  # below the margin
        pc([1.0, 5.0], responses=["same", "same"]),  # identical texts
        pc([0.0, 5.0, 2.0]),  # kept
    ]
    pairs, stats = make_pairs(items, PairConfig(min_margin=1.0))
    assert [p.prompt for p in pairs] == ["p"] and pairs[0].chosen == "r1" and pairs[0].rejected == "r0"
    assert stats.to_dict() == {
        "prompts": 6,
        "pairs": 1,
        "dropped": {
            "fewer_than_2_valid": 2,
            "tie": 1,
            "below_margin": 1,
            "same_text": 1,
            "few_votes": 0,
            "chosen_below": 0,
        },
        "verdicts": 0,
    }
    assert set(stats.to_dict()["dropped"]) == set(DROP_REASONS)
    # Without a margin the small gap is a pair.
    assert len(make_pairs(items, PairConfig())[0]) == 2


def test_min_votes_keeps_a_pair_only_when_enough_candidates_give_the_chosen_answer() -> None:
    responses = [
        "42",
        "17",
        " 42.",
        "Forty",
        "42",
        "9",
    ]  # "42" three times (case, spaces, final period aside)
    scores = [5.0, 1.0, 4.0, 3.0, 4.0, 2.0]
    for min_votes, kept in [(0, True), (1, True), (3, True), (4, False)]:
        result = select_pair(pc(scores, responses), PairConfig(min_votes=min_votes))
        assert (result != "few_votes") is kept
        if kept:
            assert (result.chosen, result.rejected) == ("42", "17")  # the judge still picks the pair
    lone = select_pair(pc([1.0, 5.0, 2.0, 2.0], ["7", "8", "7", "7"]), PairConfig(min_votes=2))
    assert lone == "few_votes"  # the judge's favourite is a one-vote answer: not trusted
    _, stats = make_pairs(
        [pc(scores, responses), pc([1.0, 5.0, 2.0, 2.0], ["7", "8", "7", "7"])], PairConfig(min_votes=2)
    )
    assert stats.pairs == 1 and stats.dropped["few_votes"] == 1
    with pytest.raises(ValueError, match="min_votes"):
        PairConfig(min_votes=-1)


def test_min_chosen_drops_a_prompt_whose_best_candidate_the_judge_calls_bad() -> None:
    good, bad = pc([4.5, 1.0, 2.0]), pc([2.9, 0.5, 1.0], prompt="all bad")
    pairs, stats = make_pairs([good, bad], PairConfig(min_chosen=3.0))
    assert [p.prompt for p in pairs] == ["p"] and stats.dropped["chosen_below"] == 1
    assert select_pair(pc([3.0, 0.0]), PairConfig(min_chosen=3.0)).chosen == "r0"  # at the threshold: kept
    assert len(make_pairs([good, bad], PairConfig())[0]) == 2  # off by default
    with pytest.raises(ValueError, match="min_chosen"):
        PairConfig(min_chosen=-1.0)


def test_ties_at_the_top_pick_first_without_length_control() -> None:
    pair = select_pair(
        pc([5.0, 5.0, 1.0, 1.0], ["long answer", "short", "x", "longest of all"]), PairConfig()
    )
    assert (pair.chosen, pair.rejected) == ("long answer", "x")


def test_length_control_shortest_top_longest_bottom() -> None:
    responses = ["a medium answer", "tiny", "the longest, most padded answer here", "x", "a bad long reply!!"]
    scores = [5.0, 5.0, 5.0, 1.0, 1.0]
    pair = select_pair(pc(scores, responses), PairConfig(length_control=True))
    assert (pair.chosen, pair.rejected) == ("tiny", "a bad long reply!!")
    assert (pair.chosen_len, pair.rejected_len) == (4, 18)


def test_tiers_widen_with_rho() -> None:
    # max 5, min 1, spread 4: rho 0.3 → top tier >= 3.8, bottom tier <= 2.2.
    responses = ["best but long....", "4.0 short", "3.5", "2.0 quite long answer", "worst"]
    scores = [5.0, 4.0, 3.5, 2.0, 1.0]
    strict = select_pair(pc(scores, responses), PairConfig(length_control=True))
    assert (strict.chosen, strict.rejected) == ("best but long....", "worst")
    wide = select_pair(pc(scores, responses), PairConfig(length_control=True, tier=0.3))
    assert wide.chosen == "4.0 short"  # 3.5 is below the top tier (3.8)
    assert wide.rejected == "2.0 quite long answer"
    assert wide.margin >= (1 - 2 * 0.3) * 4.0


def test_length_fn_counts_tokens() -> None:
    pair = select_pair(
        pc([5.0, 5.0, 0.0], ["a b c", "abcdefghij", "z"]), PairConfig(length_control=True), len
    )
    assert pair.chosen == "a b c"
    pair = select_pair(
        pc([5.0, 5.0, 0.0], ["a b c", "abcdefghij", "z"]),
        PairConfig(length_control=True),
        length_fn=lambda s: len(s.split()),
    )
    assert pair.chosen == "abcdefghij" and pair.chosen_len == 1


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        PairConfig(tier=0.5)
    with pytest.raises(ValueError):
        PairConfig(min_margin=-1)
    with pytest.raises(ValueError):
        PromptCandidates("p", ["a"], [1.0, 2.0])


def test_reject_verdicts_scores_a_judge_verdict_given_as_an_answer_lowest() -> None:
    responses = ["Score: 5", "Paris", "Score: 4", "Lyon"]
    item = pc([5.0, 4.0, None, 1.0], responses)
    # Off: the judge's scores decide, and the verdict it liked best is chosen.
    off = select_pair(item, PairConfig())
    assert (off.chosen, off.rejected) == ("Score: 5", "Lyon")
    on = select_pair(item, PairConfig(reject_verdicts=True))
    assert (on.chosen, on.rejected) == ("Paris", "Score: 5")
    assert (on.chosen_score, on.rejected_score) == (4.0, 0.0)
    # The unscored verdict becomes a valid 0: the rule knows it is no answer.
    assert on.scores == (0.0, 4.0, 0.0, 1.0)
    pairs, stats = make_pairs(
        [item, pc([5.0, 3.0], ["Score: 3", "**Score:** 2"])], PairConfig(reject_verdicts=True)
    )
    assert len(pairs) == 1 and stats.dropped["tie"] == 1  # two verdicts and nothing else: no pair
    assert stats.verdicts == 4 and stats.to_dict()["verdicts"] == 4
    assert make_pairs([item], PairConfig())[1].verdicts == 0  # counted only when the rule is on


def test_reject_verdicts_with_min_chosen_drops_a_prompt_of_verdicts_and_wrong_answers() -> None:
    item = pc([5.0, 2.0, 1.0], ["Score: 4", "Rome", "Oslo"])
    assert select_pair(item, PairConfig(min_chosen=3.0)).chosen == "Score: 4"
    assert select_pair(item, PairConfig(min_chosen=3.0, reject_verdicts=True)) == "chosen_below"


@pytest.mark.parametrize(
    "response, verdict",
    [("Score: 2", True), ("Paris.\nScore: 4", True), ("Score: 4/5", True), ("Paris", False),
     ("Score: five", False), ("Score: 7", False), ("The score was 3", False)],
)  # fmt: skip
def test_is_verdict_is_what_the_judges_parser_reads(response, verdict) -> None:
    assert is_verdict(response) is verdict
