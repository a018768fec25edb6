"""One device rule and one dtype map for the whole package.

Every config key, CLI flag and function that takes a device or a dtype by name resolves it here, so "auto" means
the same thing everywhere: CUDA when a CUDA device is visible, else CPU; bf16 on CUDA, fp32 elsewhere (CPUs have
no fast bf16, and fp32 keeps CPU runs exact enough to compare against references).
"""

from __future__ import annotations

import torch

# Names accepted for each dtype: the long names are the config keys' spelling, the short ones the CLI flags'.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`"auto"` → `cuda` when available, else `cpu`; anything else must name a device torch knows (and, for
    CUDA, one that exists here). Raises `ValueError` with the name otherwise."""
    if isinstance(name, torch.device):
        return name
    if not isinstance(name, str):
        raise ValueError(f"device must be a name (auto, cpu, cuda or cuda:N), got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index not in (None, 0)):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device is available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The compute dtype "auto" stands for on `device`."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def resolve_dtype(name: str | torch.dtype, device: torch.device | str = "cpu") -> torch.dtype:
    """A dtype by name (`"auto"`, `"float32"`/`"fp32"`, `"bfloat16"`/`"bf16"`, `"float16"`/`"fp16"`)."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return default_dtype(device)
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use auto or one of {', '.join(DTYPES)}") from None
