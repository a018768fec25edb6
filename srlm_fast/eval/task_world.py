"""Task-world metrics for one iteration: checker accuracy and how well the judge agrees with the checker.

The embedded task world (`recipe/tasks.py`) grades any (prompt, response) with ground truth, so a run can watch both
halves of the self-rewarding claim: does the policy answer better (checker accuracy), and does the judge's
score track correctness (agreement)? Definitions, over responses to parseable prompts with a valid judge score:

judge_checker_agreement   fraction where (score >= threshold) equals the checker's verdict (the loop passes
                          `recipe.judge.CORRECT_THRESHOLD`, 3: the rubric's "correct" criterion).
judge_pairwise_accuracy   over every (correct, wrong) pair of responses to the SAME prompt (the pairs DPO would
                          build): fraction where the judge scores the correct one strictly higher; judge ties are
                          counted in `n_judge_pairs_tied` and count as wrong (as in `eval_metrics`).
judge_auc                 pooled over all responses: P(score of a correct response > score of a wrong one), ties
                          half (the Mann-Whitney AUC); defined even when prompts rarely have both kinds.
mean_score_correct/wrong  the judge's mean score of correct and of wrong responses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from srlm_fast.eval.metrics import PairCounts, count_pairs, rank_data


class Verdict(Protocol):
    """What a checker says of one (prompt, response): `recipe.tasks.CheckResult` is one."""

    @property
    def parsed(self) -> bool: ...  # the prompt is a task the checker knows
    @property
    def correct(self) -> bool: ...
    @property
    def family(self) -> str | None: ...


Checker = Callable[[str, str], Verdict]


@dataclass(frozen=True)
class TaskWorldMetrics:
    """Checker accuracy and judge/checker agreement for one set of responses (see the module docstring)."""

    accuracy: float | None
    n: int
    n_correct: int
    n_wrong: int
    n_unparseable: int
    judge_checker_agreement: float | None
    judge_pairwise_accuracy: float | None
    judge_auc: float | None
    mean_score_correct: float | None
    mean_score_wrong: float | None
    n_judge_pairs: int
    n_judge_pairs_tied: int
    n_invalid_scores: int
    by_family: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def auc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties half, via average ranks (O(n log n)); None if a side is empty."""
    if not pos or not neg:
        return None
    ranks = rank_data([*pos, *neg])
    rank_sum = sum(ranks[: len(pos)])
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def task_world_metrics(
    prompts: Sequence[str],
    responses: Sequence[str],
    scores: Sequence[float | None] | None = None,
    *,
    check: Checker,
    threshold: float,
) -> TaskWorldMetrics:
    """Grade every (prompt, response) with `check` and, given judge scores, measure the judge against it: a
    score of at least `threshold` counts as the judge calling the response correct.

    This layer knows no task world: the checker is an argument, so the metrics serve any programmatic grader.

    Responses to the same prompt (several candidates) are grouped by prompt text for the pairwise accuracy.
    Without `scores`, the judge fields are None and only the checker numbers are filled.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if scores is not None and len(scores) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(scores)} scores")
    n_correct = n_wrong = n_unparseable = n_invalid = agree = n_judged = 0
    pos: list[float] = []
    neg: list[float] = []
    groups: dict[str, tuple[list[float], list[float | None]]] = defaultdict(lambda: ([], []))
    fam_ok: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        result = check(prompt, response)
        if not result.parsed:
            n_unparseable += 1
            continue
        ok = result.correct
        n_correct += ok
        n_wrong += not ok
        fam_ok[result.family or "?"][0] += ok
        fam_ok[result.family or "?"][1] += 1
        if scores is None:
            continue
        s = scores[i]
        # Human-rank convention of count_pairs: 0 = better, so correct = 0, wrong = 1.
        groups[prompt][0].append(0.0 if ok else 1.0)
        groups[prompt][1].append(s)
        if s is None:
            n_invalid += 1
            continue
        n_judged += 1
        agree += (s >= threshold) == ok
        (pos if ok else neg).append(float(s))
    pairs = PairCounts()
    for ranks, group_scores in groups.values():
        pairs = pairs + count_pairs(ranks, group_scores)
    have_scores = scores is not None
    return TaskWorldMetrics(
        accuracy=n_correct / (n_correct + n_wrong) if n_correct + n_wrong else None,
        n=len(prompts),
        n_correct=n_correct,
        n_wrong=n_wrong,
        n_unparseable=n_unparseable,
        judge_checker_agreement=agree / n_judged if have_scores and n_judged else None,
        judge_pairwise_accuracy=pairs.correct / pairs.valid if pairs.valid else None,
        judge_auc=auc(pos, neg),
        mean_score_correct=_mean(pos),
        mean_score_wrong=_mean(neg),
        n_judge_pairs=pairs.valid,
        n_judge_pairs_tied=pairs.tied,
        n_invalid_scores=n_invalid,
        by_family={f: ok / n for f, (ok, n) in sorted(fam_ok.items())},
    )


def per_prompt_outcomes(
    prompts: Sequence[str],
    responses: Sequence[str],
    scores: Sequence[float | None],
    *,
    check: Checker,
    threshold: float,
) -> dict[str, str]:
    """One character per (prompt, response), in order, for paired bootstraps across models evaluated on the same
    prompts: `correct` "1"/"0" (the checker; "-" for a prompt it cannot parse), `agree` "1"/"0" when the judge's
    verdict (score >= threshold) equals the checker's, "-" without a score or a parseable prompt."""
    if not len(prompts) == len(responses) == len(scores):
        raise ValueError(f"{len(prompts)} prompts, {len(responses)} responses, {len(scores)} scores")
    correct, agree = [], []
    for prompt, response, s in zip(prompts, responses, scores):
        result = check(prompt, response)
        if not result.parsed:
            correct.append("-")
            agree.append("-")
            continue
        correct.append("1" if result.correct else "0")
        agree.append("-" if s is None else "1" if (s >= threshold) == result.correct else "0")
    return {"correct": "".join(correct), "agree": "".join(agree)}
