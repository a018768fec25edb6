"""bench/compare_judges.py: paired differences of pairwise accuracy over the same trees, and how much of a judge
is length, on cases small enough to check by hand."""

import argparse
import json

import pytest

from bench.compare_judges import (
    _name,
    _scores,
    length_share,
    paired_difference,
    pairwise_accuracy,
    pooled_accuracy,
)
from srlm_fast.eval.metrics import RankedJudgment


def trees(*scores_per_tree):
    return [RankedJudgment([0, 1], list(s)) for s in scores_per_tree]  # reply 0 is the humans' better one


def test_paired_difference_of_identical_judges_is_exactly_zero():
    a = trees((2, 1), (1, 2), (3, 1), (1, 3))
    d = paired_difference(a, a, n_boot=200)
    assert d == {"difference": 0.0, "ci95": [0.0, 0.0]}


def test_paired_difference_is_the_accuracy_gap_with_an_interval_around_it():
    right, wrong = (2, 1), (1, 2)
    a = trees(*[right] * 8 + [wrong] * 2)  # 80%
    b = trees(*[right] * 5 + [wrong] * 5)  # 50%
    assert pairwise_accuracy(a, range(10)) == pytest.approx(0.8)
    d = paired_difference(a, b, n_boot=500)
    assert d["difference"] == pytest.approx(30.0)
    assert d["ci95"][0] <= 30.0 <= d["ci95"][1] and d["ci95"][0] >= 0.0  # a is never worse on any tree


def test_length_share_counts_pairs_ordered_as_lengths_and_accuracy_where_shorter_is_better():
    lengths = trees((10, 5), (5, 10), (5, 10), (7, 7))  # tree 4: equal lengths, left out
    judge = trees((3, 1), (3, 1), (1, 3), (3, 1))
    share = length_share(judge, lengths)
    # tree 1: longer is better, judge right and with length; trees 2-3: shorter is better, judge right on
    # tree 2 (against length), wrong on tree 3 (with length).
    assert share == {"pairs": 3, "orders_as_length": pytest.approx(0.667, abs=1e-3), "shorter_better_pairs": 2,
                     "accuracy_where_shorter_is_better": 0.5}  # fmt: skip
    assert length_share(lengths, lengths)["accuracy_where_shorter_is_better"] == 0.0


def test_reads_bench_files_and_a_loops_evaluations(tmp_path):
    bench = tmp_path / "judge.json"
    bench.write_text(json.dumps({"rankings": {"file": "trees.jsonl", "n_trees": 3, "scores": [4.0, None]}}))
    (tmp_path / "run" / "eval").mkdir(parents=True)
    loop = tmp_path / "run" / "eval" / "m2.json"
    loop.write_text(json.dumps({"human_rankings_scores": [3.5, 1.0]}))
    none_given = argparse.Namespace(rankings=None, trees=None)
    assert _scores(bench, none_given) == ("trees.jsonl", 3, [4.0, None]) and _name(bench) == "judge"
    # No run config beside it to say which trees.
    with pytest.raises(SystemExit, match="--rankings and --trees"):
        _scores(loop, none_given)
    (tmp_path / "run" / "config.toml").write_text('[eval]\nrankings = "trees.jsonl"\nlimit = 0\n')
    assert _scores(loop, none_given) == ("trees.jsonl", 0, [3.5, 1.0]) and _name(loop) == "run/m2"
    assert _scores(loop, argparse.Namespace(rankings="other.jsonl", trees=5))[:2] == ("other.jsonl", 5)
    (tmp_path / "run" / "eval" / "m3.json").write_text(json.dumps({"human_pairs_scores": [1.0]}))
    with pytest.raises(SystemExit, match="human rankings"):
        _scores(tmp_path / "run" / "eval" / "m3.json", none_given)


def test_a_pool_scores_the_mean_of_its_runs_and_differs_from_another_scorer_by_the_mean_difference():
    right, wrong = (2, 1), (1, 2)
    seed0 = trees(*[right] * 8 + [wrong] * 2)  # 80%
    seed1 = trees(*[right] * 6 + [wrong] * 4)  # 60%
    base = trees(*[right] * 5 + [wrong] * 5)  # 50%
    assert pooled_accuracy((seed0, seed1), range(10)) == pytest.approx(0.7)
    d = paired_difference((seed0, seed1), base, n_boot=500)
    assert d["difference"] == pytest.approx(20.0)
    assert d["ci95"][0] <= 20.0 <= d["ci95"][1]
    # A pool of one run is that run, to the resample.
    assert paired_difference((seed0,), base, n_boot=200) == paired_difference(seed0, base, n_boot=200)
