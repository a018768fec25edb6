"""`srlm experiment`: arms × seeds on a stand-in loop (no training), sharing M1, the table, intervals, plots."""

import json
from pathlib import Path

import numpy as np
import pytest

from srlm_fast.config import ConfigError, from_dict, merge, to_dict, to_toml
from srlm_fast.eval import experiment_report as ER
from srlm_fast.io import write_json_atomic, write_jsonl_atomic
from srlm_fast.recipe import experiment as X
from srlm_fast.recipe import stages as S
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.rundir import RunDir, save_or_check_config
from srlm_fast.train.config import TrainConfig

N_PROMPTS = 200
# Accuracy of M_k per arm in the stand-in loop: self gains, oracle gains more, random stays.
ACC = {
    "self": [0.3, 0.4, 0.5],
    "oracle": [0.3, 0.45, 0.6],
    "random": [0.3, 0.3, 0.3],
    "meta": [0.3, 0.42, 0.52],
}


def _outcomes(rate: float, seed: int, k: int) -> str:
    # Nested outcomes: a prompt right at M_k stays right later (the gain is exactly the rate difference).
    order = np.random.default_rng(seed).permutation(N_PROMPTS)
    right = set(order[: int(rate * N_PROMPTS)].tolist())
    return "".join("1" if i in right else "0" for i in range(N_PROMPTS))


def fake_loop(calls: list):
    """A stand-in for run_loop: writes the artifacts a run would, and records what already existed."""

    def run(cfg: LoopConfig) -> Path:
        root = Path(cfg.runs_dir) / cfg.name
        arm = "meta" if cfg.judge.meta else cfg.judge.reward
        calls.append((cfg.name, arm, (root / "m1").exists(), (root / "iter1" / "candidates.jsonl").exists()))
        for d in ("seed", "tokenizer", "m0", "m1"):
            (root / d).mkdir(parents=True, exist_ok=True)
        for k in range(1, cfg.iterations + 2):
            path = root / "eval" / f"m{k}.json"
            if path.exists():
                continue
            correct = _outcomes(ACC[arm][k - 1] if k > 1 else 0.3, cfg.seed, k)
            write_json_atomic(
                path,
                {"model": f"M{k}", "task_accuracy": correct.count("1") / N_PROMPTS, "judge_agreement_own": 0.6,
                 "by_family": {"add": correct.count("1") / N_PROMPTS, "parity": 0.5},
                 "per_prompt": {"correct": correct, "agree": "1" * 120 + "0" * 79 + "-"}},
            )  # fmt: skip
        for t in range(1, cfg.iterations + 1):
            it = root / f"iter{t}"
            if not (it / "candidates.jsonl").exists():
                write_jsonl_atomic(
                    it / "candidates.jsonl",
                    [{"prompt": "What is 2 plus 3?", "responses": ["5", "6"]}, {"prompt": "Hi there", "responses": ["a", "b"]}],
                )  # fmt: skip
            write_jsonl_atomic(
                it / "judgments.jsonl",
                [{"prompt": "What is 2 plus 3?", "responses": ["5", "6"], "scores": [4.5, 1.0]}],
            )
            write_json_atomic(it / "stats.json", {"pairs": {"pairs": 1, "checker": {"right": 1, "wrong": 0}}})
            write_jsonl_atomic(
                it / "pairs.jsonl",
                [{"prompt": "What is 2 plus 3?", "chosen": "5", "rejected": "6"},
                 {"prompt": "What is 2 plus 3?", "chosen": "7", "rejected": "6"},
                 {"prompt": "What is 2 plus 3?", "chosen": "6", "rejected": "5", "replay": True}],
            )  # fmt: skip
        return root

    return run


def test_arms_share_m1_and_the_first_candidates_and_the_report_has_intervals(tmp_path):
    calls = []
    base = LoopConfig(runs_dir=str(tmp_path), iterations=2)
    root = X.run_experiment(base, seeds=(0, 1), name="exp", run_fn=fake_loop(calls), log=lambda m: None)
    # Per seed: the self run first, from nothing; every other arm finds M1 and iteration 1's candidates shared.
    assert [c[:2] for c in calls] == [
        (f"s{s}-{a}", a) for s in (0, 1) for a in ("self", "random", "oracle", "meta")
    ]
    for name, arm, had_m1, had_candidates in calls:
        assert had_m1 == had_candidates == (arm != "self"), name
    assert (root / "s0-oracle" / "m1").exists() and not (root / "s0-no_dpo").exists()
    summary = json.loads((root / "experiment.json").read_text())["summary"]
    arms = summary["arms"]
    assert arms["self"]["gain"]["value"] == pytest.approx(0.2)
    assert arms["oracle"]["gain"]["value"] == pytest.approx(0.3)
    assert arms["random"]["gain"]["value"] == pytest.approx(0.0)
    assert arms["no_dpo"]["gain"]["value"] == pytest.approx(0.0) and arms["no_dpo"]["accuracy"] == [0.3] * 3
    lo, hi = arms["self"]["gain"]["low"], arms["self"]["gain"]["high"]
    assert 0 < lo < 0.2 < hi
    assert summary["comparisons"]["self_minus_half_oracle"]["value"] == pytest.approx(0.05)
    assert summary["comparisons"]["self_minus_random"]["value"] == pytest.approx(0.2)
    it1 = arms["self"]["iterations"][0]
    assert it1["valid_prompts"] == 0.5 and it1["pass_at_1"] == 0.5 and it1["pass_at_n"] == 1.0
    # Per family: each model's accuracy (means over seeds) and the non-replayed pairs of both iterations.
    add = arms["self"]["by_family"]["add"]
    assert add["accuracy"] == pytest.approx(ACC["self"])
    assert add["pairs"] == {"right": 2, "wrong": 0, "both_correct": 0, "both_wrong": 2}
    assert sorted(arms["self"]["by_family"]) == ["add", "parity"]
    assert len(arms["self"]["judge_balanced_accuracy"]) == 3
    md = (root / "experiment.md").read_text()
    assert "| self | 30.0% | 50.0% | +20.0 [" in md and "experiment_accuracy.png" in md
    assert "| self | add | 30.0% | 50.0% | +20.0 | 2:0 | 0 | 2 |" in md
    for png in ("experiment_accuracy.png", "experiment_scores.png"):
        assert (root / png).read_bytes()[:4] == b"\x89PNG"


def test_balanced_accuracy_does_not_move_with_the_models_accuracy():
    def evaluation(correct: str, agree: str) -> dict:
        return {"per_prompt": {"correct": correct, "agree": agree}}

    # A judge that calls every answer wrong: agreement is 1 - accuracy (0.75, then 0.25), balanced stays 0.5.
    assert ER.balanced_accuracy(evaluation("1000", "0111")) == 0.5
    assert ER.balanced_accuracy(evaluation("1110", "0001")) == 0.5
    # Right on every right answer, on one of two wrong ones; unjudged ("-") and unparsed prompts left out.
    assert ER.balanced_accuracy(evaluation("11000-", "1110-1")) == pytest.approx((1 + 1 / 2) / 2)
    assert ER.balanced_accuracy(evaluation("0000", "1111")) is None  # no right answer: undefined
    assert ER.balanced_accuracy({}) is None


def test_stratified_bootstrap_averages_seeds_and_ignores_missing():
    iv = ER.stratified_bootstrap([np.ones(50), np.zeros(50), np.array([np.nan] * 3)])
    assert iv.value == pytest.approx(0.5) and iv.low == iv.high == pytest.approx(0.5)
    iv = ER.stratified_bootstrap([np.array([0.0, 1.0] * 100)])
    assert iv.low < 0.5 < iv.high and iv.high - iv.low < 0.2
    assert ER.stratified_bootstrap([]).value is None


def test_gain_contrast_pairs_two_experiments_by_seed_and_prompt():
    def experiment(seeds: dict[int, tuple[str, str]]) -> dict:
        runs = {f"self/{s}": {"models": [{"per_prompt": {"correct": m1}}, {"per_prompt": {"correct": m3}}]}
                for s, (m1, m3) in seeds.items()}  # fmt: skip
        return {"seeds": list(seeds), "iterations": 1, "runs": runs}

    grounded = experiment({0: ("0000", "1110"), 1: ("1000", "1111")})  # gains 0.75, 0.75
    ungrounded = experiment({0: ("0000", "0100"), 2: ("0000", "1111")})  # seed 0 gains 0.25; seed 2 unshared
    c = ER.gain_contrast(grounded, "self", ungrounded, "self")
    assert c["seeds"] == [0] and c["gain_difference"]["value"] == pytest.approx(0.5)
    assert ER.gain_contrast(grounded, "self", grounded, "self")["gain_difference"]["value"] == 0
    with pytest.raises(ValueError, match="not the same evaluation"):
        ER.gain_contrast(grounded, "self", experiment({1: ("00", "11")}), "self")


def test_unknown_arms_and_arm_configs():
    with pytest.raises(ConfigError, match="unknown arm"):
        X.resolve_arms(["self", "human"])
    cfg = X.arm_config(LoopConfig(), X.ARMS["oracle"], 3, Path("/tmp/x"))
    assert (cfg.judge.reward, cfg.seed, cfg.name, cfg.runs_dir) == ("oracle", 3, "s3-oracle", "/tmp/x")
    assert X.arm_config(LoopConfig(), X.ARMS["meta"], 0, Path("r")).judge.meta


def test_a_shared_arm_directory_is_a_run_directory_that_srlm_run_resumes(tmp_path):
    # The real loop refuses a directory without its config.toml; the shared arm's one must pass its checks.
    base = LoopConfig(runs_dir=str(tmp_path), iterations=1)
    self_dir = tmp_path / "exp" / "s0-self"
    (self_dir / "m1").mkdir(parents=True)
    (self_dir / "m1" / "model.safetensors").write_bytes(b"weights")
    cfg = X.arm_config(base, X.ARMS["oracle"], 0, tmp_path / "exp")
    target = tmp_path / "exp" / cfg.name
    X.start_run_dir(cfg, target)
    assert X.share_artifacts(self_dir, target) == ["m1"]
    run = RunDir(cfg)
    run.claim()
    try:
        save_or_check_config(cfg, run)  # raises if the saved config were another one
    finally:
        run.release()
    assert (target / "m1" / "model.safetensors").read_bytes() == b"weights"


def test_m1_from_reuses_an_earlier_experiments_m1_only_under_the_same_m1_config(tmp_path):
    base = LoopConfig(runs_dir=str(tmp_path), iterations=1)
    calls: list = []
    first = X.run_experiment(
        base, ["self"], seeds=(0,), name="a", run_fn=fake_loop(calls), log=lambda m: None
    )
    (first / "s0-self" / "m1" / "model.safetensors").write_bytes(b"M1 of a")
    X.start_run_dir(X.arm_config(base, X.ARMS["self"], 0, first), first / "s0-self")  # as srlm run saves it
    # Another DPO setting: the same M1, so experiment b starts from it (its self run finds m1/ already there).
    sweep = from_dict(LoopConfig, merge(to_dict(base), {"dpo": {"dpo": {"beta": 0.3}}}))
    calls.clear()
    X.run_experiment(
        sweep, ["self"], seeds=(0,), name="b", run_fn=fake_loop(calls), log=lambda m: None, m1_from=first
    )
    assert calls[0][:3] == ("s0-self", "self", True)
    assert (tmp_path / "b" / "s0-self" / "m1" / "model.safetensors").read_bytes() == b"M1 of a"
    # Another seed-data setting would make another M1: refused, naming the key.
    other = from_dict(LoopConfig, merge(to_dict(base), {"seed_data": {"n_ift": 10}}))
    with pytest.raises(ConfigError, match="seed_data.n_ift"):
        X.run_experiment(
            other, ["self"], seeds=(0,), name="c", run_fn=fake_loop([]), log=lambda m: None, m1_from=first
        )
    with pytest.raises(ConfigError, match="no run directory with an M1"):
        X.run_experiment(
            base, ["self"], seeds=(1,), name="d", run_fn=fake_loop([]), log=lambda m: None, m1_from=first
        )


def test_m1_from_compares_the_sft_settings_the_trainer_gets_not_only_the_config_table(tmp_path, monkeypatch):
    """An M1 trained under other from-scratch SFT defaults (an older version) is not this config's M1, though
    neither config has an `sft` table."""
    base = LoopConfig(runs_dir=str(tmp_path), iterations=1)
    first = X.run_experiment(base, ["self"], seeds=(0,), name="a", run_fn=fake_loop([]), log=lambda m: None)
    X.start_run_dir(X.arm_config(base, X.ARMS["self"], 0, first), first / "s0-self")
    # What `srlm run`'s SFT saves beside its checkpoints: the whole trainer config it trained M1 with.
    table = merge(
        {"task": "sft", "model": {"init": "m0"}, "data": {"train": "sft.jsonl"}}, S.train_table("sft", base)
    )
    trained = first / "s0-self" / "train" / "m1" / "config.toml"
    trained.parent.mkdir(parents=True)
    trained.write_text(to_toml(to_dict(from_dict(TrainConfig, table))))
    X.run_experiment(
        base, ["self"], seeds=(0,), name="same", run_fn=fake_loop([]), log=lambda m: None, m1_from=first
    )
    monkeypatch.setitem(S.FROM_SCRATCH, "sft", merge(S.FROM_SCRATCH["sft"], {"optim": {"lr": 0.5}}))
    with pytest.raises(ConfigError, match="sft.optim"):
        X.run_experiment(
            base, ["self"], seeds=(0,), name="b", run_fn=fake_loop([]), log=lambda m: None, m1_from=first
        )
