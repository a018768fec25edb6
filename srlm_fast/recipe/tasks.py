"""The embedded verifiable task world: short instruction tasks with a programmatic checker.

It lets anyone watch, with ground truth, whether self-rewarding improves a model: a tiny model trained from scratch
on CPU learns these tasks in minutes, and every prompt — including prompts the model invents during self-instruct —
is graded by parsing it back into a task and solving it.

This module is the world's API: tasks (`Task`), sampling them, the train/eval split, IFT examples, and the checker
(`parse_prompt`, `check`, `check_many`). The families themselves (wordings, samplers, solvers, wrong answers) are
`recipe.task_families`; judge-training (EFT, meta-EFT) examples built on the checker are `recipe.task_eft`.

Train/eval split: a task's canonical key (family + parameters, plus the wording for lookup families) is hashed;
about `HELDOUT_PERCENT`% of keys are evaluation-only, so evaluation prompts never occur in training. Lookup
families split on wording because their facts are few and a fact never seen in training cannot be known.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from srlm_fast.recipe.evidence import question_of
from srlm_fast.recipe.task_families import (
    ALL_FAMILIES,
    BY_NAME,
    KNOWLEDGE_FAMILIES,
    Family,
    answer_matches,
    select_families,
)
from srlm_fast.recipe.task_knowledge import CAPITAL_OF, RIVER_KM, passage_id

HELDOUT_PERCENT = 10


@dataclass(frozen=True)
class Task:
    """One task instance: its prompt (in one wording), the reference answer and what it was built from."""

    family: str
    prompt: str
    answer: str
    params: tuple[tuple[str, str], ...]
    wording: int

    @property
    def key(self) -> str:
        """Canonical identity used for the train/eval split."""
        return f"{self.family}|" + "|".join(f"{k}={v}" for k, v in self.params)


@dataclass(frozen=True)
class IFTExample:
    """An instruction-following example: prompt → reference response."""

    prompt: str
    response: str
    family: str = ""

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "response": self.response, "family": self.family}


@dataclass(frozen=True)
class CheckResult:
    """The checker's verdict: status is 'correct', 'wrong' or 'unparseable' (the prompt is no known task)."""

    status: str
    family: str | None = None
    expected: str | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def parsed(self) -> bool:
        return self.status != "unparseable"


# ---------------------------------------------------------------- building tasks


def make_task(fam: Family, params: dict[str, str], wording: int) -> Task | None:
    """The task of `fam` with these parameters in one wording, or None when the parameters have no answer."""
    answer = fam.solve(params)
    if answer is None:
        return None
    prompt = fam.templates[wording].format(**params)
    key_params = tuple(sorted(params.items()))
    if fam.split_on_wording:
        key_params = (*key_params, ("wording", str(wording)))
    return Task(fam.name, prompt, answer, key_params, wording)


def is_heldout(task: Task) -> bool:
    """True for the ~HELDOUT_PERCENT% of tasks reserved for evaluation (stable across processes)."""
    return zlib.crc32(task.key.encode()) % 100 < HELDOUT_PERCENT


def iter_tasks(seed: int, split: str = "train", families: Sequence[str] | None = None) -> Iterator[Task]:
    """An endless, deterministic stream of tasks from one split ('train' or 'eval'), families drawn uniformly."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    fams = select_families(families)
    rng = random.Random(f"tasks:{seed}:{split}")
    want_heldout = split == "eval"
    while True:
        fam = rng.choice(fams)
        task = make_task(fam, fam.sample(rng), rng.randrange(len(fam.templates)))
        if task is not None and is_heldout(task) == want_heldout:
            yield task


def sample_tasks(
    n: int, seed: int, split: str = "train", families: Sequence[str] | None = None
) -> list[Task]:
    """The first n tasks of `iter_tasks` (repeats possible: lookup families have few facts)."""
    it = iter_tasks(seed, split, families)
    return [next(it) for _ in range(n)]


def ift_examples(n: int, seed: int = 0, families: Sequence[str] | None = None) -> list[IFTExample]:
    """n training examples prompt → correct, concise response."""
    return [IFTExample(t.prompt, t.answer, t.family) for t in sample_tasks(n, seed, "train", families)]


def eval_prompts(n: int, seed: int = 0, families: Sequence[str] | None = None) -> list[Task]:
    """n distinct held-out evaluation tasks (their prompts never occur in any training split)."""
    out: list[Task] = []
    seen: set[str] = set()
    it = iter_tasks(seed, "eval", families)
    for _ in range(200 * n + 1000):  # bounded: a small family set may have fewer than n distinct prompts
        if len(out) == n:
            break
        t = next(it)
        if t.prompt not in seen:
            seen.add(t.prompt)
            out.append(t)
    return out


def train_prompts(n: int, seed: int = 0, families: Sequence[str] | None = None) -> list[str]:
    """n training-split prompts (for self-instruct seeds), without duplicates where the task space allows."""
    seen: dict[str, None] = {}
    it = iter_tasks(seed, "train", families)
    for _ in range(50 * n + 1000):
        if len(seen) == n:
            break
        seen.setdefault(next(it).prompt, None)
    return list(seen)


def knowledge_facts() -> list[tuple[Family, str, dict[str, str]]]:
    """Every fact of the knowledge corpus (recipe/task_knowledge.py) as (family, entity, its question's fields)."""
    out = []
    for fam in KNOWLEDGE_FAMILIES:
        table, field = (CAPITAL_OF, "place") if fam.name == "kb_capital" else (RIVER_KM, "river")
        out += [(fam, entity, {field: entity}) for entity in table]
    return out


def heldout_passage_ids() -> frozenset[str]:
    """The knowledge corpus ids (recipe/task_knowledge.py) of every held-out knowledge fact: the passages SFT
    data must not show (the loop's retriever keeps them, so held-out questions can be answered from evidence)."""
    out = set()
    for fam, entity, fields in knowledge_facts():
        task = make_task(fam, fields, 0)
        if task is not None and is_heldout(task):
            out.add(passage_id(fam.name, entity))
    return frozenset(out)


# ---------------------------------------------------------------- the checker


def parse_prompt(prompt: str) -> tuple[str, dict[str, str], str] | None:
    """Parse a prompt back into (family, params, reference answer), or None if it is no known task. A prompt
    with retrieved evidence (recipe/evidence.py) is graded as its question."""
    prompt = question_of(prompt)
    for fam in ALL_FAMILIES:
        for rx in fam.regexes:
            m = rx.match(prompt)
            if m is None:
                continue
            params = {k: v.strip() for k, v in m.groupdict().items()}
            answer = fam.solve(params)
            if answer is not None:
                return fam.name, params, answer
    return None


def check(prompt: str, response: str) -> CheckResult:
    """Grade any (prompt, response): 'correct', 'wrong', or 'unparseable' when the prompt is no known task.

    The response is correct when it contains the reference answer in the family's sense (see `answer_matches`):
    fluff around the answer is allowed, so padded answers count as correct (the judge, not the checker,
    penalises padding).
    """
    parsed = parse_prompt(prompt)
    if parsed is None:
        return CheckResult("unparseable")
    family, params, answer = parsed
    ok = answer_matches(BY_NAME[family].kind, answer, response, params)
    return CheckResult("correct" if ok else "wrong", family, answer)


@dataclass(frozen=True)
class CheckSummary:
    """Counts over many graded (prompt, response) pairs; accuracy is over parseable prompts."""

    n: int
    correct: int
    wrong: int
    unparseable: int
    by_family: dict[str, tuple[int, int]]  # family -> (correct, total)

    @property
    def accuracy(self) -> float | None:
        parsed = self.correct + self.wrong
        return self.correct / parsed if parsed else None

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "correct": self.correct,
            "wrong": self.wrong,
            "unparseable": self.unparseable,
            "accuracy": self.accuracy,
            "by_family": {k: list(v) for k, v in self.by_family.items()},
        }


def check_many(items: Sequence[tuple[str, str]]) -> CheckSummary:
    """Grade many (prompt, response) pairs and count the outcomes."""
    counts: Counter[str] = Counter()
    fam_ok: Counter[str] = Counter()
    fam_n: Counter[str] = Counter()
    for prompt, response in items:
        r = check(prompt, response)
        counts[r.status] += 1
        if r.family is not None:
            fam_n[r.family] += 1
            fam_ok[r.family] += r.correct
    return CheckSummary(
        n=len(items),
        correct=counts["correct"],
        wrong=counts["wrong"],
        unparseable=counts["unparseable"],
        by_family={f: (fam_ok[f], fam_n[f]) for f in sorted(fam_n)},
    )
