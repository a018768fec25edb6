"""bench/diagnose_models.py's sampled-answer statistics, on a scripted policy, and where candidates' numbers come
from (the checker grades them)."""

import pytest

from bench.diagnose_models import answer_sources, sampled_accuracy
from srlm_fast.io import write_jsonl_atomic


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


def test_answer_sources_tells_right_copied_invented_and_malformed_numbers(tmp_path):
    rows = [
        # max of 3, 9, 4 is 9: right, another number of the prompt, invented, two numbers, no number.
        {
            "prompt": "What is the largest of 3, 9, 4?",
            "responses": ["9", "The answer is 4.", "17", "9 or 4", "big"],
        },
        {"prompt": "Which is larger, 12 or 30?", "responses": ["30", "31"]},
        {
            "prompt": "Sort from smallest to largest: 3, 1, 2.",
            "responses": ["1, 2, 3"],
        },  # no single-number answer
        {"prompt": "Write a poem.", "responses": ["7"]},  # no task
    ]
    path = tmp_path / "candidates.jsonl"
    write_jsonl_atomic(path, rows)
    out = answer_sources(path)
    assert sorted(out) == ["larger", "max"]
    assert out["max"] == {
        "n": 5, "right": 0.2, "other_prompt_number": 0.2, "number_not_in_prompt": 0.2, "not_one_number": 0.4,
    }  # fmt: skip
    assert out["larger"]["right"] == 0.5 and out["larger"]["number_not_in_prompt"] == 0.5
