"""Judge-agreement metrics: how well judge scores reproduce human (or checker) preferences.

The metrics of Yuan et al. (2024), Table 4, over prompts that each have several responses with a human rank
(0 = best) and a judge score (None = invalid judgment):

pairwise accuracy   over every pair of responses to the same prompt with DIFFERENT human ranks and two valid
                    judge scores: the fraction the judge orders like the humans. A judge tie is not agreement:
                    the headline `pairwise_accuracy` counts it as wrong; `pairwise_accuracy_ties_half` counts it as
                    half right (what a coin flip would get); `pairwise_accuracy_decided` leaves ties out. Ties are
                    also counted (`n_pairs_tied`). Pairs with an invalid score are left out of every denominator
                    and counted (`n_pairs_invalid`); pairs the humans tie are never compared.
5-best %            the paper: "how often the responses that the model scores a perfect 5 out of 5 are rated as
                    the highest ranked by humans": of the responses with score >= `perfect` (5.0 by default; an
                    averaged or expected score counts only at 5.0, pass e.g. 4.5 to round), the fraction that is
                    a human-best response. None when the judge never gives a 5.
top-1 %             the judge's unique top-scored response is a human-best response (a top tie is a miss and is
                    counted in `n_top_tied`). Not in the paper; the more common "best-of-n" reading.
exact match %       the judge's scores order all responses of a prompt exactly like the human ranks: for every
                    pair, sign(score_i - score_j) == sign(rank_j - rank_i) (a judge tie matches only a human tie).
Spearman ρ          per prompt, Pearson correlation of average ranks (ties get the mean rank) between the judge
                    score and the negated human rank; then averaged over prompts.
Kendall τ-b         per prompt, (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)), the tie-corrected τ;
                    then averaged over prompts.

Prompt-level metrics (top-1, exact match, ρ, τ) use only prompts whose responses all have valid scores and
whose human ranks are not all equal (`n_prompts_scored`); prompts with an invalid judgment are counted in
`n_prompts_with_invalid`. A correlation is undefined when the judge gives every response of a prompt the same
score; such a prompt contributes 0 (no information, and a judge must not gain by tying everything) and is
counted in `n_prompts_constant`. With 2 responses per prompt ρ and τ are both ±1 or 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

#: Two judge scores closer than this are a tie (averaged scores are floats).
EPS = 1e-9


@dataclass(frozen=True)
class RankedJudgment:
    """One prompt: the human ranks of its responses (0 = best; equal ranks allowed) and the judge's scores."""

    ranks: Sequence[float]
    scores: Sequence[float | None]

    def __post_init__(self) -> None:
        if len(self.ranks) != len(self.scores):
            raise ValueError(f"{len(self.ranks)} human ranks but {len(self.scores)} judge scores")


def _sign(x: float) -> int:
    return 0 if abs(x) <= EPS else (1 if x > 0 else -1)


def rank_data(values: Sequence[float]) -> list[float]:
    """Average ranks, 1-based: tied values all get the mean of the ranks they span (as scipy's `rankdata`)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and abs(values[order[j + 1]] - values[order[i]]) <= EPS:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ with average ranks for ties; None when either side is constant (or n < 2)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: lengths differ ({len(x)} vs {len(y)})")
    if len(x) < 2:
        return None
    rx, ry = rank_data(x), rank_data(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx <= EPS or syy <= EPS:
        return None
    return sxy / math.sqrt(sxx * syy)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b: (C - D) / sqrt((n0 - n1)(n0 - n2)); None when either side is constant (or n < 2).

    n0 = n(n-1)/2 pairs; n1, n2 = pairs tied in x, in y. O(n²), fine for the handful of responses per prompt.
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b: lengths differ ({len(x)} vs {len(y)})")
    n = len(x)
    if n < 2:
        return None
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            sx, sy = _sign(x[i] - x[j]), _sign(y[i] - y[j])
            tied_x += sx == 0
            tied_y += sy == 0
            if sx * sy > 0:
                concordant += 1
            elif sx * sy < 0:
                discordant += 1
    n0 = n * (n - 1) // 2
    denom = (n0 - tied_x) * (n0 - tied_y)
    if denom == 0:
        return None
    return (concordant - discordant) / math.sqrt(denom)


@dataclass(frozen=True)
class PairCounts:
    """Pairs the humans order: how the judge ordered them."""

    correct: int = 0
    wrong: int = 0
    tied: int = 0
    invalid: int = 0

    @property
    def valid(self) -> int:
        return self.correct + self.wrong + self.tied

    def __add__(self, other: PairCounts) -> PairCounts:
        return PairCounts(
            self.correct + other.correct,
            self.wrong + other.wrong,
            self.tied + other.tied,
            self.invalid + other.invalid,
        )


def count_pairs(ranks: Sequence[float], scores: Sequence[float | None]) -> PairCounts:
    """Classify every pair with different human ranks (lower rank = better) by the judge's order."""
    correct = wrong = tied = invalid = 0
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            human = _sign(ranks[j] - ranks[i])  # +1: i is better
            if human == 0:
                continue
            si, sj = scores[i], scores[j]
            if si is None or sj is None:
                invalid += 1
                continue
            judge = _sign(si - sj)
            if judge == 0:
                tied += 1
            elif judge == human:
                correct += 1
            else:
                wrong += 1
    return PairCounts(correct, wrong, tied, invalid)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class AgreementMetrics:
    """Judge-vs-human agreement over ranked prompts (see the module docstring for every definition).

    Rates are fractions in [0, 1] (multiply by 100 for the paper's %), None when their denominator is 0.
    """

    pairwise_accuracy: float | None
    pairwise_accuracy_ties_half: float | None
    pairwise_accuracy_decided: float | None
    five_best: float | None
    top1: float | None
    exact_match: float | None
    spearman: float | None
    kendall_tau: float | None
    n_prompts: int
    n_prompts_scored: int
    n_prompts_with_invalid: int
    n_prompts_constant: int
    n_responses: int
    n_invalid: int
    n_pairs: int
    n_pairs_correct: int
    n_pairs_tied: int
    n_pairs_invalid: int
    n_perfect: int
    n_top_tied: int

    def to_dict(self) -> dict:
        return asdict(self)


def judge_agreement(items: Sequence[RankedJudgment], *, perfect: float = 5.0) -> AgreementMetrics:
    """The paper's reward-modelling metrics (Table 4) over prompts with human ranks and judge scores."""
    pairs = PairCounts()
    n_responses = n_invalid = n_perfect = n_perfect_best = 0
    n_scored = n_with_invalid = n_constant = n_exact = n_top1 = n_top_tied = 0
    rho_sum = tau_sum = 0.0
    for item in items:
        ranks = [float(r) for r in item.ranks]
        scores = list(item.scores)
        n_responses += len(scores)
        n_invalid += sum(s is None for s in scores)
        pairs = pairs + count_pairs(ranks, scores)
        best_rank = min(ranks) if ranks else 0.0
        for r, s in zip(ranks, scores):
            if s is not None and s >= perfect - EPS:
                n_perfect += 1
                n_perfect_best += abs(r - best_rank) <= EPS
        if any(s is None for s in scores):
            n_with_invalid += 1
            continue
        if len(scores) < 2 or max(ranks) - min(ranks) <= EPS:
            continue  # nothing for the humans to order
        valid = [float(s) for s in scores]  # type: ignore[arg-type]
        n_scored += 1
        neg_ranks = [-r for r in ranks]  # higher = better, like scores
        rho, tau = spearman(valid, neg_ranks), kendall_tau_b(valid, neg_ranks)
        if rho is None or tau is None:  # the judge tied everything
            n_constant += 1
        rho_sum += rho or 0.0
        tau_sum += tau or 0.0
        n_exact += all(
            _sign(valid[i] - valid[j]) == _sign(neg_ranks[i] - neg_ranks[j])
            for i in range(len(valid))
            for j in range(i + 1, len(valid))
        )
        top = max(valid)
        top_idx = [i for i, s in enumerate(valid) if abs(s - top) <= EPS]
        if len(top_idx) > 1:
            n_top_tied += 1
        else:
            n_top1 += abs(ranks[top_idx[0]] - best_rank) <= EPS
    return AgreementMetrics(
        pairwise_accuracy=_ratio(pairs.correct, pairs.valid),
        pairwise_accuracy_ties_half=_ratio(pairs.correct + 0.5 * pairs.tied, pairs.valid),
        pairwise_accuracy_decided=_ratio(pairs.correct, pairs.correct + pairs.wrong),
        five_best=_ratio(n_perfect_best, n_perfect),
        top1=_ratio(n_top1, n_scored),
        exact_match=_ratio(n_exact, n_scored),
        spearman=_ratio(rho_sum, n_scored),
        kendall_tau=_ratio(tau_sum, n_scored),
        n_prompts=len(items),
        n_prompts_scored=n_scored,
        n_prompts_with_invalid=n_with_invalid,
        n_prompts_constant=n_constant,
        n_responses=n_responses,
        n_invalid=n_invalid,
        n_pairs=pairs.valid,
        n_pairs_correct=pairs.correct,
        n_pairs_tied=pairs.tied,
        n_pairs_invalid=pairs.invalid,
        n_perfect=n_perfect,
        n_top_tied=n_top_tied,
    )


@dataclass(frozen=True)
class PairAgreement:
    """Judge vs chosen/rejected pairs (HH-RLHF): accuracy = chosen scored strictly higher, over valid pairs."""

    accuracy: float | None
    accuracy_ties_half: float | None
    accuracy_decided: float | None
    tie_rate: float | None
    n_pairs: int
    n_correct: int
    n_tied: int
    n_invalid: int

    def to_dict(self) -> dict:
        return asdict(self)


def pair_agreement(
    chosen_scores: Sequence[float | None], rejected_scores: Sequence[float | None]
) -> PairAgreement:
    """Agreement with human chosen/rejected labels; a pair with an invalid score is left out and counted."""
    if len(chosen_scores) != len(rejected_scores):
        raise ValueError(f"{len(chosen_scores)} chosen scores but {len(rejected_scores)} rejected scores")
    c = PairCounts()
    for sc, sr in zip(chosen_scores, rejected_scores):
        c = c + count_pairs([0.0, 1.0], [sc, sr])
    return PairAgreement(
        accuracy=_ratio(c.correct, c.valid),
        accuracy_ties_half=_ratio(c.correct + 0.5 * c.tied, c.valid),
        accuracy_decided=_ratio(c.correct, c.correct + c.wrong),
        tie_rate=_ratio(c.tied, c.valid),
        n_pairs=c.valid,
        n_correct=c.correct,
        n_tied=c.tied,
        n_invalid=c.invalid,
    )
