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
    pairs: list[P.Pair], items: list[tuple[str, str]], template: J.JudgeTemplate
) -> dict[str, int]:
    """The checker on the judge's pairs (reported): `right` when the chosen judgment is right about the
    candidate's correctness and the rejected one wrong, `wrong` for the reverse, `same` when both agree."""
    by_prompt = {template.render(*x): x for x in items}
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


def checked_pairs(pairs: list[P.Pair]) -> dict[str, int]:
    """The task world's checker on the preference pairs: what the judge's preferences can teach DPO about
    correctness. `right`: chosen correct, rejected wrong; `wrong`: the reverse; `both_correct`/`both_wrong`: no
    correctness signal (style or length only); `unparseable`: the self-instructed prompt is no task it knows."""
    counts = dict.fromkeys(("right", "wrong", "both_correct", "both_wrong", "unparseable"), 0)
    for pair in pairs:
        chosen, rejected = tasks.check(pair.prompt, pair.chosen), tasks.check(pair.prompt, pair.rejected)
        if not chosen.parsed:
            counts["unparseable"] += 1
        elif chosen.correct != rejected.correct:
            counts["right" if chosen.correct else "wrong"] += 1
        else:
            counts["both_correct" if chosen.correct else "both_wrong"] += 1
    return counts
