"""Reading examples (`seed_data.n_reading`): invented facts whose answer only their evidence holds."""

from __future__ import annotations

import re

from srlm_fast.recipe import task_knowledge
from srlm_fast.recipe.evidence import split_evidence
from srlm_fast.recipe.task_reading import reading_examples

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


def test_both_families_both_positions_and_seeded() -> None:
    ex = reading_examples(300, seed=1)
    assert ex == reading_examples(300, seed=1) and ex != reading_examples(300, seed=2)
    assert {"capital" in p.split("Question: ")[1] for p, _ in ex} == {True, False}
    first = [p.split("\n")[0] for p, a in ex]
    assert (
        0.3 < sum(a in line for line, (_, a) in zip(first, ex)) / len(ex) < 0.7
    )  # the fact is not always first
