"""Evaluation entry points: the functions the loop and `srlm eval` call, on top of the metric modules.

    metrics     judge agreement with human rankings (Table 4 of Yuan et al., 2024) and with pair labels
    winrate     head-to-head win/tie/loss in both orders, bootstrap CIs, win rate vs references + LC variant
    task_world  task-world checker accuracy and judge/checker agreement
    readers     OpenAssistant trees, HH-RLHF, AlpacaEval, MT-Bench, Self-Instruct, scored judgments
    report      report.md + report.json + SVG plots over iterations

Models enter only through callables, so this layer runs without a model:
    score_fn(list of (instruction, response)) -> list of judge scores (None = invalid), e.g.
        srlm_fast.recipe.evaluation.judge_score_fn(policy, judge_spec), which the loop and `srlm eval` use
    verdict_fn(list of (instruction, response_1, response_2)) -> list of "1" | "2" | "tie" | None
        (or `pointwise_verdict_fn(score_fn)` to compare two pointwise scores)
"""

from __future__ import annotations

from collections.abc import Sequence

from srlm_fast.eval.metrics import (
    AgreementMetrics,
    PairAgreement,
    RankedJudgment,
    judge_agreement,
    kendall_tau_b,
    pair_agreement,
    spearman,
)
from srlm_fast.eval.readers import (
    EvalPrompt,
    PairSet,
    PreferencePair,
    RankedPrompt,
    alpaca_eval_records,
    read_alpaca_eval,
    read_eval_prompts,
    read_hh_pairs,
    read_mt_bench,
    read_oasst_trees,
    read_scored_judgments,
    read_selfinstruct,
)
from srlm_fast.eval.report import write_report
from srlm_fast.eval.task_world import TaskWorldMetrics, task_world_metrics
from srlm_fast.eval.winrate import (
    HeadToHead,
    ReferenceWinRate,
    ScoreFn,
    VerdictFn,
    head_to_head,
    head_to_head_from_verdicts,
    pointwise_verdict_fn,
    reference_win_rate,
    reference_win_rate_from_outcomes,
)

__all__ = [
    "AgreementMetrics",
    "EvalPrompt",
    "HeadToHead",
    "PairAgreement",
    "PairSet",
    "PreferencePair",
    "RankedJudgment",
    "RankedPrompt",
    "ReferenceWinRate",
    "ScoreFn",
    "TaskWorldMetrics",
    "VerdictFn",
    "agreement_from_scores",
    "alpaca_eval_records",
    "evaluate_judge_on_pairs",
    "evaluate_judge_on_rankings",
    "head_to_head",
    "head_to_head_from_verdicts",
    "judge_agreement",
    "kendall_tau_b",
    "pair_agreement",
    "pair_items",
    "pointwise_verdict_fn",
    "ranked_items",
    "ranked_judgments",
    "read_alpaca_eval",
    "read_eval_prompts",
    "read_hh_pairs",
    "read_mt_bench",
    "read_oasst_trees",
    "read_scored_judgments",
    "read_selfinstruct",
    "reference_win_rate",
    "reference_win_rate_from_outcomes",
    "spearman",
    "task_world_metrics",
    "write_report",
]


def ranked_items(prompts: Sequence[RankedPrompt]) -> list[tuple[str, str]]:
    """Every (instruction, response) of the ranked prompts, flattened in order: what the judge must score."""
    return [(p.instruction, r) for p in prompts for r in p.responses]


def ranked_judgments(prompts: Sequence[RankedPrompt], scores: Sequence[float | None]) -> list[RankedJudgment]:
    """Per prompt, its human ranks and the judge's scores, from scores in the flattened `ranked_items` order."""
    want = sum(len(p.responses) for p in prompts)
    if len(scores) != want:
        raise ValueError(f"{len(scores)} scores for {want} responses")
    items, k = [], 0
    for p in prompts:
        items.append(RankedJudgment(p.ranks, list(scores[k : k + len(p.responses)])))
        k += len(p.responses)
    return items


def agreement_from_scores(
    prompts: Sequence[RankedPrompt], scores: Sequence[float | None], *, perfect: float = 5.0
) -> AgreementMetrics:
    """Judge agreement from scores given in the flattened order of `ranked_items(prompts)`."""
    return judge_agreement(ranked_judgments(prompts, scores), perfect=perfect)


def evaluate_judge_on_rankings(
    prompts: Sequence[RankedPrompt], score_fn: ScoreFn, *, perfect: float = 5.0
) -> AgreementMetrics:
    """Score every response of human-ranked prompts with `score_fn` (one batched call) and measure agreement."""
    items = ranked_items(prompts)
    scores = list(score_fn(items))
    return agreement_from_scores(prompts, scores, perfect=perfect)


def pair_items(pairs: Sequence[PreferencePair]) -> list[tuple[str, str]]:
    """(instruction, chosen), (instruction, rejected) for every pair, interleaved."""
    return [(p.instruction, r) for p in pairs for r in (p.chosen, p.rejected)]


def evaluate_judge_on_pairs(pairs: Sequence[PreferencePair], score_fn: ScoreFn) -> PairAgreement:
    """Score chosen and rejected replies with `score_fn` (one batched call) and measure agreement."""
    scores = list(score_fn(pair_items(pairs)))
    if len(scores) != 2 * len(pairs):
        raise ValueError(f"score_fn returned {len(scores)} scores for {2 * len(pairs)} responses")
    return pair_agreement(scores[0::2], scores[1::2])
