"""Control arms of the reward: the checker as oracle, scores shuffled within a prompt, meta-judge pairs."""

import pytest

from srlm_fast.recipe import judge as J
from srlm_fast.recipe import rewards as R
from srlm_fast.recipe import task_eft, tasks


def _result(score):
    return J.JudgeResult(score, 1, 0, (score,), ())


def test_oracle_scores_by_the_checker_and_skips_non_tasks():
    items = [("What is 2 plus 3?", "5"), ("What is 2 plus 3?", "6"), ("Write a poem.", "roses")]
    scores = [r.score for r in R.oracle_results(items)]
    assert scores == [R.ORACLE_CORRECT, R.ORACLE_WRONG, None]


def test_shuffle_keeps_every_score_in_its_prompt_and_moves_some():
    results = [_result(float(s)) for s in range(12)]
    sizes = [4, 4, 4]
    shuffled = R.shuffle_within_groups(results, sizes, seed=0)
    for g in range(3):
        group = slice(4 * g, 4 * g + 4)
        assert sorted(r.score for r in shuffled[group]) == [r.score for r in results[group]]
    assert [r.score for r in shuffled] != [r.score for r in results]
    assert shuffled == R.shuffle_within_groups(results, sizes, seed=0)  # deterministic
    with pytest.raises(ValueError, match="group sizes"):
        R.shuffle_within_groups(results, [4, 4], seed=0)


def test_candidate_results_dispatches_and_only_oracle_reads_the_checker(monkeypatch):
    items = [("What is 2 plus 3?", "5"), ("What is 2 plus 3?", "6")]
    calls = []

    def self_judge(xs):
        calls.append(len(xs))
        return [_result(1.0), _result(4.0)]

    def no_checker(*a, **k):
        raise AssertionError("the checker was read")

    monkeypatch.setattr(tasks, "check", no_checker)
    assert [r.score for r in R.candidate_results("self", items, [2], self_judge, 0)] == [1.0, 4.0]
    assert sorted(r.score for r in R.candidate_results("random", items, [2], self_judge, 0)) == [1.0, 4.0]
    assert calls == [2, 2]
    monkeypatch.undo()
    oracle = R.candidate_results("oracle", items, [2], self_judge, 0)
    assert [r.score for r in oracle] == [5.0, 1.0] and calls == [2, 2]
    with pytest.raises(ValueError, match="judge.reward"):
        R.candidate_results("human", items, [2], self_judge, 0)


def test_alternative_judgments_are_the_likely_scores():
    r = J.JudgeResult(2.0, 1, 0, (2.0,), (), probs=(0.02, 0.5, 0.1, 0.0, 0.08, 0.3))
    assert R.judgments_to_meta_judge(r) == [1, 2, 5]  # the three likeliest; 4 (0.08) is fourth
    assert R.judgments_to_meta_judge(r, most=2) == [1, 5]
    assert R.judgments_to_meta_judge(J.JudgeResult(None, 0, 1, (), ())) == []


def test_meta_judge_pairs_train_the_judge_on_its_own_judgments():
    items = [("What is 2 plus 3?", "5"), ("What is 2 plus 3?", "6")]
    pairs, stats = R.meta_judge_pairs(
        items,
        judged_scores=[[1, 5], [1, 5]],
        meta_scores=[[2.0, 5.0], [3.0, 3.0]],
        template=J.JudgeTemplate.compact(),
    )
    assert stats.pairs == 1 and stats.dropped["tie"] == 1
    (p,) = pairs
    assert p.prompt == J.JudgeTemplate.compact().render("What is 2 plus 3?", "5")
    assert J.parse_score(p.chosen) == 5 and J.parse_score(p.rejected) == 1


def test_meta_score_ladder():
    assert J.meta_score(5, 5) == 5
    assert J.meta_score(5, 4) == 4  # right about correctness, off by one
    assert J.meta_score(5, 3) == 3
    assert J.meta_score(3, 2) == 3  # wrong about correctness, but off by one
    assert J.meta_score(5, 1) == 2
    assert J.meta_score(0, 5) == 2


def test_meta_eft_examples_grade_judgments_by_the_ladder():
    examples = task_eft.meta_eft_examples(120, seed=0)
    assert any(e.judged_score == e.true_score for e in examples)
    assert any(e.judged_score != e.true_score for e in examples)
    for e in examples:
        assert e.score == J.meta_score(e.true_score, e.judged_score)
        assert J.parse_score(e.response) == e.score
        assert e.prompt.startswith(J.META_TEMPLATE_TEXT.split("{")[0])
        assert e.candidate in e.prompt and f"Judgment: Score: {e.judged_score}" in e.prompt
        assert tasks.check(e.instruction, e.candidate).correct == (e.true_score >= J.CORRECT_THRESHOLD)


def test_meta_eft_shows_judgments_as_the_loop_meta_judge_renders_them():
    # The meta-judge in the loop reads the formulaic judgments of rewards.meta_judge; the meta-judge examples of
    # SFT must show the same text, else M1 learns to meta-judge a format it never meets.
    seen = []
    R.meta_judge(
        [("What is 2 plus 3?", "5")],
        [J.JudgeResult(3.0, 1, 0, (3.0,), (), probs=(0.0, 0.4, 0.0, 0.0, 0.0, 0.6))],
        lambda items: seen.extend(items) or [_result(4.0) for _ in items],
        J.JudgeTemplate.compact(),
        most=1,
    )
    loop_judgments = {j for _, j in seen}
    example = task_eft.meta_eft_examples(40, seed=0)
    for e in example:
        rendered = J.judgment_for_score(e.judged_score, True, False)
        assert e.prompt.endswith(f"Judgment: {rendered}")
    assert loop_judgments <= {J.judgment_for_score(s, True, False) for s in range(6)}


def test_meta_judge_round_meta_judges_alternatives_and_pairs_the_judge():
    items = [("What is 2 plus 3?", "5"), ("What is 2 plus 3?", "6"), ("What is 1 plus 1?", "2")]
    results = [
        J.JudgeResult(3.0, 1, 0, (3.0,), (), probs=(0.0, 0.4, 0.0, 0.0, 0.0, 0.6)),  # torn between 1 and 5
        J.JudgeResult(
            1.0, 1, 0, (1.0,), (), probs=(0.0, 1.0, 0.0, 0.0, 0.0, 0.0)
        ),  # sure: nothing to compare
        J.JudgeResult(4.0, 1, 0, (4.0,), (), probs=(0.0, 0.2, 0.0, 0.0, 0.0, 0.8)),
    ]
    seen = []

    def meta_fn(meta_items):
        seen.extend(meta_items)
        # A meta-judge that knows the answers: a judgment scoring a correct answer 5 is the right one.
        return [_result(5.0 if J.parse_score(j) == 5 else 2.0) for _, j in meta_items]

    tmpl = J.JudgeTemplate.compact()
    pairs, stats = R.meta_judge(items, results, meta_fn, tmpl, most=10)
    assert stats["with_alternatives"] == 2 and stats["meta_judged"] == 2 and stats["judgments"] == 4
    assert seen[0] == (J.meta_instruction(*items[0]), "Score: 1")
    assert [J.parse_score(p.chosen) for p in pairs] == [5, 5] and stats["pairs"] == 2
    assert {p.prompt for p in pairs} == {tmpl.render(*items[0]), tmpl.render(*items[2])}
    pairs, stats = R.meta_judge(items, results, meta_fn, tmpl, most=1)
    assert stats["meta_judged"] == 1 and len(pairs) == 1
