"""QA evaluation with and without retrieved evidence (`srlm eval qa`).

Conditions, each the same questions answered greedily through the chat template:
  closed     the question alone: what the model knows
  rag        the top-k passages the retriever returns for the question, then the question
  oracle     the question's own gold paragraph (SQuAD/XQuAD only): the ceiling retrieval could reach
  shuffled   another question's gold paragraph (SQuAD/XQuAD only): evidence of the right form but irrelevant,
             which separates "uses the passage" from "is helped by any context"
RAG between closed and oracle says how much of the gap the retriever closes; shuffled below closed says the
model trusts what it is given. Each condition's F1 is also compared with closed-book's on the same questions
(difference and ratio, paired bootstrap).

Retrieval recall@1/5/20 is measured for every run with a retriever: by passage id when the data names each
question's paragraph (SQuAD), else by answer string in the passage (NQ-open, DPR's answer recall).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from srlm_fast.eval.qa import answer_in_text, paired_gain, recall_at_k, score_answers
from srlm_fast.eval.qa_data import QAExample
from srlm_fast.recipe.policy import Policy
from srlm_fast.retrieval.base import Retriever

CONDITIONS = ("closed", "rag", "oracle", "shuffled")
RECALL_KS = (1, 5, 20)

INSTRUCTION = "Answer the question with a short answer (a few words), nothing else."
WITH_PASSAGES = (
    "Answer the question using the passages. Reply with a short answer (a few words), nothing else."
)


@dataclass(frozen=True)
class QASettings:
    conditions: tuple[str, ...] = CONDITIONS
    k: int = 3  # passages in a RAG prompt
    max_new_tokens: int = 32
    max_passage_words: int = 200  # each passage in a prompt is cut to this many words
    seed: int = 0
    n_boot: int = 2000


def build_prompt(question: str, passages: Sequence[str], max_words: int = 200) -> str:
    """The user message of one condition: the instruction, the passages (if any), the question."""
    if not passages:
        return f"{INSTRUCTION}\n\nQuestion: {question}"
    blocks = "\n\n".join(
        f"Passage {i + 1}: {' '.join(p.split()[:max_words])}" for i, p in enumerate(passages)
    )
    return f"{WITH_PASSAGES}\n\n{blocks}\n\nQuestion: {question}"


def clean_answer(text: str) -> str:
    """The answer in a completion: its first non-empty line, without an "Answer:" prefix."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("Answer:").strip()
    return ""


def shuffled_passages(examples: Sequence[QAExample], seed: int = 0) -> list[str]:
    """For each question, the gold paragraph of another question with a different paragraph (deterministic)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(examples))
    out = []
    for i, ex in enumerate(examples):
        for step in range(len(examples)):
            other = examples[perm[(i + step) % len(examples)]]
            if other.passage_id != ex.passage_id:
                out.append(other.passage or "")
                break
        else:
            raise ValueError("a shuffled passage needs questions on at least two different paragraphs")
    return out


def retrieval_metrics(examples: Sequence[QAExample], hits, passages_text: Sequence[str]) -> dict:
    """recall@k by gold id (every example has one) or by answer string."""
    by_id = all(ex.passage_id is not None for ex in examples)
    relevant = [
        [h.id == ex.passage_id if by_id else answer_in_text(passages_text[h.index], ex.answers) for h in hs]
        for ex, hs in zip(examples, hits)
    ]
    return {
        "relevance": "gold passage id" if by_id else "answer string in passage",
        **recall_at_k(relevant, RECALL_KS),
    }


def run_qa(
    examples: Sequence[QAExample],
    settings: QASettings,
    *,
    retriever: Retriever | None = None,
    policy: Policy | None = None,
) -> dict:
    """Retrieval recall (with a retriever) and EM/F1 per condition (with a policy), plus every answer."""
    out: dict = {
        "n_questions": len(examples),
        "settings": settings.__dict__ | {"conditions": list(settings.conditions)},
    }
    records = [{"id": ex.id, "question": ex.question, "answers": list(ex.answers)} for ex in examples]
    hits = None
    if retriever is not None:
        depth = max(max(RECALL_KS), settings.k)
        hits = retriever.search([ex.question for ex in examples], depth)
        texts = [p.text for p in retriever.passages]
        out["retrieval"] = {"kind": retriever.kind, "n_passages": len(retriever.passages),
                            **retrieval_metrics(examples, hits, texts)}  # fmt: skip
        for rec, hs in zip(records, hits):
            rec["retrieved"] = [h.id for h in hs[: settings.k]]
    if policy is None:
        out["examples"] = records
        return out
    gold_ok = all(ex.passage is not None for ex in examples)
    contexts: dict[str, list[list[str]]] = {}
    for cond in settings.conditions:
        if cond == "closed":
            contexts[cond] = [[] for _ in examples]
        elif cond == "rag":
            if hits is None:
                raise ValueError("the rag condition needs a retriever")
            texts = [p.text for p in retriever.passages]
            contexts[cond] = [[texts[h.index] for h in hs[: settings.k]] for hs in hits]
        elif cond in ("oracle", "shuffled"):
            if not gold_ok:
                raise ValueError(
                    f"the {cond} condition needs each question's gold paragraph (SQuAD/XQuAD data)"
                )
            contexts[cond] = (
                [[ex.passage] for ex in examples] if cond == "oracle"
                else [[p] for p in shuffled_passages(examples, settings.seed)]
            )  # fmt: skip
        else:
            raise ValueError(f"unknown condition {cond!r} (choose from {', '.join(CONDITIONS)})")
    out["conditions"] = {}
    golds = [ex.answers for ex in examples]
    skipped_before = policy.skipped_too_long
    for cond, ctx in contexts.items():
        prompts = [build_prompt(ex.question, c, settings.max_passage_words) for ex, c in zip(examples, ctx)]
        with policy.progress(f"qa {cond}"):
            completions = policy.generate(prompts, n=1, temperature=0.0, top_p=1.0,
                                          max_new_tokens=settings.max_new_tokens, seed=settings.seed)  # fmt: skip
        answers = [clean_answer(c[0]) for c in completions]
        summary, em, f1 = score_answers(answers, golds, n_boot=settings.n_boot, seed=settings.seed)
        out["conditions"][cond] = summary.to_dict()
        for rec, a, e, f in zip(records, answers, em, f1):
            rec[cond] = {"answer": a, "em": e, "f1": f}
    if "closed" in contexts:  # what evidence adds, paired per question: "RAG's F1 is at least 2x closed-book"
        base = [rec["closed"]["f1"] for rec in records]
        out["f1_versus_closed"] = {
            cond: paired_gain([rec[cond]["f1"] for rec in records], base, n_boot=settings.n_boot, seed=settings.seed)
            for cond in contexts if cond != "closed"
        }  # fmt: skip
    out["prompts_skipped_too_long"] = policy.skipped_too_long - skipped_before
    out["examples"] = records
    return out
