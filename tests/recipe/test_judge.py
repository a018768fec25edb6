"""Judge: template rendering, the score parser on adversarial outputs, expected score, aggregation."""

import math

import pytest

from srlm_fast.recipe.judge import (
    CRITERIA,
    JudgeConfig,
    JudgeTemplate,
    aggregate_judgments,
    expected_score,
    format_judgment,
    judge,
    judgment_for_score,
    parse_score,
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Good answer.\nScore: 4", 4.0),
        ("Score: 4/5", 4.0),
        ("score: 3.5", 3.5),
        ("**Score:** 4", 4.0),
        ("**Score: 2**", 2.0),
        ("Score: **5**", 5.0),
        ("Score: 4.", 4.0),
        ("Score: 0", 0.0),
        ("Score: 3 out of 5", 3.0),
        ("Score: 1 point", 1.0),
        ("SCORE:5", 5.0),
        ("Total score: 3\n", 3.0),
        ("Score: 1\nOn reflection it is better.\nScore: 4", 4.0),  # the last one wins
        ("Score: 4\n\nThanks for reading!", 4.0),  # text after the score line is fine
        ("Relevant: yes. Substantial: no. Correct: no. Direct: no. Perfect: no.\nScore: 1", 1.0),
    ],
)
def test_parse_score_valid(text: str, want: float) -> None:
    assert parse_score(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The response is great, I would give it four points.",
        "Score: five",
        "Score: 6",
        "Score: -1",
        "Score: 45",
        "Score: 4/10",  # another scale is not our scale
        "Score: 6/5",
        "Score: 3 or 4",
        "Score: 4 because it is clear",
        "Score:",
        "Score: 4\nScore: five",  # the last occurrence is unreadable: no score, not the earlier 4
        "Subscore: 4",
        "Score: nan",
        "Score: inf",
    ],
)
def test_parse_score_invalid_is_never_a_number(text: str) -> None:
    assert parse_score(text) is None


def test_expected_score() -> None:
    assert expected_score({"4": 1.0}) == 4.0
    assert expected_score({"0": 0.5, "5": 0.5}) == pytest.approx(2.5)
    # Renormalised over score tokens only; other tokens and out-of-range digits are ignored.
    assert expected_score({"3": 0.2, "5": 0.2, "the": 0.5, "7": 0.1}) == pytest.approx(4.0)
    # Same digit under several token spellings adds up; int keys work.
    assert expected_score({" 2": 0.25, "2": 0.25, 4: 0.5}) == pytest.approx(3.0)
    assert expected_score({"the": 1.0}) is None
    assert expected_score({}) is None
    assert expected_score({"3": 0.0}) is None
    with pytest.raises(ValueError):
        expected_score({"3": -0.1})
    with pytest.raises(ValueError):
        expected_score({"3": math.nan})


def test_aggregate_ignores_invalid_and_counts_them() -> None:
    agg = aggregate_judgments(["Score: 4", "Score: five", "Score: 2"])
    assert agg.mean == pytest.approx(3.0)
    assert (agg.n_valid, agg.n_invalid) == (2, 1)
    none = aggregate_judgments(["no score", "Score: 9"])
    assert none.mean is None and none.n_invalid == 2


def test_templates_share_prefix_and_render_once() -> None:
    for tpl in (JudgeTemplate.full(), JudgeTemplate.compact()):
        a = tpl.render("What is 2 plus 2?", "FOUR")
        b = tpl.render("Reverse the word cat.", "tac")
        assert a.startswith(tpl.prefix) and b.startswith(tpl.prefix)
        assert len(tpl.prefix) > 100
        # The rubric comes first, then the instruction, then the response.
        assert len(tpl.prefix) <= a.index("What is 2 plus 2?") < a.index("FOUR")
    # An instruction containing a placeholder is not expanded a second time.
    out = JudgeTemplate.compact().render("say {response}", "X")
    assert "say {response}" in out


def test_template_validation(tmp_path) -> None:
    with pytest.raises(ValueError, match="instruction"):
        JudgeTemplate("Rubric. {response}")
    with pytest.raises(ValueError, match="before"):
        JudgeTemplate("Rubric. {response} {instruction}")
    with pytest.raises(ValueError, match="rubric"):
        JudgeTemplate("{instruction} {response}")
    p = tmp_path / "mine.txt"
    p.write_text("My rubric.\nQ: {instruction}\nA: {response}\n")
    assert JudgeTemplate.from_spec(str(p)).render("q", "a") == "My rubric.\nQ: q\nA: a"


def test_formulaic_judgments_parse_back() -> None:
    for s in range(6):
        for first in (False, True):
            text = judgment_for_score(s, score_first=first)
            assert parse_score(text) == s
            assert text.count("yes") == s and text.count("no.") == len(CRITERIA) - s
            assert text.startswith("Score:") == first and text.endswith(f"Score: {s}") != first
        assert judgment_for_score(s, verdicts=False) == f"Score: {s}"
    with pytest.raises(ValueError):
        format_judgment([True, False])


def test_judge_sample_and_expected_modes() -> None:
    calls = []

    def generate_fn(prompts, n, temperature, top_p, max_new_tokens, seed):
        calls.append((len(prompts), n, temperature))
        # The fake judge scores by the length of the response: it must see the rendered response.
        return [
            [f"Score: {min(5, len(p.rsplit('Response: ', 1)[1]))}", "Score: ?", "Score: 1"] for p in prompts
        ]

    items = [("q1", "abcd"), ("q2", "ab")]
    res = judge(items, JudgeTemplate.compact(), JudgeConfig(k=3), generate_fn=generate_fn)
    assert calls == [(2, 3, 0.7)]
    assert [r.score for r in res] == [pytest.approx(2.5), pytest.approx(1.5)]
    assert all(r.n_invalid == 1 and len(r.judgments) == 3 for r in res)

    def probs_fn(prompts):
        return [{"5": 1.0}, {"x": 1.0}]

    res = judge(items, JudgeTemplate.compact(), JudgeConfig(mode="expected"), score_probs_fn=probs_fn)
    assert res[0].score == 5.0 and res[1].score is None and res[1].n_invalid == 1
    with pytest.raises(ValueError):
        JudgeConfig(mode="vote")
