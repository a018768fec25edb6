"""Bootstrap intervals of the judge-vs-human metrics: the point estimate is the plain metric, the interval holds it,
resamples are of whole prompts, and undefined metrics give no interval instead of a wrong one."""

import pytest

from srlm_fast.eval.judge_agreement import agreement_from_scores
from srlm_fast.eval.judge_intervals import bootstrap_intervals, pair_report, ranking_report
from srlm_fast.eval.metrics import pair_agreement
from srlm_fast.eval.readers import RankedPrompt


def _prompts(n: int) -> list[RankedPrompt]:
    return [RankedPrompt(f"q{i}", ("best", "middle", "worst"), (0, 1, 2)) for i in range(n)]


def test_ranking_report_is_the_plain_metric_with_an_interval_around_it():
    prompts = _prompts(40)
    # The judge ranks 30 prompts right and reverses 10: pairwise accuracy 0.75, every pair of a prompt alike.
    scores = [s for i in range(40) for s in ((3.0, 2.0, 1.0) if i < 30 else (1.0, 2.0, 3.0))]
    report = ranking_report(prompts, scores, perfect=5.0, n_boot=500, seed=0)
    assert report["metrics"] == agreement_from_scores(prompts, scores, perfect=5.0).to_dict()
    assert report["metrics"]["pairwise_accuracy"] == pytest.approx(0.75)
    low, high = report["ci95"]["pairwise_accuracy"]
    assert 0.55 < low < 0.75 < high < 0.9
    # Prompts are resampled whole: accuracy moves in steps of one prompt (3 pairs), never of a single pair.
    assert (40 * low) == pytest.approx(round(40 * low)) and (40 * high) == pytest.approx(round(40 * high))
    # No reply scores a perfect 5: five-best is undefined on every resample, so it has no interval.
    assert report["metrics"]["five_best"] is None and report["ci95"]["five_best"] == [None, None]


def test_a_perfect_judge_has_a_degenerate_interval_and_more_prompts_narrow_it():
    prompts = _prompts(10)
    perfect = ranking_report(prompts, [3.0, 2.0, 1.0] * 10, n_boot=200)
    assert perfect["ci95"]["pairwise_accuracy"] == [1.0, 1.0] and perfect["ci95"]["spearman"] == [1.0, 1.0]

    def width(n: int) -> float:
        scores = [s for i in range(n) for s in ((3.0, 2.0, 1.0) if i % 2 else (1.0, 2.0, 3.0))]
        low, high = ranking_report(_prompts(n), scores, n_boot=400)["ci95"]["pairwise_accuracy"]
        return high - low

    assert width(100) < width(10)


def test_pair_report_matches_pair_agreement_and_checks_lengths():
    chosen, rejected = [2.0, 2.0, 1.0, None, 3.0, 3.0], [1.0, 1.0, 2.0, 1.0, 3.0, 1.0]
    report = pair_report(chosen, rejected, n_boot=300, seed=1)
    assert report["metrics"] == pair_agreement(chosen, rejected).to_dict()
    low, high = report["ci95"]["accuracy"]
    assert low <= report["metrics"]["accuracy"] <= high
    with pytest.raises(ValueError, match="5 chosen scores for 6 rejected"):
        pair_report(chosen[:5], rejected)
    with pytest.raises(ValueError, match="5 scores for 6 responses"):
        ranking_report(_prompts(2), [1.0] * 5)


def test_bootstrap_intervals_on_nothing_and_reproducibility():
    assert bootstrap_intervals(0, lambda idx: {"m": 1.0}, ["m"]) == {"m": [None, None]}
    stat = lambda idx: {"m": sum(idx) / len(idx)}
    assert bootstrap_intervals(50, stat, ["m"], n_boot=100, seed=3) == bootstrap_intervals(
        50, stat, ["m"], n_boot=100, seed=3
    )
