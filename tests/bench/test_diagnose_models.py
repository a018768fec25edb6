"""bench/diagnose_models.py's sampled-answer statistics, on a scripted policy (the checker grades them)."""

import pytest

from bench.diagnose_models import sampled_accuracy


class Scripted:
    def __init__(self, answers):
        self.answers = answers

    def generate(self, prompts, n=1, **kw):
        return [self.answers[p][:n] for p in prompts]


def test_sampled_accuracy_counts_pass_at_1_pass_at_n_majority_and_mode_share():
    a, b = "Compute 2 + 3.", "Compute 4 + 4."
    policy = Scripted({a: ["5", "5", "6", "5"], b: ["7", "9", "7", "6"]})  # a: 3/4 right; b: none right
    out = sampled_accuracy(policy, [a, b], n=4)
    assert out["pass_at_1"] == pytest.approx((3 / 4 + 0) / 2)
    assert out["pass_at_n"] == 0.5 and out["majority_accuracy"] == 0.5
    assert out["mode_share"] == pytest.approx((3 / 4 + 2 / 4) / 2)
