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
"""

from __future__ import annotations

import random

from srlm_fast.recipe.evidence import with_evidence
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


def reading_examples(n: int, seed: int = 0, k: int = 2) -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs: `k` evidence lines (the fact in a random place among k - 1 distractors), then
    the question. Names never repeat across the examples nor meet the knowledge corpus."""
    rng = random.Random(f"reading:{seed}")
    taken = set(WORLD_NAMES)
    out = []
    kinds = sorted(_TEMPLATES)
    for _ in range(n):
        kind = rng.choice(kinds)
        passage, fields, answer = _fact(kind, rng, taken)
        passages: list[str] = []
        while len(passages) < k - 1:  # a distractor never holds the answer (a river of the same length)
            other = _fact(rng.choice(kinds), rng, taken)[0]
            if answer not in other.split():
                passages.append(other)
        passages.insert(rng.randrange(k), passage)
        question = rng.choice(_TEMPLATES[kind]).format(**fields)
        out.append((with_evidence(question, passages), answer))
    return out
