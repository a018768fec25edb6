"""EFT (evaluation fine-tuning) data from human-ranked responses, as in the Self-Rewarding paper.

Two ways to label a judge example. `build_eft` is the paper's: the model's own judgments, kept where they agree
with the humans. `label_eft` is for a model whose judgments agree with the humans too rarely to keep enough
(SmolLM2-135M judges OASST replies at chance): the human ranking itself becomes the score, and the judgment is
the score line alone.

The paper's way, in detail: the SFT model judges every human-ranked reply of a prompt with the rubric
(justification + `Score: <0-5>`). A prompt's judgments are kept only when the model's scores order its replies
as the humans did:

    kept  ⇔  every judgment is valid, no pair of replies with different human quality is scored in the
             opposite order, and at least one such pair is scored in the same order (ties are allowed
             inside a prompt, but an all-tied prompt carries no ranking evidence).

Kept judgments become training examples (judge prompt → judgment). Scores are then rebalanced: the model's
judgments concentrate on a few values (the paper saw score 4 over-represented), so every score value is capped
at the median count of the values that occur, dropping examples deterministically from the seed.
"""

from __future__ import annotations

import os
import random
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from srlm_fast.eval.judge_agreement import read_oasst_trees
from srlm_fast.recipe.judge import MAX_SCORE, MIN_SCORE, JudgeTemplate, judgment_for_score, parse_score
from srlm_fast.recipe.seed_data import RatedPrompt

#: generate_fn(prompts, n, temperature, top_p, max_new_tokens, seed) -> n completions per prompt.
GenerateFn = Callable[..., list[list[str]]]


@dataclass
class EFTStats:
    prompts: int = 0
    judged: int = 0
    kept_prompts: int = 0
    dropped: Counter = field(default_factory=Counter)  # invalid, discordant, no_evidence, too_few_replies
    rebalanced_away: int = 0
    scores: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts, "judged": self.judged, "kept_prompts": self.kept_prompts,
            "dropped": dict(self.dropped), "rebalanced_away": self.rebalanced_away,
            "scores": {str(k): v for k, v in sorted(self.scores.items())},
        }  # fmt: skip


def agrees_with_humans(qualities: Sequence[float], scores: Sequence[float]) -> str | None:
    """None when the scores order the replies as the human qualities do (see module doc), else why not."""
    concordant = 0
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            if qualities[i] == qualities[j]:
                continue
            human = qualities[i] > qualities[j]
            if scores[i] == scores[j]:
                continue
            if (scores[i] > scores[j]) != human:
                return "discordant"
            concordant += 1
    return None if concordant else "no_evidence"


def rebalance(rows: list[dict], seed: int) -> tuple[list[dict], int]:
    """Cap every score value at the median count over the values present; returns (rows, number dropped)."""
    counts = Counter(r["score"] for r in rows)
    if not counts:
        return rows, 0
    cap = int(statistics.median(counts.values()))
    rng = random.Random(f"eft-rebalance:{seed}")
    by_score: dict[float, list[dict]] = {}
    for r in rows:
        by_score.setdefault(r["score"], []).append(r)
    kept = []
    for group in by_score.values():
        kept += group if len(group) <= cap else rng.sample(group, cap)
    kept.sort(key=lambda r: (r["prompt_index"], r["reply_index"]))
    return kept, len(rows) - len(kept)


def build_eft(
    ranked: Sequence[RatedPrompt],
    generate_fn: GenerateFn,
    template: JudgeTemplate,
    *,
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    seed: int = 0,
) -> tuple[list[dict], EFTStats]:
    """Judge every reply, keep the prompts whose judgments agree with the humans, rebalance the scores."""
    stats = EFTStats()
    items, owners = [], []
    for pi, rp in enumerate(ranked):
        stats.prompts += 1
        if len(rp.replies) < 2:
            stats.dropped["too_few_replies"] += 1
            continue
        for ri, reply in enumerate(rp.replies):
            items.append(template.render(rp.prompt, reply.text))
            owners.append((pi, ri))
    outs = generate_fn(
        items, n=1, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed
    )
    stats.judged = len(items)
    per_prompt: dict[int, list[tuple[int, str, float | None]]] = {}
    for (pi, ri), prompt_text, texts in zip(owners, items, outs):
        per_prompt.setdefault(pi, []).append((ri, prompt_text, texts[0]))
    rows = []
    for pi, judged in per_prompt.items():
        scores = [parse_score(text) for _, _, text in judged]
        if any(s is None for s in scores):
            stats.dropped["invalid"] += 1
            continue
        why = agrees_with_humans([ranked[pi].replies[ri].quality for ri, _, _ in judged], scores)
        if why is not None:
            stats.dropped[why] += 1
            continue
        stats.kept_prompts += 1
        for (ri, prompt_text, text), s in zip(judged, scores):
            rows.append({"prompt": prompt_text, "response": text.strip(), "score": s,
                         "prompt_index": pi, "reply_index": ri})  # fmt: skip
    rows, stats.rebalanced_away = rebalance(rows, seed)
    stats.scores = Counter(r["score"] for r in rows)
    return rows, stats


def ladder_scores(qualities: Sequence[float]) -> list[int] | None:
    """Scores on the 1..5 ladder from a prompt's human qualities: the best level 5, the worst 1, others evenly
    between (rounded); None when all are tied (no ranking evidence). 0 is left out: it means "no response".
    """
    levels = sorted(set(qualities))
    if len(levels) < 2:
        return None
    low, span = MIN_SCORE + 1, MAX_SCORE - MIN_SCORE - 1
    return [low + round(span * levels.index(q) / (len(levels) - 1)) for q in qualities]


def normalise_prompt(text: str) -> str:
    """The form in which prompts are compared to hold evaluation prompts out: case and whitespace ignored."""
    return " ".join(text.lower().split())


def held_out_prompts(paths: Sequence[str | os.PathLike]) -> set[str]:
    """The prompts of OpenAssistant tree files (an evaluation set's), in `normalise_prompt` form."""
    return {
        normalise_prompt(tree.prompt) for path in paths for tree in read_oasst_trees(path, min_responses=1)
    }


def leave_out(ranked: Sequence[RatedPrompt], held_out: Sequence[str]) -> list[RatedPrompt]:
    """`ranked` without the prompts of `held_out` (an evaluation set's), compared by `normalise_prompt`."""
    skip = {normalise_prompt(p) for p in held_out}
    return [rp for rp in ranked if normalise_prompt(rp.prompt) not in skip]


def label_eft(
    ranked: Sequence[RatedPrompt], template: JudgeTemplate, *, max_response_chars: int = 0
) -> tuple[list[dict], EFTStats]:
    """Judge examples whose score is the humans' ranking (`ladder_scores`) and whose judgment is `Score: <n>`.

    `max_response_chars` cuts longer replies (0: never), so that a judge example fits a training sequence
    without losing its score line; a cut reply keeps its label. No rebalancing: every prompt gives one 5 and
    one 1, whatever the model would have said.
    """
    stats = EFTStats()
    rows = []
    for pi, rp in enumerate(ranked):
        stats.prompts += 1
        if len(rp.replies) < 2:
            stats.dropped["too_few_replies"] += 1
            continue
        scores = ladder_scores([r.quality for r in rp.replies])
        if scores is None:
            stats.dropped["no_evidence"] += 1
            continue
        stats.kept_prompts += 1
        for ri, (reply, score) in enumerate(zip(rp.replies, scores)):
            text = reply.text if not max_response_chars else reply.text[:max_response_chars]
            rows.append({"prompt": template.render(rp.prompt, text), "score": float(score),
                         "response": judgment_for_score(score, verdicts=False),
                         "prompt_index": pi, "reply_index": ri})  # fmt: skip
    stats.judged = len(rows)
    stats.scores = Counter(r["score"] for r in rows)
    return rows, stats
