"""Head-to-head win rates: model A vs model B (or vs reference outputs), judged in both orders.

Position bias is the largest systematic error of pairwise LLM judges, so every prompt is judged twice, once as
(A, B) and once as (B, A). A prompt's outcome (MT-Bench's "conservative" rule, Zheng et al., 2023):
    win   both orders prefer A          loss  both orders prefer B
    tie   anything else: both say tie, one says tie, or the verdict flips with the order (counted in `n_flips`)
    invalid   either order gave no readable verdict (left out of the rates, counted)
Rates are over the valid prompts. `win_rate` counts a tie as half a win (AlpacaEval's convention), so 0.5 means
"as good as B". Confidence intervals: percentile bootstrap over prompts (seeded numpy Generator, so deterministic).

Length-controlled win rate (an APPROXIMATION of AlpacaEval 2.0 LC, Dubois et al., 2024): AlpacaEval fits
    logit P(A preferred) = θ + φ·tanh(Δlen / sd(Δlen)) + ψ·γ_instruction
and reports the win rate with the length term zeroed. γ (instruction difficulty) is estimated there from the
outputs of many leaderboard models, which we do not have, so we fit only θ and φ, by maximum likelihood with
fractional targets (win 1, tie 0.5, loss 0) and a small L2 penalty (keeps θ finite when A always wins), with
Newton's method; LC win rate = sigmoid(θ). Numbers are comparable between our own models, not to the leaderboard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: verdict_fn(list of (instruction, response_1, response_2)) -> "1" | "2" | "tie" | None (unreadable), one each.
VerdictFn = Callable[[Sequence[tuple[str, str, str]]], Sequence[str | None]]
#: score_fn(list of (instruction, response)) -> pointwise judge score or None (e.g. judge.judge's .score).
ScoreFn = Callable[[Sequence[tuple[str, str]]], Sequence[float | None]]

VERDICTS = ("1", "2", "tie")
OUTCOMES = ("win", "tie", "loss", "invalid")
_POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def normalize_verdict(v: object) -> str | None:
    """'1', '2', 'tie' (also 1, 2, 'A', 'B', 'draw', case-insensitive); anything else is None (invalid)."""
    if v is None:
        return None
    s = str(v).strip().lower()
    return {"1": "1", "a": "1", "2": "2", "b": "2", "tie": "tie", "draw": "tie", "0": "tie"}.get(s)


def combine_orders(verdict_ab: object, verdict_ba: object) -> str:
    """The outcome for A of one prompt judged as (A, B) then as (B, A): win/tie/loss/invalid (see module doc)."""
    ab, ba = normalize_verdict(verdict_ab), normalize_verdict(verdict_ba)
    if ab is None or ba is None:
        return "invalid"
    # Map each order's verdict to A's view: +1 A better, -1 B better, 0 tie.
    a1 = {"1": 1, "2": -1, "tie": 0}[ab]
    a2 = {"1": -1, "2": 1, "tie": 0}[ba]
    if a1 == a2 == 1:
        return "win"
    if a1 == a2 == -1:
        return "loss"
    return "tie"


def is_flip(verdict_ab: object, verdict_ba: object) -> bool:
    """The two orders named opposite winners (the same position won both times): pure position bias."""
    ab, ba = normalize_verdict(verdict_ab), normalize_verdict(verdict_ba)
    return ab is not None and ab == ba and ab != "tie"


def score_verdict(score_1: float | None, score_2: float | None, margin: float = 0.0) -> str | None:
    """A pairwise verdict from two pointwise judge scores: the higher wins unless within `margin` (a tie)."""
    if score_1 is None or score_2 is None:
        return None
    if abs(score_1 - score_2) <= margin + 1e-9:
        return "tie"
    return "1" if score_1 > score_2 else "2"


def pointwise_verdict_fn(score_fn: ScoreFn, margin: float = 0.0) -> VerdictFn:
    """Turn a pointwise judge into a verdict function: score both responses, compare (see `score_verdict`)."""

    def verdict_fn(items: Sequence[tuple[str, str, str]]) -> list[str | None]:
        flat = [(ins, r) for ins, r1, r2 in items for r in (r1, r2)]
        scores = list(score_fn(flat))
        if len(scores) != len(flat):
            raise ValueError(f"score_fn returned {len(scores)} scores for {len(flat)} responses")
        return [score_verdict(scores[2 * i], scores[2 * i + 1], margin) for i in range(len(items))]

    return verdict_fn


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap confidence interval."""

    value: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def resampled_means(columns: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(k, n) values, k measurements of the same n items → (k, n_boot) means over bootstrap resamples of the items,
    one resample shared by all k rows (paired); deterministic in `seed`."""
    n = columns.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty((columns.shape[0], n_boot))
    # Chunks bound the index matrix to ~4M entries whatever the sample size.
    chunk = max(1, 4_000_000 // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[:, start:stop] = columns[:, idx].mean(axis=-1)
    return means


def bootstrap_mean(
    values: Sequence[float], *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Mean with a percentile-bootstrap CI, resampling the values with replacement; deterministic in `seed`."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Interval(None, None, None)
    (means,) = resampled_means(x[None], n_boot=n_boot, seed=seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(x.mean()), float(low), float(high))


@dataclass(frozen=True)
class HeadToHead:
    """Win/tie/loss of A against B over prompts, each with a bootstrap CI; rates over the valid prompts."""

    win: Interval
    tie: Interval
    loss: Interval
    win_rate: Interval  # (wins + ties/2) / valid
    n: int
    n_valid: int
    n_invalid: int
    n_flips: int
    outcomes: tuple[str, ...]

    def to_dict(self, include_outcomes: bool = False) -> dict:
        d = {
            "win": self.win.to_dict(),
            "tie": self.tie.to_dict(),
            "loss": self.loss.to_dict(),
            "win_rate": self.win_rate.to_dict(),
            "n": self.n,
            "n_valid": self.n_valid,
            "n_invalid": self.n_invalid,
            "n_flips": self.n_flips,
        }
        if include_outcomes:
            d["outcomes"] = list(self.outcomes)
        return d


def summarize_outcomes(
    outcomes: Sequence[str],
    *,
    n_flips: int = 0,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> HeadToHead:
    """Rates and bootstrap CIs from per-prompt outcomes ('win' | 'tie' | 'loss' | 'invalid')."""
    bad = sorted({o for o in outcomes if o not in OUTCOMES})
    if bad:
        raise ValueError(f"unknown outcome(s) {bad}; expected one of {OUTCOMES}")
    valid = [o for o in outcomes if o != "invalid"]

    def ci(values: list[float]) -> Interval:
        # The same seed for every rate: they resample the same prompts, so the CIs are consistent.
        return bootstrap_mean(values, n_boot=n_boot, confidence=confidence, seed=seed)

    return HeadToHead(
        win=ci([float(o == "win") for o in valid]),
        tie=ci([float(o == "tie") for o in valid]),
        loss=ci([float(o == "loss") for o in valid]),
        win_rate=ci([_POINTS[o] for o in valid]),
        n=len(outcomes),
        n_valid=len(valid),
        n_invalid=len(outcomes) - len(valid),
        n_flips=n_flips,
        outcomes=tuple(outcomes),
    )


def head_to_head(
    instructions: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    verdict_fn: VerdictFn,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> HeadToHead:
    """Judge A vs B on the same prompts in both orders with one batched `verdict_fn` call, then summarize."""
    ab, ba = judge_both_orders(instructions, answers_a, answers_b, verdict_fn)
    return head_to_head_from_verdicts(ab, ba, n_boot=n_boot, confidence=confidence, seed=seed)


def judge_both_orders(
    instructions: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str], verdict_fn: VerdictFn
) -> tuple[list[str | None], list[str | None]]:
    """One batched `verdict_fn` call over (A, B) and (B, A) for every prompt; returns (verdicts_ab, verdicts_ba)."""
    n = len(instructions)
    if not len(answers_a) == len(answers_b) == n:
        raise ValueError(f"{n} instructions, {len(answers_a)} answers from A, {len(answers_b)} from B")
    items = [(p, a, b) for p, a, b in zip(instructions, answers_a, answers_b)]
    items += [(p, b, a) for p, a, b in zip(instructions, answers_a, answers_b)]
    verdicts = [normalize_verdict(v) for v in verdict_fn(items)]
    if len(verdicts) != 2 * n:
        raise ValueError(f"verdict_fn returned {len(verdicts)} verdicts for {2 * n} comparisons")
    return verdicts[:n], verdicts[n:]


def head_to_head_from_verdicts(
    verdicts_ab: Sequence[object],
    verdicts_ba: Sequence[object],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> HeadToHead:
    """Summarize already-collected verdicts: `verdicts_ab[i]` judged (A, B), `verdicts_ba[i]` judged (B, A)."""
    if len(verdicts_ab) != len(verdicts_ba):
        raise ValueError(f"{len(verdicts_ab)} verdicts in order A,B but {len(verdicts_ba)} in order B,A")
    outcomes = [combine_orders(x, y) for x, y in zip(verdicts_ab, verdicts_ba)]
    flips = sum(is_flip(x, y) for x, y in zip(verdicts_ab, verdicts_ba))
    return summarize_outcomes(outcomes, n_flips=flips, n_boot=n_boot, confidence=confidence, seed=seed)


# ---------------------------------------------------------------- length-controlled win rate


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def fit_length_logit(
    preferences: Sequence[float], len_diff: Sequence[float], *, l2: float = 1e-3, iters: int = 50
) -> tuple[float, float, float]:
    """Fit logit p = θ + φ·tanh(Δlen / sd(Δlen)) to fractional preferences; returns (θ, φ, sd).

    Penalised maximum likelihood, `l2`·(θ² + φ²)·n/2 added to the negative log-likelihood, solved by Newton's
    method (the problem is convex, two parameters). sd = 0 (all lengths equal) drops the length feature.
    """
    y = np.asarray(preferences, dtype=np.float64)
    d = np.asarray(len_diff, dtype=np.float64)
    if y.shape != d.shape:
        raise ValueError(f"{y.size} preferences but {d.size} length differences")
    if y.size == 0:
        raise ValueError("no preferences to fit")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("preferences must be in [0, 1]")
    sd = float(d.std())
    f = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    x = np.stack([np.ones_like(f), f], axis=1)  # (n, 2)
    w = np.zeros(2)
    reg = l2 * y.size
    for _ in range(iters):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + reg * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[0]), float(w[1]), sd


@dataclass(frozen=True)
class LengthStats:
    """Characters of the model's and the reference's outputs."""

    mean_len: float
    median_len: float
    mean_ref_len: float
    median_ref_len: float
    mean_len_diff: float
    frac_longer: float

    def to_dict(self) -> dict:
        return asdict(self)


def length_stats(outputs: Sequence[str], references: Sequence[str]) -> LengthStats:
    """Length statistics of outputs next to their references (characters)."""
    a = np.array([len(o) for o in outputs], dtype=np.float64)
    b = np.array([len(r) for r in references], dtype=np.float64)
    if a.size == 0 or a.size != b.size:
        raise ValueError(f"length_stats: {a.size} outputs and {b.size} references")
    return LengthStats(
        mean_len=float(a.mean()),
        median_len=float(np.median(a)),
        mean_ref_len=float(b.mean()),
        median_ref_len=float(np.median(b)),
        mean_len_diff=float((a - b).mean()),
        frac_longer=float((a > b).mean()),
    )


@dataclass(frozen=True)
class ReferenceWinRate:
    """Win rate against reference outputs (AlpacaEval style), its length-controlled variant and lengths."""

    head_to_head: HeadToHead
    win_rate: float | None
    lc_win_rate: float | None
    length_coef: float | None
    lengths: LengthStats

    def to_dict(self) -> dict:
        return {
            "win_rate": self.win_rate,
            "win_rate_ci": [self.head_to_head.win_rate.low, self.head_to_head.win_rate.high],
            "lc_win_rate": self.lc_win_rate,
            "length_coef": self.length_coef,
            "lengths": self.lengths.to_dict(),
            "head_to_head": self.head_to_head.to_dict(),
        }


def reference_win_rate_from_outcomes(
    outcomes: Sequence[str],
    outputs: Sequence[str],
    references: Sequence[str],
    *,
    n_flips: int = 0,
    n_boot: int = 2000,
    seed: int = 0,
) -> ReferenceWinRate:
    """Win rate and LC win rate of `outputs` (A) against `references` (B) from per-prompt outcomes."""
    if not len(outcomes) == len(outputs) == len(references):
        raise ValueError(f"{len(outcomes)} outcomes, {len(outputs)} outputs, {len(references)} references")
    h2h = summarize_outcomes(outcomes, n_flips=n_flips, n_boot=n_boot, seed=seed)
    keep = [i for i, o in enumerate(outcomes) if o != "invalid"]
    lc = coef = None
    if keep:
        prefs = [_POINTS[outcomes[i]] for i in keep]
        diffs = [len(outputs[i]) - len(references[i]) for i in keep]
        theta, coef, _ = fit_length_logit(prefs, diffs)
        lc = float(_sigmoid(np.array(theta)))
    return ReferenceWinRate(
        head_to_head=h2h,
        win_rate=h2h.win_rate.value,
        lc_win_rate=lc,
        length_coef=coef,
        lengths=length_stats(outputs, references),
    )


def reference_win_rate(
    instructions: Sequence[str],
    outputs: Sequence[str],
    references: Sequence[str],
    verdict_fn: VerdictFn,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> ReferenceWinRate:
    """Judge `outputs` against `references` in both orders, then win rate, LC win rate and length stats."""
    ab, ba = judge_both_orders(instructions, outputs, references, verdict_fn)
    outcomes = [combine_orders(x, y) for x, y in zip(ab, ba)]
    flips = sum(is_flip(x, y) for x, y in zip(ab, ba))
    return reference_win_rate_from_outcomes(
        outcomes, outputs, references, n_flips=flips, n_boot=n_boot, seed=seed
    )
