"""Evaluation of a model with the loop's judge: what `eval/m<k>.json` holds, and the judge-vs-humans path that
`srlm eval judge` shares with the loop.

    judge_items          a policy judges (instruction, response) items under a `JudgeSpec`
    judge_score_fn       the same as the `score_fn` the metric functions of srlm_fast.eval take
    judge_vs_humans      the judge against human rankings (OpenAssistant trees) and human pairs (HH-RLHF):
                         the loop's evaluation and `srlm eval judge` both call it, so their numbers are the same
    evaluate_task_world  checker accuracy of greedy answers to held-out tasks, and the judge against the checker
    versus_previous      M_k's answers to a prompt file, judged against M_{k-1}'s by M_k
    evaluate_model       every evaluation the config lists for M_k, as one JSON-able dict

A policy is anything with `generate(prompts, n, temperature, top_p, max_new_tokens, seed)` and
`judge(items, template, config, seed)` (recipe/policy.py); a `progress(desc)` scope is optional.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srlm_fast.eval.judge_agreement import (
    head_to_head,
    pair_items,
    pointwise_verdict_fn,
    ranked_items,
    read_eval_prompts,
    read_hh_pairs,
    read_oasst_trees,
)
from srlm_fast.eval.judge_intervals import pair_report, ranking_report
from srlm_fast.eval.task_world import per_prompt_outcomes, task_world_metrics
from srlm_fast.eval.winrate import ScoreFn
from srlm_fast.io import read_jsonl, write_jsonl_atomic
from srlm_fast.recipe import task_eft, tasks
from srlm_fast.recipe.config import JudgeSpec, LoopConfig
from srlm_fast.recipe.grounding import Grounding, judge_spec, load_grounding
from srlm_fast.recipe.judge import CORRECT_THRESHOLD, JudgeConfig, JudgeResult, JudgeTemplate
from srlm_fast.recipe.rundir import RunDir, progress


def judge_items(policy, spec: JudgeSpec, items: list[tuple[str, str]], seed: int) -> list[JudgeResult]:
    """`policy` as the judge of (instruction, response) items: template, mode and sampling from `spec`."""
    config = JudgeConfig(
        mode=spec.mode,
        k=spec.k,
        temperature=spec.temperature,
        top_p=spec.top_p,
        max_new_tokens=spec.max_new_tokens,
    )
    return policy.judge(items, JudgeTemplate.from_spec(spec.template), config, seed=seed)


def judge_score_fn(policy, spec: JudgeSpec, seed: int = 0) -> ScoreFn:
    """`judge_items` as a `score_fn(items) -> scores` (None for an invalid judgment)."""
    return lambda items: [r.score for r in judge_items(policy, spec, list(items), seed)]


def judge_vs_humans(
    policy,
    spec: JudgeSpec,
    *,
    rankings: str | Path | None = None,
    pairs: str | Path | None = None,
    limit: int = 0,
    seed: int = 0,
) -> dict[str, dict]:
    """The judge's agreement with human rankings (Table 4 of Yuan et al., 2024: pairwise accuracy, 5-best, ...)
    and with human chosen/rejected pairs. Returns `{"rankings": ..., "pairs": ...}`, a key per file given;
    `limit`: at most this many prompts / pairs per file (0: all). Beside each, `<key>_ci95` (95% bootstrap
    intervals over prompts / pairs, eval/judge_intervals.py), the length baseline on the same data
    (`rankings_length`, `pairs_length`) and the judge's per-reply scores (`<key>_scores`)."""
    score_fn = judge_score_fn(policy, spec, seed)
    out: dict[str, Any] = {}
    if rankings:
        # The expected score is continuous: a perfect 5 is anything at or above 4.5.
        perfect = 4.5 if spec.mode == "expected" else 5.0
        ranked = read_oasst_trees(rankings)[: limit or None]
        items = ranked_items(ranked)
        with progress(policy, "judging human rankings"):
            scores = list(score_fn(items))
        # "Prefer the longer reply" on the same prompts: the bar a judge must clear to be reading the replies.
        _add_report(out, "rankings", ranking_report(ranked, scores, perfect=perfect, seed=seed), scores)
        length = ranking_report(ranked, length_scores(items), perfect=float("inf"), seed=seed)
        _add_report(out, "rankings_length", length)
    if pairs:
        labelled = read_hh_pairs(pairs).pairs[: limit or None]
        items = pair_items(labelled)
        with progress(policy, "judging human pairs"):
            scores = list(score_fn(items))
        if len(scores) != len(items):
            raise ValueError(f"score_fn returned {len(scores)} scores for {len(items)} responses")
        _add_report(out, "pairs", pair_report(scores[0::2], scores[1::2], seed=seed), scores)
        lengths = length_scores(items)
        _add_report(out, "pairs_length", pair_report(lengths[0::2], lengths[1::2], seed=seed))
    return out


def _add_report(out: dict, key: str, report: dict, scores: list | None = None) -> None:
    """`key`: the metrics; `key_ci95`: their 95% bootstrap intervals; `key_scores`: the per-reply scores (in
    `ranked_items` / `pair_items` order), from which any metric can be recomputed."""
    out[key], out[f"{key}_ci95"] = report["metrics"], report["ci95"]
    if scores is not None:
        out[f"{key}_scores"] = scores


def length_scores(items: Sequence[tuple[str, str]]) -> list[float]:
    """The length baseline as a judge: every (instruction, response) scores its response's length in characters."""
    return [float(len(response)) for _, response in items]


def greedy_answers(
    cfg: LoopConfig, policy, prompts: list[str], max_new_tokens: int | None = None
) -> list[str]:
    """The policy's greedy answer to each prompt, at most `max_new_tokens` tokens (`eval.max_new_tokens` for
    None)."""
    outs = policy.generate(
        prompts,
        n=1,
        temperature=0.0,
        top_p=1.0,
        max_new_tokens=max_new_tokens or cfg.eval.max_new_tokens,
        seed=cfg.seed,
    )
    return [o[0] for o in outs]


def evaluate_task_world(cfg: LoopConfig, policy, grounding: Grounding | None = None) -> dict:
    """Checker accuracy of the model's greedy answers to held-out tasks, and its judge against the checker.
    With `[retrieval]` (`grounding`) the model answers with evidence (retrieval.candidates) and judges with
    evidence (retrieval.judge), as in the loop."""
    e, r = cfg.eval, cfg.retrieval
    held_out = tasks.eval_prompts(e.n_task_prompts, cfg.seed, cfg.seed_data.families or None)
    prompts = [t.prompt for t in held_out]
    shown = grounding.prompts(prompts) if grounding is not None and r.candidates else prompts
    answers = greedy_answers(cfg, policy, shown)
    spec = judge_spec(cfg)

    def judged(items: list[tuple[str, str]], seed: int) -> list[JudgeResult]:
        if grounding is not None and r.judge:
            items = [(*x, ev) for x, ev in zip(items, grounding.judge_evidence(items))]
        return judge_items(policy, spec, items, seed=seed)

    own = judged(list(zip(prompts, answers)), cfg.seed)
    # Candidates of known quality for held-out tasks: 3 per prompt, so the judge's ranking can be scored too.
    rng = random.Random(f"eval-judge:{cfg.seed}")
    known = []
    for task in held_out[: max(1, e.n_judge_items // 3)]:
        for quality in rng.sample(task_eft.QUALITIES, 3):
            known.append((task.prompt, task_eft.candidate(task, quality, rng)))
    known_scores = judged(known, cfg.seed + 1)
    graded = {"check": tasks.check, "threshold": CORRECT_THRESHOLD}
    own_scores = [r.score for r in own]
    own_m = task_world_metrics(prompts, answers, own_scores, **graded).to_dict()
    known_m = task_world_metrics(
        [p for p, _ in known], [c for _, c in known], [r.score for r in known_scores], **graded
    ).to_dict()
    return {
        "task_accuracy": own_m["accuracy"],
        "judge_agreement_own": own_m["judge_checker_agreement"],
        # Across prompts, the chance that a right answer scores above a wrong one: unlike agreement, it does not
        # move with the model's accuracy (a judge that calls everything wrong agrees more as the model worsens).
        "judge_auc_own": own_m["judge_auc"],
        "judge_agreement_known": known_m["judge_checker_agreement"],
        "judge_pairwise_known": known_m["judge_pairwise_accuracy"],
        "invalid_judgments": own_m["n_invalid_scores"] + known_m["n_invalid_scores"],
        "mean_response_chars": sum(map(len, answers)) / max(1, len(answers)),
        "by_family": own_m["by_family"],
        "examples": [{"prompt": p, "answer": a} for p, a in list(zip(prompts, answers))[:5]],
        # One character per held-out prompt (the same prompts for every model of a run): paired bootstraps.
        "per_prompt": per_prompt_outcomes(prompts, answers, own_scores, **graded),
    }


def versus_previous(cfg: LoopConfig, run: RunDir, k: int, policy) -> dict:
    """M_k's answers to the prompt file (saved as eval/m<k>.answers.jsonl), and M_k against M_{k-1} judged by
    M_k (the newer model) in both orders."""
    e = cfg.eval
    prompts = [p.instruction for p in read_eval_prompts(e.prompts)[: e.limit or None]]
    answers = greedy_answers(cfg, policy, prompts)
    if run.is_main:
        write_jsonl_atomic(
            run.eval / f"m{k}.answers.jsonl", [{"prompt": p, "answer": a} for p, a in zip(prompts, answers)]
        )
    out: dict[str, Any] = {"mean_answer_chars": sum(map(len, answers)) / max(1, len(answers))}
    previous = run.eval / f"m{k - 1}.answers.jsonl"
    if k > 1 and run.exists(previous):
        before = run.agree([r["answer"] for r in read_jsonl(previous)[0]] if run.is_main else None)
        verdict_fn = pointwise_verdict_fn(judge_score_fn(policy, cfg.judge, cfg.seed))
        h2h = head_to_head(prompts, before, answers, verdict_fn, seed=cfg.seed).to_dict()
        out["vs_previous"] = h2h
        # head_to_head reports A's (the previous model's) rates; the newer model's win rate is the complement.
        out["win_rate_vs_previous"] = 1.0 - h2h["win_rate"]["value"] if h2h["n_valid"] else None
    return out


def evaluate_model(cfg: LoopConfig, run: RunDir, k: int, policy) -> dict:
    """Every evaluation the config lists for M_k, as one JSON-able dict (the content of eval/m<k>.json)."""
    e = cfg.eval
    result: dict[str, Any] = {"model": f"M{k}"}
    if e.task_world:
        result.update(evaluate_task_world(cfg, policy, load_grounding(cfg, run)))
    humans = judge_vs_humans(
        policy, cfg.judge, rankings=e.rankings, pairs=e.pairs, limit=e.limit, seed=cfg.seed
    )
    for kind in ("rankings", "pairs"):
        if kind in humans:
            for suffix in ("", "_ci95", "_scores"):
                result[f"human_{kind}{suffix}"] = humans[f"{kind}{suffix}"]
            for suffix in ("", "_ci95"):
                result[f"human_{kind}_length_baseline{suffix}"] = humans[f"{kind}_length{suffix}"]
    # The headline numbers, and the same as {value, low, high}: report.md shows those with their interval.
    for key, kind, metric in (("judge_pairwise_humans", "rankings", "pairwise_accuracy"),
                              ("judge_accuracy_human_pairs", "pairs", "accuracy")):  # fmt: skip
        if kind in humans:
            value, (low, high) = humans[kind][metric], humans[f"{kind}_ci95"][metric]
            result[key] = value
            if value is not None:
                result[f"{key}_ci95"] = {"value": value, "low": low, "high": high}
    if e.prompts:
        result.update(versus_previous(cfg, run, k, policy))
    return result
