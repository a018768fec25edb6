"""95% bootstrap intervals of the judge-vs-human metrics, resampling the unit that is independent: the prompt for
human rankings (its replies stay together), the pair for chosen/rejected labels.

The loop's evaluation (recipe/evaluation.py) and `bench/judge_smollm2.py` report them beside every Table-4 metric,
for the judge and for the length baseline, from the per-reply scores (which both keep, so any metric can be
recomputed). One resample computes every metric at once; a metric that is undefined on a resample (no decided
pair, a constant ranking) is left out of that metric's percentiles.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from srlm_fast.eval.judge_agreement import ranked_judgments
from srlm_fast.eval.metrics import judge_agreement, pair_agreement
from srlm_fast.eval.readers import RankedPrompt

N_BOOT = 2000
RANK_METRICS = ("pairwise_accuracy", "pairwise_accuracy_decided", "five_best", "top1", "exact_match", "spearman", "kendall_tau")  # fmt: skip
PAIR_METRICS = ("accuracy", "accuracy_decided", "tie_rate")


def bootstrap_intervals(
    n: int, metrics: Callable[[list[int]], dict], names: Sequence[str], n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, list[float | None]]:
    """Per name, [2.5%, 97.5%] percentiles of `metrics(indices)[name]` over `n_boot` resamples of range(n) with
    replacement ([None, None] where no resample defines it, or n is 0)."""
    values: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(seed)
    for _ in range(n_boot if n else 0):
        m = metrics([rng.randrange(n) for _ in range(n)])
        for name in names:
            if m.get(name) is not None:
                values[name].append(m[name])
    out: dict[str, list[float | None]] = {}  # lists, as they read back from JSON
    for name, v in values.items():
        v.sort()
        out[name] = [v[int(0.025 * (len(v) - 1))], v[int(0.975 * (len(v) - 1))]] if v else [None, None]
    return out


def ranking_report(
    prompts: Sequence[RankedPrompt],
    scores: Sequence[float | None],
    *,
    perfect: float = 5.0,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict:
    """Table-4 metrics of scores given in `ranked_items(prompts)` order, with their intervals over prompts."""
    per_prompt = ranked_judgments(prompts, scores)

    def metrics(idx: Sequence[int]) -> dict:
        return judge_agreement([per_prompt[i] for i in idx], perfect=perfect).to_dict()

    return {
        "metrics": metrics(range(len(per_prompt))),
        "ci95": bootstrap_intervals(len(per_prompt), metrics, RANK_METRICS, n_boot, seed),
    }


def pair_report(
    chosen: Sequence[float | None], rejected: Sequence[float | None], *, n_boot: int = N_BOOT, seed: int = 0
) -> dict:
    """Agreement with chosen/rejected labels, with intervals over pairs."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen scores for {len(rejected)} rejected ones")

    def metrics(idx: Sequence[int]) -> dict:
        return pair_agreement([chosen[i] for i in idx], [rejected[i] for i in idx]).to_dict()

    return {
        "metrics": metrics(range(len(chosen))),
        "ci95": bootstrap_intervals(len(chosen), metrics, PAIR_METRICS, n_boot, seed),
    }
