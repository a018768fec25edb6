"""bench/rag_synergy.py's statistics: the 2×2's main effects and interaction from per-prompt outcomes."""

import json

import pytest

from bench import rag_synergy as RS
from srlm_fast.config import load_job_config
from srlm_fast.recipe import tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.task_families import KNOWLEDGE_FAMILY_NAMES

N = 60
# Knowledge accuracy of the last model per arm: generation retrieval adds 0.5, the judge's adds 0, and together
# they add 0.25 more (the interaction).
LAST = {"gen0-judge0": 0.0, "gen1-judge0": 0.5, "gen0-judge1": 0.0, "gen1-judge1": 0.75}


def _write_arm(tmp_path, arm: str, families: list[str]) -> LoopConfig:
    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", f"--name={arm}-s0",
                                             f"--eval.n_task_prompts={N}", f"--seed_data.families={json.dumps(families)}"])  # fmt: skip
    held_out = tasks.eval_prompts(N, 0, families)
    kb = [i for i, t in enumerate(held_out) if t.family in KNOWLEDGE_FAMILY_NAMES]
    right = set(kb[: round(LAST[arm] * len(kb))])
    eval_dir = tmp_path / cfg.name / "eval"
    eval_dir.mkdir(parents=True)
    for k, correct in ((1, ""), (2, "".join("1" if i in right else "0" for i in range(N)))):
        correct = correct or "0" * N  # M1 knows no held-out fact in any arm
        (eval_dir / f"m{k}.json").write_text(
            json.dumps({"model": f"M{k}", "per_prompt": {"correct": correct, "agree": "1" * N}})
        )
    return cfg


def test_synergy_reports_the_main_effects_and_the_interaction_of_the_two_retrieval_uses(tmp_path):
    families = ["larger", "parity", *KNOWLEDGE_FAMILY_NAMES]
    configs = {(arm, 0): _write_arm(tmp_path, arm, families) for arm in RS.ARMS}
    kb = RS.synergy(configs)["metrics"]["correct/knowledge"]
    n_kb = sum(t.family in KNOWLEDGE_FAMILY_NAMES for t in tasks.eval_prompts(N, 0, families))
    acc = {arm: round(rate * n_kb) / n_kb for arm, rate in LAST.items()}  # what _write_arm wrote
    assert kb["arms"]["gen1-judge1"]["last"]["value"] == pytest.approx(acc["gen1-judge1"])
    assert kb["arms"]["gen1-judge0"]["change_from_m1"]["value"] == pytest.approx(acc["gen1-judge0"])
    assert kb["gen_effect"]["value"] == pytest.approx((acc["gen1-judge0"] + acc["gen1-judge1"]) / 2)
    assert kb["judge_effect"]["value"] == pytest.approx((acc["gen1-judge1"] - acc["gen1-judge0"]) / 2)
    interaction = acc["gen1-judge1"] - acc["gen1-judge0"]
    assert kb["interaction"]["value"] == pytest.approx(interaction) and interaction > 0.15
    assert kb["interaction"]["low"] < interaction < kb["interaction"]["high"]
    # Over all prompts the same effects are diluted by the prompts of other families.
    everything = RS.synergy(configs)["metrics"]["correct/all"]
    assert 0 < everything["interaction"]["value"] < kb["interaction"]["value"]
