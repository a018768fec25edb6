"""The task world's knowledge: invented entities whose facts exist only in a corpus the model never trains on.

Two kinds of fact, one short passage each (JSONL `{id, title, text}`, what `srlm index build` and the loop's
`[retrieval]` section read):
    kb_capital   "Kelmira is the capital of Trelos."   → "Which city is the capital of Trelos?"   Kelmira
    kb_river     "The Zorvath river is 412 km long."   → "How long is the Zorvath river?"         412
The names are syllables drawn from a fixed seed (`WORLD_SEED`), so the world is the same in every process, like
the real capitals of `task_families.CAPITALS`; the names are not English words, so no pretrained model and no
training example outside this corpus holds them. The families built on these facts (`task_families`) split
train/eval by entity (the task key), so a held-out entity's question, its answer and its passage never occur in
SFT data: without retrieval a model cannot know them.

This module knows no other module of the task world: task_families builds the families from `CAPITAL_OF` and
`RIVER_KM`.
"""

from __future__ import annotations

import random
from pathlib import Path

from srlm_fast.io import write_jsonl_atomic

WORLD_SEED = 16
N_PLACES = 150
N_RIVERS = 150

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "kr", "dr", "sk", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "y")
_CODAS = ("", "", "n", "r", "s", "th", "l", "x", "m", "sh")


def _name(rng: random.Random) -> str:
    syllables = rng.choice((2, 2, 3))
    text = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
    return text.capitalize()


def invent_names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    """`n` new names (5-10 letters), none in `taken`; each is added to it."""
    out: list[str] = []
    while len(out) < n:
        name = _name(rng)
        if name not in taken and 5 <= len(name) <= 10:
            taken.add(name)
            out.append(name)
    return out


def _build() -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
    rng = random.Random(f"knowledge:{WORLD_SEED}")
    taken: set[str] = set()
    places = invent_names(rng, N_PLACES, taken)
    capitals = invent_names(rng, N_PLACES, taken)
    rivers = invent_names(rng, N_RIVERS, taken)
    # Decoys: names that are no fact's answer, the wrong answers of the judge-training examples (a wrong answer
    # drawn from real capitals would name a held-out fact's city in SFT data).
    decoys = tuple(invent_names(rng, 40, taken))
    lengths = {r: str(rng.randint(100, 999)) for r in rivers}
    return dict(zip(places, capitals)), lengths, decoys


#: place → its capital; river → its length in km (as a string, the task world's answers are strings).
CAPITAL_OF, RIVER_KM, DECOY_NAMES = _build()
#: Every name the corpus (and its decoys) uses: names invented elsewhere (`task_reading`) avoid them.
WORLD_NAMES: frozenset[str] = frozenset([*CAPITAL_OF, *CAPITAL_OF.values(), *RIVER_KM, *DECOY_NAMES])


def passage_id(family: str, entity: str) -> str:
    """The corpus id of the passage that states an entity's fact."""
    return f"{family}:{entity.lower()}"


def corpus_rows() -> list[dict[str, str]]:
    """The knowledge corpus: one `{id, title, text}` passage per fact, in a fixed order."""
    rows = [
        {"id": passage_id("kb_capital", p), "title": p, "text": f"{c} is the capital of {p}."}
        for p, c in CAPITAL_OF.items()
    ]
    rows += [
        {"id": passage_id("kb_river", r), "title": f"{r} river", "text": f"The {r} river is {km} km long."}
        for r, km in RIVER_KM.items()
    ]
    return rows


def write_corpus(path: str | Path) -> Path:
    """Write the knowledge corpus as JSONL (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, corpus_rows())
    return path
