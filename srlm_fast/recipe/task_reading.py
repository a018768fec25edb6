"""Reading examples: questions about freshly invented facts, answered from their evidence (`seed_data.n_reading`).

The knowledge families hold ~120 training facts, and each recurs in SFT many times, so a small model memorises
them and never learns to read its `Evidence:` lines: in bench/rag_synergy.py's 2×2 the 4M-parameter M1 answered
0% of the held-out facts' questions, though BM25's top passage held the answer for every one. A reading example
invents its own entity (task_knowledge's syllable names, never a corpus name), states its fact in one evidence
line beside distractor facts, and asks one of the knowledge families' questions about it. Its answer is in its
evidence and nowhere else, so the only way to fit these examples is to copy from the evidence: the skill a
held-out fact's question needs.

    Evidence: The Dravoth river is 731 km long.
    Evidence: Sokrae is the capital of Mithal.
    Question: Which city is the capital of Mithal?          → Sokrae

Judge reading examples (`seed_data.n_judge_reading`) do the same for the grounded judge: the grounded rubric over
an invented fact's evidence, its question and an answer, right (`Score: 5`) or wrong (`Score: 1`: another name of
the evidence or a new one; a length off by a few km). Only the evidence tells right from wrong, where a judge
trained on the corpus's facts alone might learn which answers it remembers. Measured on SmolLM2-135M
(bench/grounded_judge.py, held-out facts): not needed there. Trained with 600 of them its grounded judge agrees with
the checker on 96.0%, without them on 96.8%. They stay opt-in for models that memorise rather than read.
"""

from __future__ import annotations

import random

from srlm_fast.recipe.evidence import with_evidence
from srlm_fast.recipe.judge import JudgeTemplate, judgment_for_score
from srlm_fast.recipe.task_families import KNOWLEDGE_FAMILIES
from srlm_fast.recipe.task_knowledge import WORLD_NAMES, invent_names

_TEMPLATES = {f.name: f.templates for f in KNOWLEDGE_FAMILIES}


def _fact(kind: str, rng: random.Random, taken: set[str]) -> tuple[str, dict[str, str], str]:
    """An invented fact of the family `kind`: (its passage, the question's fields, the answer)."""
    if kind == "kb_capital":
        place, city = invent_names(rng, 2, taken)
        return f"{city} is the capital of {place}.", {"place": place}, city
    (river,) = invent_names(rng, 1, taken)
    km = str(rng.randint(100, 999))
    return f"The {river} river is {km} km long.", {"river": river}, km


def _read_item(rng: random.Random, taken: set[str], k: int) -> tuple[str, list[str], str, str]:
    """One invented fact's (family, evidence passages, question, answer): `k` passages, the fact in a random place
    among k - 1 distractors, none of which holds the answer (a river of the same length)."""
    kinds = sorted(_TEMPLATES)
    kind = rng.choice(kinds)
    passage, fields, answer = _fact(kind, rng, taken)
    passages: list[str] = []
    while len(passages) < k - 1:
        other = _fact(rng.choice(kinds), rng, taken)[0]
        if answer not in other.split():
            passages.append(other)
    passages.insert(rng.randrange(k), passage)
    return kind, passages, rng.choice(_TEMPLATES[kind]).format(**fields), answer


def reading_items(n: int, seed: int = 0, k: int = 2) -> list[tuple[str, str, str]]:
    """`n` (family, prompt, answer) triples: `k` evidence lines (the fact in a random place among k - 1
    distractors), then the question. Names never repeat across the items nor meet the knowledge corpus."""
    rng = random.Random(f"reading:{seed}")
    taken = set(WORLD_NAMES)
    out = []
    for _ in range(n):
        kind, passages, question, answer = _read_item(rng, taken, k)
        out.append((kind, with_evidence(question, passages), answer))
    return out


def reading_examples(n: int, seed: int = 0, k: int = 2) -> list[tuple[str, str]]:
    """`reading_items` as (prompt, answer) pairs: SFT examples."""
    return [(prompt, answer) for _, prompt, answer in reading_items(n, seed, k)]


def _wrong(kind: str, answer: str, passages: list[str], rng: random.Random, taken: set[str]) -> str:
    """A wrong answer a reader can catch only in the evidence: for a capital, half the time another name the
    evidence holds (the land itself, a distractor's), else a new one; for a length, off by 1-3 or 10 km."""
    if kind == "kb_river":
        return str(int(answer) + rng.choice((-10, -3, -2, -1, 1, 2, 3, 10)))
    names = sorted({w.strip(".") for p in passages for w in p.split() if w[:1].isupper()} - {answer, "The"})
    if names and rng.random() < 0.5:
        return rng.choice(names)
    return invent_names(rng, 1, taken)[0]


def judge_reading_examples(
    n: int, seed: int, template: JudgeTemplate, k: int = 2, reference: bool = False
) -> list[tuple[str, str]]:
    """`n` (judge prompt, judgment) pairs for a grounded `template`: an invented fact's question with its right
    answer (`Score: 5`) or a wrong one (`Score: 1`), alternately, judged over the fact and k - 1 distractors.
    The judgment has the loop's EFT form (score line alone; `reference`: after `Answer: <the right answer>`)."""
    if not template.is_grounded:
        raise ValueError(
            f"judge template {template.name!r} reads no evidence: judge reading examples need one"
        )
    rng = random.Random(f"judge-reading:{seed}")
    taken = set(WORLD_NAMES)
    out = []
    for i in range(n):
        kind, passages, question, answer = _read_item(rng, taken, k)
        right = i % 2 == 0
        response = answer if right else _wrong(kind, answer, passages, rng, taken)
        judgment = judgment_for_score(5 if right else 1, score_first=True, verdicts=False)
        out.append(
            (
                template.render(question, response, passages),
                (f"Answer: {answer}\n" if reference else "") + judgment,
            )
        )
    return out
