"""Pure-torch references for the linear cross-entropy family: they materialise the (N, V) logits in fp32.

These are the ground truth the chunked and Triton paths are tested against (via autograd on these
functions), and the `impl="reference"` choice of the public API. Memory: O(N · V) — the thing the
other paths avoid. Math: see `srlm_kernels._common`.
"""

from __future__ import annotations

import torch

from ._common import RowLossOptions, check_inputs, check_reduction, make_options, reduce_rows


def reference_rows(
    hidden: torch.Tensor,  # (N, D)
    weight: torch.Tensor,  # (V, D)
    bias: torch.Tensor | None,  # (V,)
    targets: torch.Tensor,  # (N,)
    opts: RowLossOptions,
) -> torch.Tensor:
    """Per-row loss (N,) in fp32 (fp64 for fp64 inputs) with 0 at ignored rows, differentiable through autograd."""
    acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 ground truth
    z = (hidden @ weight.T).to(acc)  # (N, V): matmul in the input dtype, like an eager LM head
    if bias is not None:
        z = z + bias.to(acc)
    if opts.logit_softcap is not None:
        z = opts.logit_softcap * torch.tanh(z / opts.logit_softcap)
    s = z / opts.temperature
    lse = torch.logsumexp(s, dim=-1)  # (N,)
    valid = targets != opts.ignore_index
    safe = torch.where(valid, targets, 0).long()
    s_y = s.gather(1, safe[:, None]).squeeze(1)
    loss = lse - (1.0 - opts.label_smoothing) * s_y
    if opts.label_smoothing:
        loss = loss - (opts.label_smoothing / s.shape[1]) * s.sum(dim=-1)
    if opts.z_loss:
        loss = loss + opts.z_loss * lse.square()
    return torch.where(valid, loss, torch.zeros_like(loss))


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
) -> torch.Tensor:
    """Reference for `fused_linear_cross_entropy` (same signature minus `impl`)."""
    check_reduction(reduction)
    opts = make_options(
        ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, logit_softcap=logit_softcap
    )
    check_inputs(hidden, weight, targets, bias, ignore_index)
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, D)
    y = targets.reshape(-1)  # (N,)
    rows = reference_rows(h, weight, bias, y, opts)
    out = reduce_rows(rows, (y != ignore_index).sum(), reduction)
    return out.reshape(targets.shape) if reduction == "none" else out


def linear_logprobs_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Reference for `fused_linear_logprobs`: log softmax(h Wᵀ / T)[target], 0 at ignored positions."""
    opts = make_options(ignore_index=ignore_index, temperature=temperature)
    check_inputs(hidden, weight, targets, None, ignore_index)
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, D)
    rows = reference_rows(h, weight, None, targets.reshape(-1), opts)
    return (-rows).reshape(targets.shape)
