"""Shared option handling for the linear cross-entropy family: validation, `impl` dispatch, row compaction.

Every implementation (reference, chunked, Triton) computes the same per-row quantity

    s_ij   = softcap(h_i · W_j + b_j) / T                  softcap(z) = c · tanh(z / c)   (identity if c is None)
    lse_i  = log Σ_j exp(s_ij)
    loss_i = lse_i − (1 − ε) s_{i,y_i} − (ε / V) Σ_j s_ij + λ_z · lse_i²

and its gradient  ∂loss_i/∂s_ij = p_ij (1 + 2 λ_z lse_i) − (1 − ε)[j = y_i] − ε / V  with  p = softmax(s_i).
Cross-entropy uses T = 1; log-probabilities are −loss_i with ε = λ_z = 0. Ignored rows contribute 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

IMPLS = ("auto", "triton", "chunked", "reference")
REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class RowLossOptions:
    """The math options shared by every implementation (see the module docstring)."""

    ignore_index: int = -100
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    logit_softcap: float | None = None
    temperature: float = 1.0
    grad_filter_eps: float = 0.0  # Triton backward only: skip tiles whose |∂loss/∂logit| all lie below this
    low_memory: bool = False  # Triton backward only: dh in row slices, a second pass over the vocabulary


def _float_arg(name: str, value: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None


def make_options(
    *,
    ignore_index: int,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    temperature: float = 1.0,
    grad_filter_eps: float = 0.0,
    low_memory: bool = False,
) -> RowLossOptions:
    """Validate scalar options and pack them; raises ValueError naming the bad argument."""
    grad_filter_eps = _float_arg("grad_filter_eps", grad_filter_eps)
    if not 0.0 <= grad_filter_eps < 1.0:
        raise ValueError(f"grad_filter_eps must be in [0, 1), got {grad_filter_eps}")
    label_smoothing = _float_arg("label_smoothing", label_smoothing)
    z_loss = _float_arg("z_loss", z_loss)
    temperature = _float_arg("temperature", temperature)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not z_loss >= 0.0:
        raise ValueError(f"z_loss must be >= 0, got {z_loss}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logit_softcap is not None:
        logit_softcap = _float_arg("logit_softcap", logit_softcap)
        if not logit_softcap > 0.0:
            raise ValueError(f"logit_softcap must be > 0 or None, got {logit_softcap}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if not isinstance(low_memory, bool):
        raise TypeError(f"low_memory must be a bool, got {low_memory!r}")
    return RowLossOptions(
        ignore_index, label_smoothing, z_loss, logit_softcap, temperature, grad_filter_eps, low_memory
    )


def check_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None,
    ignore_index: int,
) -> None:
    """Shape, dtype and device checks with messages that name the argument (never a deep traceback)."""
    if not isinstance(hidden, torch.Tensor) or not hidden.is_floating_point():
        raise TypeError("hidden must be a floating-point tensor")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(
            f"weight must be a 2-D (V, D) tensor, got shape {tuple(getattr(weight, 'shape', ()))}"
        )
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden (…, D) and weight (V, D) disagree on D: {tuple(hidden.shape)} vs {tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype:
        raise ValueError(f"hidden and weight must share a dtype, got {hidden.dtype} and {weight.dtype}")
    if weight.device != hidden.device or targets.device != hidden.device:
        raise ValueError(
            f"hidden, weight and targets must be on one device, got {hidden.device}, {weight.device}, {targets.device}"
        )
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"targets shape {tuple(targets.shape)} must equal hidden's leading shape {tuple(hidden.shape[:-1])}"
        )
    if bias is not None and (tuple(bias.shape) != (weight.shape[0],) or bias.device != hidden.device):
        raise ValueError(f"bias must be a (V,) = ({weight.shape[0]},) tensor on {hidden.device}")
    if weight.shape[0] == 0:
        raise ValueError("weight has an empty vocabulary (V = 0)")
    if targets.numel():
        valid = targets != ignore_index
        bad = valid & ((targets < 0) | (targets >= weight.shape[0]))
        if bool(bad.any()):  # one host sync: an out-of-range target would otherwise be silently wrong
            first = int(targets[bad].flatten()[0])
            raise ValueError(
                f"targets contain {first}, outside [0, {weight.shape[0]}) and not ignore_index={ignore_index}"
            )


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_impl(impl: str, device: torch.device) -> str:
    """'auto' → Triton on CUDA, chunked torch elsewhere. 'triton' on CPU needs TRITON_INTERPRET=1."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if device.type == "cuda" else "chunked"
    if impl == "triton" and device.type != "cuda" and not interpreter_on():
        raise ValueError(
            f"impl='triton' on a {device.type} tensor needs the Triton interpreter: set TRITON_INTERPRET=1 "
            "before importing srlm_kernels, or use impl='chunked'"
        )
    return impl


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_rows(rows: torch.Tensor, count: int | torch.Tensor, reduction: str) -> torch.Tensor:
    """rows: (N,) fp32 losses with 0 at ignored rows. 'mean' divides by the non-ignored count (0 → loss 0)."""
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    if isinstance(count, torch.Tensor):
        return total / count.clamp(min=1)
    return total / max(int(count), 1)
