"""Task-world metrics: checker accuracy and judge/checker agreement on hand-built candidates."""

import random

import pytest

from srlm_fast.eval.task_world import auc, per_prompt_outcomes, task_world_metrics
from srlm_fast.recipe.judge import CORRECT_THRESHOLD
from srlm_fast.recipe.task_eft import candidate
from srlm_fast.recipe.tasks import check, eval_prompts

GRADED = {"check": check, "threshold": CORRECT_THRESHOLD}


def test_auc_by_hand() -> None:
    assert auc([5, 2], [1, 4]) == pytest.approx(3 / 4)  # 5>1, 5>4, 2>1, 2<4
    assert auc([3], [3]) == pytest.approx(0.5)  # a tie counts half
    assert auc([], [1]) is None


def test_task_world_metrics_hand_computed() -> None:
    t1, t2 = eval_prompts(2, seed=5)
    rng = random.Random(0)
    correct1, wrong1, padded1 = (candidate(t1, q, rng) for q in ("correct", "wrong", "padded"))
    correct2, wrong2 = (candidate(t2, q, rng) for q in ("correct", "wrong"))
    assert check(t1.prompt, padded1).correct  # the checker accepts fluff around the answer
    prompts = [t1.prompt] * 3 + [t2.prompt] * 2 + ["Tell me a story about a dragon."]
    responses = [correct1, wrong1, padded1, correct2, wrong2, "Once upon a time."]
    scores = [5.0, 1.0, 2.0, None, 4.0, 3.0]
    m = task_world_metrics(prompts, responses, scores, **GRADED)
    assert (m.n, m.n_correct, m.n_wrong, m.n_unparseable) == (6, 3, 2, 1)
    assert m.accuracy == pytest.approx(3 / 5)
    # judged: 5/correct ✓, 1/wrong ✓, 2/correct ✗ (below 3), 4/wrong ✗ → 2 of 4
    assert m.judge_checker_agreement == pytest.approx(0.5)
    # same-prompt (correct, wrong) pairs: t1 gives 2, both ordered right; t2's pair has an invalid score
    assert (m.n_judge_pairs, m.n_judge_pairs_tied, m.judge_pairwise_accuracy) == (2, 0, 1.0)
    assert m.judge_auc == pytest.approx(3 / 4)
    assert (m.mean_score_correct, m.mean_score_wrong) == (pytest.approx(3.5), pytest.approx(2.5))
    assert m.n_invalid_scores == 1
    assert sum(m.by_family.values()) > 0 and set(m.by_family) <= {t1.family, t2.family}


def test_without_scores_only_the_checker() -> None:
    t = eval_prompts(1, seed=1)[0]
    m = task_world_metrics([t.prompt], [t.answer], **GRADED)
    assert m.accuracy == 1.0 and m.judge_checker_agreement is None and m.judge_pairwise_accuracy is None
    with pytest.raises(ValueError):
        task_world_metrics([t.prompt], [t.answer], [1.0, 2.0], **GRADED)


def test_per_prompt_outcomes_line_up_with_the_prompts() -> None:
    prompts = ["What is 2 plus 3?", "What is 2 plus 3?", "Write a poem.", "Is 4 even or odd?"]
    out = per_prompt_outcomes(prompts, ["5", "6", "roses", "even"], [4.5, 4.0, 5.0, None], **GRADED)
    assert out == {"correct": "10-1", "agree": "10--"}
    with pytest.raises(ValueError):
        per_prompt_outcomes(prompts, ["5"], [1.0], **GRADED)
