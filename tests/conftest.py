"""Test setup shared by the whole suite.

The Triton interpreter must be switched on before any module that defines `@triton.jit` kernels is
imported, so this runs first: on a machine without CUDA every Triton kernel in the suite runs under
`TRITON_INTERPRET=1` (fp32/fp16 only: bf16 arithmetic is wrong in the interpreter).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
