"""`run_qa` wires each condition to the right evidence: a fake policy that answers only from what its prompt
holds gets oracle = 1, closed = 0, shuffled = 0 and RAG = the retriever's recall@k."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from srlm_fast.eval.qa_data import read_squad_questions
from srlm_fast.recipe.qa import QASettings, build_prompt, clean_answer, run_qa, shuffled_passages
from srlm_fast.retrieval.bm25 import BM25Retriever
from srlm_fast.retrieval.corpus import read_squad_passages

FACTS = [("Aldor", "river", "Velmo"), ("Brisk", "mountain", "Toraq"), ("Cimba", "lake", "Ulven"),
         ("Dorne", "forest", "Pyrax"), ("Evane", "desert", "Quill"), ("Fenra", "island", "Sarn")]  # fmt: skip


class AnswersFromPrompt:
    """Answers with the first known answer its prompt contains, else "unknown"; records what it saw."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.skipped_too_long, self.prompts = answers, 0, []

    @contextmanager
    def progress(self, desc: str):
        yield None

    def generate(self, prompts, n=1, temperature=0.7, top_p=0.9, max_new_tokens=64, seed=0, stop=()):
        assert temperature == 0.0 and n == 1  # greedy
        self.prompts += prompts
        passages = [p.split("Question:")[0] for p in prompts]
        return [[next((f"Answer: {a}" for a in self.answers if a in p), "unknown")] for p in passages]


@pytest.fixture
def squad(tmp_path: Path) -> Path:
    data = {"data": [{"title": name, "paragraphs": [{
        "context": f"The {kind} of {name} is called {answer}. Travellers often visit the {kind} in spring.",
        "qas": [{"id": name, "question": f"What is the {kind} of {name} called?",
                 "answers": [{"text": answer, "answer_start": 0}]}]}]} for name, kind, answer in FACTS]}  # fmt: skip
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


def test_conditions_get_their_evidence(squad: Path) -> None:
    examples = read_squad_questions(squad)
    retriever = BM25Retriever().index(read_squad_passages(squad))
    policy = AnswersFromPrompt([a for _, _, a in FACTS])
    out = run_qa(examples, QASettings(k=1, n_boot=200), retriever=retriever, policy=policy)
    c = out["conditions"]
    assert out["retrieval"]["recall@1"] == 1.0
    assert c["oracle"]["exact_match"]["value"] == 1.0
    assert c["rag"]["exact_match"]["value"] == out["retrieval"]["recall@1"]
    assert c["closed"]["exact_match"]["value"] == 0.0 and c["closed"]["f1"]["value"] == 0.0
    assert c["shuffled"]["exact_match"]["value"] == 0.0  # another question's paragraph never holds the answer
    assert len(policy.prompts) == 4 * len(FACTS)
    # Closed-book scores 0 everywhere: no ratio, and the difference is the condition's F1.
    versus = out["f1_versus_closed"]
    assert set(versus) == {"rag", "oracle", "shuffled"}
    assert versus["oracle"]["difference"]["value"] == 1.0 and versus["oracle"]["ratio"]["value"] is None
    ex = out["examples"][0]
    assert ex["oracle"] == {"answer": "Velmo", "em": 1.0, "f1": 1.0} and ex["retrieved"] == ["Aldor#0"]


def test_retrieval_only_and_bad_conditions(squad: Path) -> None:
    examples = read_squad_questions(squad)
    out = run_qa(examples, QASettings(), retriever=BM25Retriever().index(read_squad_passages(squad)))
    assert "conditions" not in out and out["retrieval"]["relevance"] == "gold passage id"
    with pytest.raises(ValueError, match="unknown condition"):
        run_qa(examples, QASettings(conditions=("closed", "nope")), policy=AnswersFromPrompt([]))
    with pytest.raises(ValueError, match="needs a retriever"):
        run_qa(examples, QASettings(conditions=("rag",)), policy=AnswersFromPrompt([]))


def test_prompt_shuffle_and_answer_cleaning(squad: Path) -> None:
    examples = read_squad_questions(squad)
    others = shuffled_passages(examples, seed=3)
    assert all(o != ex.passage for o, ex in zip(others, examples))
    assert shuffled_passages(examples, seed=3) == others  # deterministic
    p = build_prompt("Who?", ["one two three", "four"], max_words=2)
    assert "Passage 1: one two\n\nPassage 2: four\n\nQuestion: Who?" in p
    assert "Passage" not in build_prompt("Who?", [])
    assert clean_answer("\n  Answer: Velmo\nmore text") == "Velmo"
    assert clean_answer("   ") == ""
