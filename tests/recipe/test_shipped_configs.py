"""The configs shipped in srlm_fast/configs/ load as the jobs they are for; the lever config says what it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from srlm_fast.config import changed_keys, load_job_config, to_dict
from srlm_fast.recipe import stages as S
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "srlm_fast" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    load_job_config(LoopConfig if path.name.startswith("loop-") else TrainConfig, str(path), [])


def test_the_lever_config_changes_only_the_levers_and_validates() -> None:
    levers = load_job_config(LoopConfig, str(CONFIGS / "loop-levers-cpu.toml"), [])
    levers.validate(S.train_table)
    assert changed_keys(to_dict(LoopConfig()), to_dict(levers)) == [
        "candidates.n", "dpo.dpo", "dpo.optim", "dpo.schedule", "eval.n_task_prompts", "iterations",
        "pairs.replay", "seed_data.eft_mix", "seed_data.eft_reference", "seed_data.n_eft", "selfinstruct.n_prompts",
        "selfinstruct.shape_min_count",
    ]  # fmt: skip
    assert levers.dpo == {
        "dpo": {"nll_weight": 1.0},
        "optim": {"lr": 5e-4, "min_lr": 5e-5},
        "schedule": {"epochs": 4.0},
    }
