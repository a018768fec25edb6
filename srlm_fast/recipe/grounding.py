"""Retrieval in the loop (`[retrieval]`): the run's index, built once, and the evidence the stages retrieve.

    build_index      retrieval/index/: the configured corpus files, plus the task world's knowledge corpus
                     (written to retrieval/task_corpus.jsonl) with `retrieval.task_corpus`, indexed once per run.
                     A resumed run reuses it: the stage's provenance ties it to the corpus files, and loading
                     checks the stored corpus against its sha256 (index.json)
    load_grounding   the run's retriever (its own index or `retrieval.index`) with k and the word limit, or None
                     when every use is off
    judge_spec       the JudgeSpec the judge runs under: the grounded rubric with `retrieval.judge`

Queries: a candidate's evidence is retrieved for its prompt; the judge's for prompt + response, so a response
that names an entity the prompt does not can pull in the passage that refutes it. BM25 ranks the asked entity's
passage first for that query, even when the response names another entity's answer, so a judge shown the
retriever's order can check the first line only, and that check is right; `retrieval.shuffle_judge` orders the
judge's passages at random, in its SFT examples and in the loop (measured worse, README "Shuffling the judge's
evidence"). The prompt format is recipe/evidence.py's.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from srlm_fast.recipe import task_knowledge
from srlm_fast.recipe.config import JudgeSpec, LoopConfig
from srlm_fast.recipe.evidence import clip, with_evidence
from srlm_fast.recipe.judge import GROUNDED_VARIANT
from srlm_fast.recipe.rundir import RunDir, log
from srlm_fast.retrieval.base import Retriever
from srlm_fast.retrieval.corpus import read_corpus
from srlm_fast.retrieval.dense import load_embedder
from srlm_fast.retrieval.index import load_index, new_retriever


def retrieval_dir(run: RunDir) -> Path:
    return run.root / "retrieval"


def index_dir(cfg: LoopConfig, run: RunDir) -> Path:
    """The index the run searches: `retrieval.index`, else the one it builds in retrieval/index/."""
    return Path(cfg.retrieval.index) if cfg.retrieval.index else retrieval_dir(run) / "index"


def build_index(cfg: LoopConfig, run: RunDir) -> None:
    """The corpus files (and the task world's knowledge corpus) → retrieval/index/, atomically."""
    r = cfg.retrieval
    paths = list(r.corpus)
    if r.task_corpus:
        paths.append(str(task_knowledge.write_corpus(retrieval_dir(run) / "task_corpus.jsonl")))
    passages = read_corpus(paths)
    embedder = load_embedder(r.embedder) if r.kind != "bm25" else None
    retriever = new_retriever(r.kind, embedder=embedder)
    retriever.index(passages)
    retriever.save(index_dir(cfg, run), sources=paths)
    log(f"    {r.kind} index of {len(passages)} passages (corpus sha256 {retriever.corpus_sha256[:12]}…)")


@dataclass(frozen=True)
class Grounding:
    """A retriever as the loop uses it: the top `k` passages of each query, each cut to `max_words` words,
    passages whose id is in `exclude` skipped (the seed data leaves out held-out facts' passages)."""

    retriever: Retriever
    k: int
    max_words: int
    exclude: frozenset[str] = frozenset()

    def passages(self, queries: Sequence[str]) -> list[list[str]]:
        if not queries:
            return []
        hits = self.retriever.search(list(queries), self.k + len(self.exclude))
        texts, offset = self.retriever.passages, self.retriever.offset
        kept = [[h for h in hs if h.id not in self.exclude][: self.k] for hs in hits]
        return [[clip(texts[h.index - offset].text, self.max_words) for h in hs] for hs in kept]

    def prompts(self, questions: Sequence[str], shuffle: random.Random | None = None) -> list[str]:
        """Each question with its evidence, in the evidence prompt format; with `shuffle`, each question's passages
        in an order drawn from it instead of the retriever's."""
        evidence = _in_order(self.passages(questions), shuffle)
        return [with_evidence(q, ev) for q, ev in zip(questions, evidence)]

    def judge_evidence(
        self, items: Sequence[tuple[str, str]], shuffle: random.Random | None = None
    ) -> list[list[str]]:
        """The judge's evidence for each (instruction, response): retrieved for both together; with `shuffle`,
        each item's passages in an order drawn from it."""
        return _in_order(self.passages([f"{ins} {resp}" for ins, resp in items]), shuffle)

    def without(self, ids: Iterable[str]) -> Grounding:
        return dataclasses.replace(self, exclude=self.exclude | frozenset(ids))


def _in_order(evidence: list[list[str]], shuffle: random.Random | None) -> list[list[str]]:
    """The retriever's order, or (with `shuffle`) each item's passages in a random order."""
    return evidence if shuffle is None else [shuffle.sample(ev, len(ev)) for ev in evidence]


def judge_order(cfg: LoopConfig, seed: int) -> random.Random | None:
    """The draws that order the judge's evidence (`retrieval.shuffle_judge`), or None for the retriever's order.
    Its own stream: the candidates' order (`shuffle_candidates`) stays what it was."""
    return random.Random(f"judge-evidence-order:{seed}") if cfg.retrieval.shuffle_judge else None


def load_grounding(cfg: LoopConfig, run: RunDir) -> Grounding | None:
    """The run's retriever, or None when retrieval is off (nothing is read then)."""
    r = cfg.retrieval
    if not r.enabled:
        return None
    return Grounding(load_index(index_dir(cfg, run)), r.k, r.max_words)


def judge_spec(cfg: LoopConfig) -> JudgeSpec:
    """The judge settings of the run: with `retrieval.judge` a shipped rubric becomes its grounded variant."""
    if cfg.retrieval.judge and cfg.judge.template in GROUNDED_VARIANT:
        return dataclasses.replace(cfg.judge, template=GROUNDED_VARIANT[cfg.judge.template])
    return cfg.judge
