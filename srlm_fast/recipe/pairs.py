"""Preference pairs from judged candidates: highest vs lowest score, for DPO.

Rules (Yuan et al., 2024; length control from Meta-Rewarding, Wu et al., 2024):
- Only candidates with a valid score count; a prompt with fewer than 2 valid scores is dropped.
- If the best and worst valid scores are equal (within `EPS`), the prompt is a tie and is dropped.
- Optional `min_margin`: drop the prompt if chosen_score - rejected_score < min_margin.
- Identical chosen and rejected texts (the same response sampled twice, judged differently) teach nothing:
  dropped as `same_text`.
- Optional `min_votes` (self-consistency, for short answers): drop the prompt unless at least `min_votes` of its
  candidates give the chosen answer (texts compared after `vote_key`), as `few_votes`. The judge still decides
  which answers are chosen and rejected; the votes decide whether to trust it. In the task world the self-judge's
  pairs whose chosen answer only one of 8 candidates gave are 93% pairs of two wrong answers, and those with
  at least 3 votes prefer the right answer 288 times and the wrong one 25 times (seed 0, iteration 1:
  bench/diagnose_models.py). Self-Consistency Preference Optimization (Prasad et al., 2024) makes the votes the
  whole reward; here they filter the judge's. Measured over 3 seeds, one iteration: the self arm's loss goes from
  −4.9 to −1.0 points, not to a gain (bench/results/self_rewarding_3seeds-cpu.json).
- Optional `reject_verdicts`: a candidate that is a judge's verdict (it has a `Score: <0-5>` line the judge's
  parser reads) instead of an answer scores the rubric's lowest, MIN_SCORE, whatever the judge said: it can be
  rejected, never chosen. A format rule, like a length penalty: it reads the response's form, not the checker.
  Why: a policy that is also its own judge learns to answer a question with the judge's output, and the judge
  then scores those verdicts like answers (README, "The verdict rule").

Tiers. With S_max and S_min the best and worst valid scores and Δ = S_max - S_min > 0, and the tier fraction
ρ (`tier`, 0 <= ρ < 0.5):
    top tier    = candidates with score >= S_max - ρ·Δ
    bottom tier = candidates with score <= S_min + ρ·Δ
ρ < 0.5 keeps the tiers disjoint, and chosen - rejected >= (1 - 2ρ)·Δ > 0. With ρ = 0 the tiers are exactly the
candidates tied at the maximum and at the minimum score.

Selection. Without length control, chosen is the first candidate of the top tier (in candidate order) and
rejected the first of the bottom tier. With length control, chosen is the SHORTEST of the top tier and rejected
the LONGEST of the bottom tier (ties in length: first in candidate order), which counters the judge's bias
towards long answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from srlm_fast.recipe.judge import MIN_SCORE, parse_score

EPS = 1e-9

DROP_REASONS = ("fewer_than_2_valid", "tie", "below_margin", "same_text", "few_votes", "chosen_below")


def is_verdict(response: str) -> bool:
    """Whether a response is a judge's verdict (a `Score:` line the judge's parser reads) rather than an answer."""
    return parse_score(response) is not None


def vote_key(response: str) -> str:
    """What two answers must share to count as the same vote: case, runs of whitespace and a final period aside."""
    return " ".join(response.lower().strip().rstrip(".").split())


@dataclass(frozen=True)
class PromptCandidates:
    """A prompt, its candidate responses and their (averaged) judge scores; None = no valid judgment."""

    prompt: str
    responses: Sequence[str]
    scores: Sequence[float | None]

    def __post_init__(self) -> None:
        if len(self.responses) != len(self.scores):
            raise ValueError(
                f"prompt {self.prompt[:40]!r}: {len(self.responses)} responses but {len(self.scores)} scores"
            )


@dataclass(frozen=True)
class PairConfig:
    """min_margin: the least chosen-minus-rejected score kept; tier: ρ above; length_control: Meta-Rewarding;
    min_votes: the fewest candidates that must give the chosen answer (0 or 1: no check); min_chosen: the least
    score of the chosen response (0: no check); reject_verdicts: verdicts given as answers score MIN_SCORE."""

    min_margin: float = 0.0
    tier: float = 0.0
    length_control: bool = False
    min_votes: int = 0
    min_chosen: float = 0.0
    reject_verdicts: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.tier < 0.5:
            raise ValueError(f"pairs tier must be in [0, 0.5), got {self.tier}")
        if self.min_margin < 0:
            raise ValueError(f"pairs min_margin must be >= 0, got {self.min_margin}")
        if self.min_votes < 0:
            raise ValueError(f"pairs min_votes must be >= 0, got {self.min_votes}")
        if self.min_chosen < 0:
            raise ValueError(f"pairs min_chosen must be >= 0, got {self.min_chosen}")


@dataclass(frozen=True)
class Pair:
    """One DPO example with the evidence that produced it (written to pairs.jsonl)."""

    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    chosen_len: int
    rejected_len: int
    chosen_index: int
    rejected_index: int
    scores: tuple[float | None, ...]

    @property
    def margin(self) -> float:
        return self.chosen_score - self.rejected_score

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "chosen_score": self.chosen_score,
            "rejected_score": self.rejected_score,
            "margin": self.margin,
            "chosen_len": self.chosen_len,
            "rejected_len": self.rejected_len,
            "chosen_index": self.chosen_index,
            "rejected_index": self.rejected_index,
            "scores": list(self.scores),
        }


@dataclass
class PairStats:
    """How many prompts went in, how many pairs came out, and why the rest were dropped."""

    prompts: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)
    verdicts: int = 0  # candidates that were verdicts, scored MIN_SCORE (reject_verdicts)

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "pairs": self.pairs,
            "dropped": {r: self.dropped[r] for r in DROP_REASONS},
            "verdicts": self.verdicts,
        }


def select_pair(
    item: PromptCandidates, config: PairConfig, length_fn: Callable[[str], int] = len
) -> Pair | str:
    """The pair for one prompt, or the reason it is dropped (one of DROP_REASONS)."""
    if config.reject_verdicts:
        item = _verdicts_rejected(item)
    valid = [(i, float(s)) for i, s in enumerate(item.scores) if s is not None]
    if len(valid) < 2:
        return "fewer_than_2_valid"
    hi = max(s for _, s in valid)
    lo = min(s for _, s in valid)
    spread = hi - lo
    if spread <= EPS:
        return "tie"
    top = [i for i, s in valid if s >= hi - config.tier * spread - EPS]
    bottom = [i for i, s in valid if s <= lo + config.tier * spread + EPS]
    lengths = {i: length_fn(item.responses[i]) for i in top + bottom}
    if config.length_control:
        # min/max return the first of equals, so ties in length go to the earlier candidate.
        chosen = min(top, key=lambda i: lengths[i])
        rejected = max(bottom, key=lambda i: lengths[i])
    else:
        chosen, rejected = top[0], bottom[0]
    scores = dict(valid)
    if scores[chosen] - scores[rejected] < config.min_margin - EPS:
        return "below_margin"
    if item.responses[chosen] == item.responses[rejected]:
        return "same_text"
    if scores[chosen] < config.min_chosen - EPS:
        # Every candidate of this prompt is bad by the judge's own verdict: the "best" of them would be trained.
        return "chosen_below"
    if config.min_votes > 1:
        key = vote_key(item.responses[chosen])
        if sum(vote_key(r) == key for r in item.responses) < config.min_votes:
            return "few_votes"
    return Pair(
        prompt=item.prompt,
        chosen=item.responses[chosen],
        rejected=item.responses[rejected],
        chosen_score=scores[chosen],
        rejected_score=scores[rejected],
        chosen_len=lengths[chosen],
        rejected_len=lengths[rejected],
        chosen_index=chosen,
        rejected_index=rejected,
        scores=tuple(None if s is None else float(s) for s in item.scores),
    )


def _verdicts_rejected(item: PromptCandidates) -> PromptCandidates:
    scores = [float(MIN_SCORE) if is_verdict(r) else s for r, s in zip(item.responses, item.scores)]
    return PromptCandidates(item.prompt, item.responses, scores)


def make_pairs(
    items: Iterable[PromptCandidates],
    config: PairConfig | None = None,
    length_fn: Callable[[str], int] = len,
) -> tuple[list[Pair], PairStats]:
    """Pairs for all prompts, and the counts of drops by reason.

    `length_fn` measures response length for length control and the pair record (characters by default; pass a
    token counter to control length in tokens).
    """
    config = config or PairConfig()
    stats = PairStats()
    pairs: list[Pair] = []
    for item in items:
        stats.prompts += 1
        if config.reject_verdicts:
            stats.verdicts += sum(map(is_verdict, item.responses))
        result = select_pair(item, config, length_fn)
        if isinstance(result, str):
            stats.dropped[result] += 1
        else:
            pairs.append(result)
    stats.pairs = len(pairs)
    return pairs, stats
