"""The task world's checker on what the loop's stages make: reported in their stats, never fed back.

With the embedded default (`seed_data.source = "tasks"`) every self-instructed prompt that is a task has a ground
truth, so the candidates, the judge's pairs (Meta-Rewarding) and the preference pairs can be graded against it.
"""

from __future__ import annotations

from typing import Any

from srlm_fast.recipe import judge as J
from srlm_fast.recipe import pairs as P
from srlm_fast.recipe import tasks


def checked_candidates(rows: list[dict]) -> dict[str, Any]:
    """The task world's checker on the candidates (reported, never fed back): how many self-instructed prompts
    are tasks, and over those, pass@1 (mean fraction of correct candidates) and pass@N (at least one correct).
    Self-rewarding can only teach what pass@N − pass@1 leaves: answers the model gets right only sometimes."""
    per_prompt = []
    for r in rows:
        verdicts = [tasks.check(r["prompt"], x) for x in r["responses"]]
        if verdicts and verdicts[0].parsed:
            per_prompt.append([v.correct for v in verdicts])
    n = max((len(r["responses"]) for r in rows), default=0)
    rate = lambda xs: round(sum(xs) / len(xs), 4) if xs else None
    return {
        "tasks": len(per_prompt),
        "n": n,
        "pass_at_1": rate([sum(c) / len(c) for c in per_prompt]),
        "pass_at_n": rate([any(c) for c in per_prompt]),
        "mixed": sum(0 < sum(c) < len(c) for c in per_prompt),
    }


def checked_judge_pairs(
    pairs: list[P.Pair],
    items: list[tuple[str, str]],
    template: J.JudgeTemplate,
    evidence: list[list[str] | None] | None = None,
) -> dict[str, int]:
    """The checker on the judge's pairs (reported): `right` when the chosen judgment is right about the
    candidate's correctness and the rejected one wrong, `wrong` for the reverse, `same` when both agree.
    `evidence`: per item, what a grounded judge read (the pairs' prompts hold it)."""
    evidence = evidence if evidence is not None else [None] * len(items)
    by_prompt = {template.render(*x, ev): x for x, ev in zip(items, evidence, strict=True)}
    counts = dict.fromkeys(("right", "wrong", "same"), 0)
    for pair in pairs:
        item = by_prompt.get(pair.prompt)
        verdict = tasks.check(*item) if item else None
        if verdict is None or not verdict.parsed:
            continue
        says = [(J.parse_score(x) or 0) >= J.CORRECT_THRESHOLD for x in (pair.chosen, pair.rejected)]
        if says[0] == says[1]:
            counts["same"] += 1
        else:
            counts["right" if says[0] == verdict.correct else "wrong"] += 1
    return counts


def pair_outcome(prompt: str, chosen: str, rejected: str) -> tuple[str, str | None]:
    """What the checker says a preference pair teaches, and the task family of its prompt: `right` (chosen
    correct, rejected wrong), `wrong` (the reverse), `both_correct`/`both_wrong` (no correctness signal: style or
    length only), or `unparseable` (the prompt is no task it knows; family None)."""
    c, r = tasks.check(prompt, chosen), tasks.check(prompt, rejected)
    if not c.parsed:
        return "unparseable", None
    if c.correct != r.correct:
        return ("right" if c.correct else "wrong"), c.family
    return ("both_correct" if c.correct else "both_wrong"), c.family


PAIR_OUTCOMES = ("right", "wrong", "both_correct", "both_wrong", "unparseable")


def checked_pairs(pairs: list[P.Pair]) -> dict[str, int]:
    """The task world's checker on the preference pairs: what the judge's preferences can teach DPO about
    correctness (counts of each `pair_outcome`)."""
    counts = dict.fromkeys(PAIR_OUTCOMES, 0)
    for pair in pairs:
        counts[pair_outcome(pair.prompt, pair.chosen, pair.rejected)[0]] += 1
    return counts


def checked_pairs_by_family(rows: list[dict]) -> dict[str, dict[str, int]]:
    """`pair_outcome` counts per task family of pairs.jsonl rows (replayed rows left out). A family's ✓:✗ can
    look like signal and teach only a label prior: self-instructed membership questions are mostly "no", so a
    judge that always prefers "no" gets them right without being able to check membership."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        if r.get("replay"):
            continue
        outcome, family = pair_outcome(r["prompt"], r["chosen"], r["rejected"])
        if family is not None:
            out.setdefault(family, dict.fromkeys(PAIR_OUTCOMES[:4], 0))[outcome] += 1
    return dict(sorted(out.items()))
