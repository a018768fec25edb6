"""bench/grounded_judge.py's items and metrics: knowledge questions with one right and one wrong answer each, the
gold passage, agreement and pairwise accuracy (unscored answers count against the judge)."""

import random

import pytest

from bench.grounded_judge import condition_metrics, gold_passage, knowledge_questions, wrong_answer
from srlm_fast.recipe import tasks
from srlm_fast.recipe.task_knowledge import CAPITAL_OF, RIVER_KM


def test_questions_cover_every_fact_once_or_the_held_out_ones():
    every = knowledge_questions(10_000, "all", seed=0)
    assert len(every) == len(CAPITAL_OF) + len(RIVER_KM)
    assert len({q.key for q in every}) == len(every)
    assert knowledge_questions(30, "all", seed=0) == every[:30]
    held_out = knowledge_questions(20, "eval", seed=0)
    assert held_out and all(tasks.is_heldout(q) for q in held_out)


def test_wrong_answers_are_wrong_and_gold_passages_state_the_fact():
    rng = random.Random(0)
    for q in knowledge_questions(60, "all", seed=1):
        assert not tasks.check(q.prompt, wrong_answer(q, rng)).correct
        assert tasks.check(q.prompt, q.answer).correct
        assert q.answer in gold_passage(q)


def test_other_wrong_answers_are_other_facts_answers_stated_in_their_passages():
    rng = random.Random(0)
    answers = set(CAPITAL_OF.values()) | set(RIVER_KM.values())
    for q in knowledge_questions(60, "eval", seed=1):
        wrong = wrong_answer(q, rng, "other")
        assert not tasks.check(q.prompt, wrong).correct and wrong in answers


def test_condition_metrics():
    right, wrong = [4.0, 2.0, 3.0, None], [1.0, 2.5, 3.0, 1.0]
    m = condition_metrics(right, wrong, range(4))
    # agreement: right >= 3 (q0, q2) and wrong < 3 (q0, q1, q3) over 8 answers; pairs: q0 won, q2 tied, q3 unscored.
    assert m["agreement"] == pytest.approx(5 / 8)
    assert m["pairwise_accuracy"] == pytest.approx(1.5 / 4)
    assert condition_metrics(right, wrong, [0, 0])["pairwise_accuracy"] == 1.0
