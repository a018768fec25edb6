"""Public API: fused linear cross-entropy and per-token log-probabilities, with `impl` dispatch.

    loss = CE(softcap(hidden · weightᵀ + bias), targets)       without materialising the (N, V) logits

The LM head's logits are the largest activation of LLM training (16k tokens × 128k vocabulary in fp32 is
8 GB, and again for its gradient). Here they exist only blockwise: in Triton tiles on the GPU (Cut
Cross-Entropy, Wijmans et al. 2024, arXiv:2411.09009) or in row chunks of ≈128 MB in the pure-torch path
(Liger-Kernel, Hsu et al. 2024, arXiv:2410.10989). Extra memory is O(N) floats plus the gradients.

Ignored rows (target == ignore_index) are dropped before any matmul (one host sync), so prompt and padding
tokens cost nothing. When every target is ignored: reduction "mean" and "sum" return 0.0, "none" returns
zeros, log-probs are 0, and the gradients of hidden, weight and bias are zeros (never NaN).
"""

from __future__ import annotations

import torch

from ._common import RowLossOptions, check_inputs, check_reduction, make_options, reduce_rows, resolve_impl
from .cross_entropy_chunked import chunked_reduced, chunked_rows
from .cross_entropy_reference import reference_rows


def _rows(
    impl: str,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    opts: RowLossOptions,
) -> torch.Tensor:
    if impl == "reference":
        return reference_rows(hidden, weight, bias, targets, opts)
    if impl == "chunked":
        return chunked_rows(hidden, weight, bias, targets, opts)
    from .cross_entropy_triton import triton_rows  # lazy: the library imports without Triton

    return triton_rows(hidden, weight, bias, targets, opts)


def _zero_connected(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(n,) fp32 zeros that still depend on the inputs, so `.backward()` works and yields zero gradients."""
    z = hidden[:, :0].float().sum(-1) + weight[:0].float().sum()  # (N,) zeros; empty sums, never NaN
    if bias is not None:
        z = z + bias[:0].float().sum()
    return z


def _linear_rows_or_reduced(
    hidden: torch.Tensor,  # (..., D)
    weight: torch.Tensor,  # (V, D)
    targets: torch.Tensor,  # (...)
    bias: torch.Tensor | None,
    opts: RowLossOptions,
    reduction: str,
    impl: str,
) -> torch.Tensor:
    check_inputs(hidden, weight, targets, bias, opts.ignore_index)
    impl = resolve_impl(impl, hidden.device)
    if opts.grad_filter_eps and impl != "triton":
        raise ValueError(
            f"grad_filter_eps skips tiles of the Triton backward; impl={impl!r} computes exact gradients "
            "(use impl='triton' on CUDA, or grad_filter_eps=0)"
        )
    if opts.low_memory and impl != "triton":
        raise ValueError(
            f"low_memory chooses how the Triton backward accumulates dh; impl={impl!r} has no such choice "
            "(its extra memory is bounded already: use impl='triton' on CUDA, or low_memory=False)"
        )
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, D)
    y = targets.reshape(-1)  # (N,)
    n = y.shape[0]
    valid = y != opts.ignore_index
    if impl == "reference":
        rows = reference_rows(h, weight, bias, y, opts)
        out = reduce_rows(rows, valid.sum(), reduction)
        return out.reshape(targets.shape) if reduction == "none" else out

    idx = None
    count = n
    if n and not bool(valid.all()):  # drop ignored rows before any matmul
        idx = valid.nonzero().squeeze(1)  # (M,)
        count = idx.numel()
        h, y = h.index_select(0, idx), y.index_select(0, idx)  # (M, D), (M,)
    if count == 0:
        zeros = _zero_connected(hidden.reshape(-1, hidden.shape[-1]), weight, bias)
        return zeros.reshape(targets.shape) if reduction == "none" else zeros.sum()

    if impl == "chunked" and reduction != "none" and torch.is_grad_enabled():
        return chunked_reduced(h, weight, bias, y, opts, 1.0 / count if reduction == "mean" else 1.0)
    rows = _rows(impl, h, weight, bias, y, opts)  # (M,)
    if reduction != "none":
        return reduce_rows(rows, count, reduction)
    if idx is not None:
        rows = rows.new_zeros(n).index_copy(0, idx, rows)  # (N,), 0 at ignored rows
    return rows.reshape(targets.shape)


def fused_linear_cross_entropy(
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
    impl: str = "auto",
    grad_filter_eps: float = 0.0,
    low_memory: bool = False,
) -> torch.Tensor:
    """Cross-entropy of `hidden @ weight.T (+ bias)` against `targets`, never materialising the logits.

    hidden (N, D) or (..., D); weight (V, D), same dtype; targets (N,) or (...) integers.
    label_smoothing: as in `torch.nn.functional.cross_entropy`. z_loss: adds z_loss · lse² per row (PaLM).
    logit_softcap: c · tanh(logits / c) before the softmax (Gemma-2). reduction "mean" averages over
    non-ignored targets. The loss is fp32; gradients have the input dtypes.
    impl: "auto" (Triton on CUDA, chunked torch elsewhere), "triton", "chunked" or "reference".
    grad_filter_eps: Triton only, off by default. The backward skips every (rows × vocabulary) tile in which all
    |∂loss/∂logit| < grad_filter_eps: those tiles add nothing to the hidden and weight gradients (the bias
    gradient and the loss stay exact). Below bf16's resolution (e.g. 2⁻¹²) this is invisible in a bf16 gradient
    and skips most of the backward's matmul work when the softmax is peaked, as in a trained model.
    low_memory: Triton only, off by default. For 16-bit inputs the backward normally sums dh over the whole
    vocabulary in an fp32 (N, D) buffer: 2·N·D bytes beyond the dh + dW bound (+256 MiB at 32k tokens of a
    4096-wide model). With low_memory it computes dW in a first pass and dh in a second one, a slice of rows at a
    time in a bounded fp32 scratch, so the extra memory stays a constant ~64 MiB at any N, for one more
    recomputation of the logits (2·N·D·V FLOPs: +25% of forward + backward). Same gradients, same precision.
    """
    check_reduction(reduction)
    opts = make_options(
        ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, logit_softcap=logit_softcap,
        grad_filter_eps=grad_filter_eps, low_memory=low_memory,
    )  # fmt: skip
    return _linear_rows_or_reduced(hidden, weight, targets, bias, opts, reduction, impl)


def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    impl: str = "auto",
    low_memory: bool = False,
) -> torch.Tensor:
    """log softmax(hidden @ weight.T / temperature)[targets] per position (fp32, shape of targets).

    0 at ignored positions; differentiable in hidden and weight (the building block of DPO and scoring).
    low_memory: as in `fused_linear_cross_entropy` (Triton only).
    """
    opts = make_options(ignore_index=ignore_index, temperature=temperature, low_memory=low_memory)
    return -_linear_rows_or_reduced(hidden, weight, targets, None, opts, "none", impl)
