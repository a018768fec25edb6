"""Where the reward of the candidates comes from: the model's own judge (the recipe), or a control arm.

    self     the model judges its own candidates (Yuan et al., 2024): `judge.judge` on the policy
    random   the model's scores, shuffled among the candidates of each prompt: the same score distribution, ties
             and number of pairs as `self`, but no information about which candidate earned which score. Gains
             under this arm are what DPO on self-generated pairs does without a judge (the noise floor).
    oracle   the task world's checker as the reward (5 for a correct answer, 1 for a wrong one, no score for a
             prompt the checker cannot parse): the ceiling of what a perfect correctness judge can teach.

Only the oracle arm reads the checker; the self and random arms never do. `meta_judge_pairs` builds the judge's
own preference pairs for the Meta-Rewarding arm (Wu et al., 2024).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from srlm_fast.recipe import judge as J
from srlm_fast.recipe import pairs as P
from srlm_fast.recipe import tasks

REWARDS = ("self", "random", "oracle")

ORACLE_CORRECT = 5.0
ORACLE_WRONG = 1.0


def oracle_results(items: Sequence[tuple[str, str]]) -> list[J.JudgeResult]:
    """The checker's verdict on each (prompt, response) as a judge result (None for a prompt that is no task)."""
    out = []
    for prompt, response in items:
        verdict = tasks.check(prompt, response)
        if not verdict.parsed:
            out.append(J.JudgeResult(None, 0, 1, (), ()))
            continue
        score = ORACLE_CORRECT if verdict.correct else ORACLE_WRONG
        out.append(J.JudgeResult(score, 1, 0, (score,), ()))
    return out


def shuffle_within_groups(
    results: Sequence[J.JudgeResult], group_sizes: Sequence[int], seed: int
) -> list[J.JudgeResult]:
    """`results` (consecutive groups of `group_sizes`, one group per prompt) with each group's results permuted:
    every score stays in its prompt but lands on a random candidate."""
    if sum(group_sizes) != len(results):
        raise ValueError(f"group sizes add up to {sum(group_sizes)}, but there are {len(results)} results")
    rng = random.Random(f"random-judge:{seed}")
    out: list[J.JudgeResult] = []
    lo = 0
    for size in group_sizes:
        group = list(results[lo : lo + size])
        rng.shuffle(group)
        out += group
        lo += size
    return out


def candidate_results(
    reward: str,
    items: Sequence[tuple[str, str]],
    group_sizes: Sequence[int],
    self_judge: Callable[[Sequence[tuple[str, str]]], list[J.JudgeResult]],
    seed: int,
) -> list[J.JudgeResult]:
    """The results of judging `items` (grouped per prompt as `group_sizes`) under the arm `reward`."""
    if reward == "self":
        return self_judge(items)
    if reward == "random":
        return shuffle_within_groups(self_judge(items), group_sizes, seed)
    if reward == "oracle":
        return oracle_results(items)
    raise ValueError(f"judge.reward must be one of {', '.join(REWARDS)}, not {reward!r}")


def judgments_to_meta_judge(result: J.JudgeResult, min_prob: float = 0.05, most: int = 3) -> list[int]:
    """The scores the judge itself considered for a candidate: up to `most` of its likeliest scores with at
    least `min_prob` probability (expected mode). These are the judge's alternative judgments; the meta-judge
    decides which of them was right."""
    ranked = sorted(range(len(result.probs)), key=lambda s: -result.probs[s])
    return sorted(J.MIN_SCORE + s for s in ranked[:most] if result.probs[s] >= min_prob)


def meta_judge_pairs(
    items: Sequence[tuple[str, str]],
    judged_scores: Sequence[Sequence[int]],
    meta_scores: Sequence[Sequence[float | None]],
    template: J.JudgeTemplate,
    score_first: bool = True,
    config: P.PairConfig | None = None,
    verdicts: bool = False,
    evidence: Sequence[Sequence[str] | None] | None = None,
) -> tuple[list[P.Pair], P.PairStats]:
    """The judge's preference pairs: for each judged (instruction, response), its alternative judgments
    (`judged_scores`, as formulaic judgments) ranked by the meta-judge's `meta_scores`; best vs worst, ties
    dropped, exactly as the actor's pairs. The prompt of a pair is the judge prompt (with the item's `evidence`
    for a grounded judge), so DPO trains the judge on what it read."""
    evidence = evidence if evidence is not None else [None] * len(items)
    cands = [
        P.PromptCandidates(
            template.render(ins, resp, ev),
            [J.judgment_for_score(s, score_first, verdicts) for s in scores],
            list(ms),
        )
        for (ins, resp), ev, scores, ms in zip(items, evidence, judged_scores, meta_scores, strict=True)
    ]
    return P.make_pairs(cands, config or P.PairConfig())


def meta_judge(
    items: Sequence[tuple[str, str]],
    results: Sequence[J.JudgeResult],
    judge_fn: Callable[[Sequence[tuple[str, str]]], list[J.JudgeResult]],
    template: J.JudgeTemplate,
    most: int,
    min_prob: float = 0.05,
    seed: int = 0,
    score_first: bool = True,
    verdicts: bool = False,
    evidence: Sequence[Sequence[str] | None] | None = None,
) -> tuple[list[P.Pair], dict]:
    """One Meta-Rewarding round over judged candidates: the judge's alternative judgments of up to `most`
    candidates (the scores it gave at least `min_prob`; candidates with fewer than two are skipped) go to the
    meta-judge (`judge_fn`, the model under the meta rubric, over (meta_instruction, judgment) items), and the best
    vs worst of each candidate's judgments becomes a pair for the judge. Returns the pairs and their counts.
    `evidence`: per item, the passages the (grounded) judge read; the meta-judge reads them too (its items are
    then (meta_instruction, judgment, evidence)), and so do the judge pairs' prompts."""
    if len(items) != len(results):
        raise ValueError(f"{len(items)} items but {len(results)} judge results")
    if evidence is not None and len(evidence) != len(items):
        raise ValueError(f"{len(items)} items but evidence for {len(evidence)}")
    alternatives = [judgments_to_meta_judge(r, min_prob) for r in results]
    eligible = [i for i, alts in enumerate(alternatives) if len(alts) >= 2]
    chosen = sorted(random.Random(f"meta-judge:{seed}").sample(eligible, min(most, len(eligible))))
    meta_items = []
    for i in chosen:
        # A grounded meta-judge's item ends with its evidence.
        read = () if evidence is None else (evidence[i],)
        meta_items += [
            (J.meta_instruction(*items[i]), J.judgment_for_score(s, score_first, verdicts), *read)
            for s in alternatives[i]
        ]
    meta_results = judge_fn(meta_items) if meta_items else []
    meta_scores, lo = [], 0
    for i in chosen:
        n = len(alternatives[i])
        meta_scores.append([r.score for r in meta_results[lo : lo + n]])
        lo += n
    pairs, pstats = meta_judge_pairs(
        [items[i] for i in chosen],
        [alternatives[i] for i in chosen],
        meta_scores,
        template,
        score_first,
        verdicts=verdicts,
        evidence=None if evidence is None else [evidence[i] for i in chosen],
    )
    stats = {
        "candidates": len(items),
        "with_alternatives": len(eligible),
        "meta_judged": len(chosen),
        "judgments": len(meta_items),
        **pstats.to_dict(),
    }
    return pairs, stats
