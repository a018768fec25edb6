"""Self-instruct from passages (`retrieval.selfinstruct`): the model writes a question about a sampled corpus
passage, and that passage is the question's gold evidence (the candidates' evidence with `retrieval.candidates`).

Prompt (plain text, one passage):

    Write a question about this passage.
    Passage: Kelmira is the capital of Trelos.

The completion's first line is the question; it goes through self-instruct's length filter and near-duplicate
index (against earlier iterations' and the held-out prompts), as few-shot self-instruct's prompts do. M1 learns
the format from the task world's knowledge facts (`sft_examples`: a training fact's passage → one of its
questions); a corpus without such examples needs a model that can already do it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from srlm_fast.recipe import task_knowledge, tasks
from srlm_fast.recipe.evidence import clip
from srlm_fast.recipe.selfinstruct import (
    GenerateFn,
    NearDupIndex,
    SelfInstructConfig,
    SelfInstructStats,
    filter_prompts,
    parse_generated,
)
from srlm_fast.recipe.task_families import KNOWLEDGE_FAMILY_NAMES

HEADER = "Write a question about this passage."
PASSAGE = "Passage: "


def passage_prompt(passage: str) -> str:
    return f"{HEADER}\n{PASSAGE}{' '.join(passage.split())}"


def sft_examples(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (passage prompt, question) pairs from the task world's training knowledge facts (never a held-out one)."""
    text = {r["id"]: r["text"] for r in task_knowledge.corpus_rows()}
    out = []
    for task in tasks.sample_tasks(n, seed, "train", KNOWLEDGE_FAMILY_NAMES):
        entity = next(v for k, v in task.params if k in ("place", "river"))
        out.append((passage_prompt(text[task_knowledge.passage_id(task.family, entity)]), task.prompt))
    return out


def generate_from_passages(
    generate_fn: GenerateFn,
    passages: Sequence[str],
    n: int,
    config: SelfInstructConfig,
    max_words: int,
    seed: int = 0,
    pool: Iterable[str] = (),
) -> tuple[list[dict], SelfInstructStats]:
    """Up to n rows `{"prompt": question, "evidence": [its passage]}`: rounds of `batch_size` sampled passages,
    one question each, filtered and de-duplicated against `pool` and each other."""
    if not passages:
        raise ValueError("retrieval.selfinstruct: the index has no passages to write questions about")
    index = NearDupIndex(threshold=config.dedup_threshold, seed=seed)
    index.add_many(list(pool), force=True)
    rng = random.Random(f"passage-instruct:{seed}")
    stats = SelfInstructStats()
    rows: list[dict] = []
    while len(rows) < n and stats.rounds < config.max_rounds:
        batch = [clip(rng.choice(passages), max_words) for _ in range(config.batch_size)]
        outs = generate_fn([passage_prompt(p) for p in batch], n=1, temperature=config.temperature,
                           top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=seed + stats.rounds)  # fmt: skip
        stats.rounds += 1
        questions = [parse_generated(texts[0]) for texts in outs]
        source = {}
        for q, p in zip(questions, batch):
            source.setdefault(q, p)
        rows += [
            {"prompt": q, "evidence": [source[q]]} for q in filter_prompts(questions, index, config, stats)
        ]
    if len(rows) > n:
        stats.removed["surplus"] += len(rows) - n
        stats.kept = n
    return rows[:n], stats
