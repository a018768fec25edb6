"""Question-answering metrics: SQuAD exact match and token F1, and retrieval recall@k.

Answers are compared after the SQuAD v1.1 normalisation (lower case, punctuation and the articles a/an/the removed,
whitespace collapsed), each prediction against every gold answer, keeping the best (as the official script does).
Token F1 is over the bag of normalised tokens. Pure functions over strings: the retrieval and generation that
produce them live in `recipe/qa.py`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from srlm_fast.eval.winrate import Interval, bootstrap_mean, resampled_means

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def _f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)  # both empty: a match; one empty: nothing in common
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best token F1 of the prediction against any gold answer."""
    return max((_f1(prediction, g) for g in golds), default=0.0)


def answer_in_text(text: str, golds: Sequence[str]) -> bool:
    """A normalised gold answer occurs in the normalised text, on token boundaries (DPR's answer recall)."""
    t = f" {normalize_answer(text)} "
    return any(n and f" {n} " in t for n in map(normalize_answer, golds))


def recall_at_k(ranked_hits: Sequence[Sequence[bool]], ks: Sequence[int] = (1, 5, 20)) -> dict[str, float]:
    """Per query, whether each ranked hit is relevant (best first); the fraction of queries with a relevant hit
    in their first k, for each k."""
    n = len(ranked_hits)
    return {f"recall@{k}": (sum(any(r[:k]) for r in ranked_hits) / n if n else 0.0) for k in ks}


@dataclass(frozen=True)
class QAScores:
    """EM and F1 with bootstrap intervals over questions."""

    n: int
    exact_match: Interval
    f1: Interval

    def to_dict(self) -> dict:
        return {"n": self.n, "exact_match": self.exact_match.to_dict(), "f1": self.f1.to_dict()}


def score_answers(
    predictions: Sequence[str], golds: Sequence[Sequence[str]], *, n_boot: int = 2000, seed: int = 0
) -> tuple[QAScores, list[float], list[float]]:
    """(summary with 95% bootstrap CIs, per-question EM, per-question F1)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em = [exact_match(p, g) for p, g in zip(predictions, golds)]
    f1 = [token_f1(p, g) for p, g in zip(predictions, golds)]
    summary = QAScores(
        len(em), bootstrap_mean(em, n_boot=n_boot, seed=seed), bootstrap_mean(f1, n_boot=n_boot, seed=seed)
    )
    return summary, em, f1


def paired_gain(
    treated: Sequence[float],
    base: Sequence[float],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """How one condition's per-question scores compare with another's on the same questions: the mean difference
    and the ratio of the means, each with a percentile-bootstrap CI over the same resamples of the questions (both
    conditions together, so the pairing is kept).

    The ratio is None where the base mean is 0. A resample whose base mean is 0 has an infinite ratio; the interval
    ends are then order statistics (never interpolated with infinity), and an infinite upper end is None:
    unbounded. `resamples_base_zero` says how many there were."""
    t, b = np.asarray(treated, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if t.shape != b.shape:
        raise ValueError(f"paired scores: {t.size} treated against {b.size} base questions")
    none = Interval(None, None, None).to_dict()
    if t.size == 0:
        return {"difference": none, "ratio": none, "resamples_base_zero": 0}
    t_means, b_means = resampled_means(np.stack([t, b]), n_boot=n_boot, seed=seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(t_means - b_means, [alpha, 1 - alpha])
    difference = Interval(float(t.mean() - b.mean()), float(low), float(high)).to_dict()
    zero = int((b_means == 0).sum())
    if b.mean() == 0:
        return {"difference": difference, "ratio": none, "resamples_base_zero": zero}
    ratios = np.full(n_boot, np.inf)
    np.divide(t_means, b_means, out=ratios, where=b_means > 0)
    low = float(np.quantile(ratios, alpha, method="lower"))
    high = float(np.quantile(ratios, 1 - alpha, method="higher"))
    ratio = Interval(
        float(t.mean() / b.mean()), low if np.isfinite(low) else None, high if np.isfinite(high) else None
    )
    return {"difference": difference, "ratio": ratio.to_dict(), "resamples_base_zero": zero}
