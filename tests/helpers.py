"""Small builders shared by tests: random tiny models, trained tokenizers, the shared data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from srlm_fast.model.config import ModelConfig
from srlm_fast.model.llama import Llama, build_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        vocab_size=123, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=96, max_seq_len=128
    )
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **overrides) -> Llama:
    model = build_model(tiny_config(**overrides), seed=seed)
    # Break the symmetry of the unit-gain norms so tests also exercise the norm weights.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    return model.eval()


def torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone --nproc_per_node=N *args` from the repo root, one thread per
    rank (2 ranks on a 2-core machine), output captured; the caller checks the return code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("SRLM_TEST_KILL_IN_STAGE", None)  # a kill switch meant for a single-process test run
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
