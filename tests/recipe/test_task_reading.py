"""Reading examples (`seed_data.n_reading`): invented facts whose answer only their evidence holds."""

from __future__ import annotations

import re

import pytest

from srlm_fast.recipe import task_knowledge
from srlm_fast.recipe.evidence import split_evidence
from srlm_fast.recipe.judge import JudgeTemplate, parse_score
from srlm_fast.recipe.task_families import BY_NAME, answer_matches
from srlm_fast.recipe.task_reading import judge_reading_examples, reading_examples, reading_items

NAME = re.compile(r"[A-Z][a-z]+")


def test_the_answer_is_in_the_evidence_line_of_the_asked_entity_and_nowhere_else() -> None:
    for prompt, answer in reading_examples(400, seed=3, k=3):
        passages, question = split_evidence(prompt)
        assert len(passages) == 3 and question.endswith(("?", "."))
        entity = next(w for w in NAME.findall(question) if w not in {"Which", "Name", "How", "What"})
        holding = [p for p in passages if re.search(rf"\b{re.escape(answer)}\b", p)]
        assert len(holding) == 1 and entity in holding[0]  # the asked entity's own fact holds the answer
        assert answer not in question


def test_names_are_fresh_never_the_corpus_and_never_repeated() -> None:
    seen: list[str] = []
    for prompt, _ in reading_examples(1000, seed=0):
        passages, _ = split_evidence(prompt)
        seen += [w for p in passages for w in NAME.findall(p) if w != "The"]
    assert len(seen) == len(set(seen)) > 1000
    assert not set(seen) & task_knowledge.WORLD_NAMES


def test_an_item_names_the_family_its_question_is_of_and_its_answer_is_graded_by_that_family() -> None:
    items = reading_items(200, seed=4)
    assert [(p, a) for _, p, a in items] == reading_examples(200, seed=4)
    assert {fam for fam, _, _ in items} == {"kb_capital", "kb_river"}
    for fam, prompt, answer in items:
        _, question = split_evidence(prompt)
        assert any(rx.match(question) for rx in BY_NAME[fam].regexes)
        assert answer_matches(BY_NAME[fam].kind, answer, f"It is {answer}.")
        assert not answer_matches(BY_NAME[fam].kind, answer, "I do not know.")


def test_both_families_both_positions_and_seeded() -> None:
    ex = reading_examples(300, seed=1)
    assert ex == reading_examples(300, seed=1) and ex != reading_examples(300, seed=2)
    assert {"capital" in p.split("Question: ")[1] for p, _ in ex} == {True, False}
    first = [p.split("\n")[0] for p, a in ex]
    assert (
        0.3 < sum(a in line for line, (_, a) in zip(first, ex)) / len(ex) < 0.7
    )  # the fact is not always first


def _judged(prompt: str) -> tuple[list[str], str, str]:
    """(evidence passages, question, response) of a grounded compact judge prompt."""
    lines = prompt.split("\n")
    evidence = [x.removeprefix("Evidence: ") for x in lines if x.startswith("Evidence: ")]
    question = next(x for x in lines if x.startswith("Instruction: ")).removeprefix("Instruction: ")
    return evidence, question, next(x for x in lines if x.startswith("Response: ")).removeprefix("Response: ")


def test_judge_reading_examples_are_right_or_wrong_by_their_evidence_alone() -> None:
    template = JudgeTemplate.grounded()
    ex = judge_reading_examples(400, seed=2, template=template, k=2)
    assert ex == judge_reading_examples(400, seed=2, template=template, k=2)
    scores = [parse_score(j) for _, j in ex]
    assert scores == [5.0, 1.0] * 200  # right and wrong alternate: balanced
    in_evidence = 0
    for (prompt, _), score in zip(ex, scores):
        assert prompt.startswith(template.prefix)
        evidence, question, response = _judged(prompt)
        assert len(evidence) == 2
        # The checker, told the evidence's fact, agrees with the score: the evidence decides.
        fact = next(p for p in evidence if any(w in p for w in NAME.findall(question)[1:]))
        answer = (
            fact.split(" is the capital")[0] if "capital" in question else fact.split(" is ")[1].split()[0]
        )
        assert (response == answer) == (score == 5.0)
        in_evidence += score == 1.0 and "capital" in question and any(response in p for p in evidence)
    assert in_evidence > 30  # wrong capitals are often names the evidence holds (the land, a distractor's)
    names = {w for p, _ in ex for w in NAME.findall(" ".join(_judged(p)[0]))}
    assert not names & task_knowledge.WORLD_NAMES
    reference = judge_reading_examples(4, seed=2, template=template, reference=True)
    assert all(j.startswith("Answer: ") and parse_score(j) in (1.0, 5.0) for _, j in reference)
    with pytest.raises(ValueError, match="reads no evidence"):
        judge_reading_examples(2, seed=0, template=JudgeTemplate.compact())
