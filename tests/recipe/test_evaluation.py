"""The loop's evaluation of a model: `srlm eval judge` and the loop report the same judge-vs-humans numbers on the
same inputs, and M_k against M_{k-1} reads the previous model's saved answers."""

from __future__ import annotations

import json

import pytest

from srlm_fast.cli import main
from srlm_fast.config import load_job_config
from srlm_fast.eval.readers import read_hh_pairs
from srlm_fast.io import write_jsonl_atomic
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.recipe import tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.evaluation import evaluate_model, evaluate_task_world, versus_previous
from srlm_fast.recipe.judge import JudgeResult
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.rundir import RunDir
from tests.helpers import tiny_model

TREES = [
    {"message_tree_id": "t1", "prompt": {"message_id": "q1", "text": "What is the capital of France?", "replies": [
        {"message_id": "a", "text": "Paris is the capital of France.", "rank": 0},
        {"message_id": "b", "text": "It is Lyon, I think.", "rank": 1},
        {"message_id": "c", "text": "I do not know.", "rank": 2},
    ]}},
    {"message_tree_id": "t2", "prompt": {"message_id": "q2", "text": "Name a primary color.", "replies": [
        {"message_id": "d", "text": "Blue is a primary color.", "rank": 1},
        {"message_id": "e", "text": "Red.", "rank": 0},
    ]}},
]  # fmt: skip
HH = [
    {"chosen": "\n\nHuman: Name a color.\n\nAssistant: Blue is a color.",
     "rejected": "\n\nHuman: Name a color.\n\nAssistant: I will not answer that."},
    {"chosen": "\n\nHuman: What is 2 + 2?\n\nAssistant: 2 + 2 is 4.",
     "rejected": "\n\nHuman: What is 2 + 2?\n\nAssistant: Five."},
]  # fmt: skip


@pytest.fixture(scope="module")
def judge_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("judge")
    tok = Tokenizer.train_bpe(
        ["Score: 3. Relevant: yes. The answer is helpful. Score: 5"] * 20, vocab_size=300
    )
    tiny_model(vocab_size=tok.vocab_size, max_seq_len=1024).save_pretrained(d / "ck", tokenizer=tok)
    write_jsonl_atomic(d / "trees.jsonl", TREES)
    write_jsonl_atomic(d / "hh.jsonl", HH)
    return d


@pytest.mark.parametrize("mode", ["expected", "sample"])
def test_eval_judge_and_the_loops_evaluation_give_the_same_numbers(judge_inputs, tmp_path, mode):
    d = judge_inputs
    out = tmp_path / "cli.json"
    argv = ["eval", "judge", "--checkpoint", str(d / "ck"), "--rankings", str(d / "trees.jsonl"),
            "--pairs", str(d / "hh.jsonl"), "--mode", mode, "--k", "2", "--template", "compact",
            "--max-new-tokens", "6", "--limit", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    cli = json.loads(out.read_text())

    cfg = load_job_config(LoopConfig, None, [
        f"--runs_dir={tmp_path}", "--eval.task_world=false", f"--eval.rankings={d / 'trees.jsonl'}",
        f"--eval.pairs={d / 'hh.jsonl'}", "--eval.limit=2", f"--judge.mode={mode}", "--judge.k=2",
        "--judge.template=compact", "--judge.max_new_tokens=6",
    ])  # fmt: skip
    policy = Policy.load(d / "ck")
    try:
        loop = evaluate_model(cfg, RunDir(cfg), 1, policy)
    finally:
        policy.close()
    assert loop["human_rankings"] == cli["rankings"]
    assert loop["human_pairs"] == cli["pairs"]
    assert loop["judge_pairwise_humans"] == cli["rankings"]["pairwise_accuracy"]
    assert loop["judge_accuracy_human_pairs"] == cli["pairs"]["accuracy"]
    # The length baseline beside the judge, on the same pairs: the share where the human chose the longer reply.
    hh = read_hh_pairs(d / "hh.jsonl").pairs[:2]
    longer = [(len(p.chosen) > len(p.rejected)) + 0.5 * (len(p.chosen) == len(p.rejected)) for p in hh]
    assert loop["human_pairs_length_baseline"]["accuracy_ties_half"] == pytest.approx(sum(longer) / len(hh))
    assert loop["human_rankings_length_baseline"]["n_prompts"] == 2 == cli["rankings_length"]["n_prompts"]
    assert cli["rankings"]["n_prompts"] == 2 and cli["pairs"]["n_pairs"] + cli["pairs"]["n_invalid"] == 2
    if mode == "expected":  # the expected score always exists: real numbers, not an all-invalid tie
        assert cli["rankings"]["n_invalid"] == 0 and cli["rankings"]["pairwise_accuracy"] is not None
    # Intervals and per-reply scores ride along, the same from both entry points.
    assert (
        loop["human_rankings_ci95"] == cli["rankings_ci95"] and loop["human_pairs_ci95"] == cli["pairs_ci95"]
    )
    assert len(loop["human_rankings_scores"]) == cli["rankings"]["n_responses"]
    assert len(loop["human_pairs_scores"]) == 4
    point, (low, high) = cli["rankings"]["pairwise_accuracy"], cli["rankings_ci95"]["pairwise_accuracy"]
    assert point is None or low <= point <= high
    if point is not None:  # report.md shows the headline numbers with their interval
        assert loop["judge_pairwise_humans_ci95"] == {"value": point, "low": low, "high": high}
    length_point = loop["human_pairs_length_baseline"]["accuracy"]
    low, high = loop["human_pairs_length_baseline_ci95"]["accuracy"]
    assert low <= length_point <= high


class LengthJudge:
    """Answers with the prompt repeated `reps` times; judges a response by its length (longer is better)."""

    def __init__(self, reps: int) -> None:
        self.reps = reps

    def generate(self, prompts, n=1, temperature=0.7, top_p=0.9, max_new_tokens=64, seed=0, stop=()):
        return [[" ".join([p] * self.reps)] * n for p in prompts]

    def judge(self, items, template, config, seed=0):
        return [JudgeResult(min(5.0, len(r) / 20), 1, 0, (), ()) for _, r in items]


def test_versus_previous_judges_m_k_against_the_saved_answers_of_m_k_minus_1(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl_atomic(prompts, [{"instruction": f"Describe the number {i}."} for i in range(4)])
    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", f"--eval.prompts={prompts}"])
    run = RunDir(cfg)
    first = versus_previous(cfg, run, 1, LengthJudge(reps=1))
    assert set(first) == {"mean_answer_chars"}  # M1 has no predecessor
    assert (run.eval / "m1.answers.jsonl").is_file()
    second = versus_previous(
        cfg, run, 2, LengthJudge(reps=3)
    )  # M2's answers are longer: it wins every prompt
    assert second["vs_previous"]["n"] == 4
    assert second["win_rate_vs_previous"] == 1.0
    assert second["mean_answer_chars"] == pytest.approx(3 * first["mean_answer_chars"] + 2)


def test_task_world_evaluation_records_every_prompts_outcome_in_order(tmp_path):
    class Oracle:  # answers every other held-out task right; its judge calls everything correct
        def generate(self, prompts, n=1, **kw):
            return [[tasks.parse_prompt(p)[2] if i % 2 == 0 else "no idea"] for i, p in enumerate(prompts)]

        def judge(self, items, template, config, seed=0):
            return [JudgeResult(5.0, 1, 0, (5.0,), ()) for _ in items]

    cfg = load_job_config(LoopConfig, None, ["--eval.n_task_prompts=20", "--eval.n_judge_items=6"])
    out = evaluate_task_world(cfg, Oracle())
    assert out["per_prompt"] == {"correct": "10" * 10, "agree": "10" * 10}
    assert out["task_accuracy"] == 0.5 and out["judge_agreement_own"] == 0.5
    assert out["judge_auc_own"] == 0.5  # equal scores for right and wrong answers: no information
