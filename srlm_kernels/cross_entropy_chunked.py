"""Chunked pure-torch linear cross-entropy: the CPU path (and a portable fallback anywhere).

Rows are processed in chunks of C rows, so only a (C, V) logits block exists at a time; C is chosen so the
block stays near `CHUNK_ELEMENTS` floats (≈128 MB fp32) whatever N is. Extra memory is O(C · V + N)
instead of the O(N · V) logits, log-softmax and logits gradient of the eager path.

Two modes (the trade-off between compute and generality):
- `scale` given (reduction "mean"/"sum" with a scalar upstream gradient): the gradients are computed in the
  forward itself, chunk by chunk, as in Liger-Kernel's FusedLinearCrossEntropy: three matmul passes in all
  (logits, dh, dW), the same as eager; the backward only multiplies by the upstream scalar.
- `scale=None` (reduction "none", log-probs, DPO: the upstream gradient is per row and unknown in the forward):
  the forward keeps only lse (N,) and the backward recomputes each logits block (four passes, like
  Cut Cross-Entropy's backward).
dW accumulates in fp32 across chunks (bf16 accumulation across chunks is a known Liger precision problem).
"""

from __future__ import annotations

import torch

from ._common import RowLossOptions

# ≈128 MB of fp32 logits per chunk: CPU matmuls lose ~10–30% below ~1k rows; still small against eager's N·V.
CHUNK_ELEMENTS = 1 << 25


def chunk_rows(n: int, v: int, chunk_elements: int | None = None) -> int:
    """Rows per chunk so a (C, V) fp32 block holds about `chunk_elements` (default CHUNK_ELEMENTS) floats."""
    budget = CHUNK_ELEMENTS if chunk_elements is None else chunk_elements
    return max(1, min(n, budget // max(v, 1)))


def _scores(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, opts: RowLossOptions
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """s = softcap(h Wᵀ + b) / T as fp32 (C, V), and ∂s/∂z (C, V) when a softcap makes it non-constant."""
    z = (h @ weight.T).float()  # (C, V)
    if bias is not None:
        z += bias.float()
    dsdz = None
    if opts.logit_softcap is not None:
        c = opts.logit_softcap
        z = torch.tanh(z.div_(c))  # (C, V) holds t = tanh(z / c) now
        dsdz = 1.0 - z.square()
        if opts.temperature != 1.0:
            dsdz /= opts.temperature
        z.mul_(c)
    if opts.temperature != 1.0:
        z.div_(opts.temperature)
    return z, dsdz


def _row_loss_(s: torch.Tensor, y: torch.Tensor, opts: RowLossOptions) -> tuple[torch.Tensor, ...]:
    """s (C, V) fp32, y (C,) with ignored rows mapped to 0 → (loss, lse, sumexp), each (C,).

    Overwrites s with e = exp(s − rowmax), so one exp pass serves the loss and (p = e / sumexp) the
    gradient, with no (C, V) temporary: elementwise passes cost as much as the matmul on a CPU."""
    s_y = s.gather(1, y[:, None]).squeeze(1)
    s_sum = s.sum(dim=-1) if opts.label_smoothing else None
    m = s.amax(dim=-1)
    sumexp = s.sub_(m[:, None]).exp_().sum(dim=-1)
    lse = m + sumexp.log()
    loss = lse - (1.0 - opts.label_smoothing) * s_y
    if s_sum is not None:
        loss -= (opts.label_smoothing / s.shape[1]) * s_sum
    if opts.z_loss:
        loss += opts.z_loss * lse.square()
    return loss, lse, sumexp


def _grad_scores_(
    e: torch.Tensor,
    denom: torch.Tensor | None,
    dsdz: torch.Tensor | None,
    lse: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    opts: RowLossOptions,
) -> torch.Tensor:
    """∂(Σ_i g_i loss_i)/∂z from e (C, V) with softmax p = e / denom (denom None: e is p), in place.

    g is 0 at ignored rows. Normalisation, z-loss, g and (without softcap) 1/T fold into one row factor."""
    t = 1.0 if dsdz is not None else 1.0 / opts.temperature  # with softcap, dsdz already holds 1/T
    row = g * t
    if opts.z_loss:
        row = row * (1.0 + 2.0 * opts.z_loss * lse)
    if denom is not None:
        row = row / denom
    grad = e.mul_(row[:, None])  # (C, V)
    rows = torch.arange(y.shape[0], device=y.device)
    grad[rows, y] -= (1.0 - opts.label_smoothing) * t * g
    if opts.label_smoothing:
        grad -= ((opts.label_smoothing / grad.shape[1]) * t * g)[:, None]
    if dsdz is not None:
        grad *= dsdz
    return grad


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,  # (N, D)
        weight: torch.Tensor,  # (V, D)
        bias: torch.Tensor | None,  # (V,)
        targets: torch.Tensor,  # (N,)
        opts: RowLossOptions,
        scale: float | None,
    ) -> torch.Tensor:
        n, v = hidden.shape[0], weight.shape[0]
        valid = targets != opts.ignore_index
        y = torch.where(valid, targets, 0).long()
        needs_h, needs_w, needs_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_in_forward = scale is not None and (needs_h or needs_w or needs_b)
        dh = (
            torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
            if grad_in_forward and needs_h
            else None
        )
        dw = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if grad_in_forward and needs_w
            else None
        )
        db = (
            torch.zeros(v, dtype=torch.float32, device=weight.device) if grad_in_forward and needs_b else None
        )
        rows_loss = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse_all = torch.empty(n, dtype=torch.float32, device=hidden.device)
        step = chunk_rows(n, v)
        for a in range(0, n, step):
            b = min(a + step, n)
            s, dsdz = _scores(hidden[a:b], weight, bias, opts)  # (C, V)
            loss, lse, sumexp = _row_loss_(s, y[a:b], opts)  # s now holds exp(s − rowmax)
            rows_loss[a:b] = torch.where(valid[a:b], loss, 0.0)
            lse_all[a:b] = lse
            if grad_in_forward:
                g = valid[a:b].float() * scale  # (C,)
                grad = _grad_scores_(s, sumexp, dsdz, lse, y[a:b], g, opts).to(hidden.dtype)  # (C, V)
                if dh is not None:
                    torch.mm(grad, weight, out=dh[a:b])
                if dw is not None:
                    _accumulate_dw(dw, grad, hidden[a:b])
                if db is not None:
                    db += grad.float().sum(0)
        ctx.opts = opts
        ctx.grad_in_forward = grad_in_forward
        if grad_in_forward:
            # Cast the fp32 accumulators once, so only gradient-sized memory is held until the backward.
            dw = None if dw is None else dw.to(weight.dtype)
            db = None if db is None else db.to(bias.dtype)
            ctx.save_for_backward(dh, dw, db)
            return rows_loss.sum() * scale
        if scale is not None:  # reduced, but nothing needs a gradient
            return rows_loss.sum() * scale
        ctx.save_for_backward(hidden, weight, bias, targets, lse_all)
        return rows_loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.grad_in_forward:
            dh, dw, db = ctx.saved_tensors
            # Out of place, so a second backward (retain_graph=True) sees the same saved gradients.
            return tuple(None if t is None else t * grad_out.to(t.dtype) for t in (dh, dw, db)) + (None,) * 3
        hidden, weight, bias, targets, lse_all = ctx.saved_tensors
        opts = ctx.opts
        needs_h, needs_w, needs_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        n, v = hidden.shape[0], weight.shape[0]
        valid = targets != opts.ignore_index
        y = torch.where(valid, targets, 0).long()
        g_all = grad_out.float() * valid  # (N,) upstream gradient, 0 at ignored rows
        dh = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if needs_h else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_w else None
        db = torch.zeros(v, dtype=torch.float32, device=weight.device) if needs_b else None
        step = chunk_rows(n, v)
        for a in range(0, n, step):
            b = min(a + step, n)
            s, dsdz = _scores(hidden[a:b], weight, bias, opts)
            p = s.sub_(lse_all[a:b, None]).exp_()  # (C, V) softmax, in place
            grad = _grad_scores_(p, None, dsdz, lse_all[a:b], y[a:b], g_all[a:b], opts).to(hidden.dtype)
            if dh is not None:
                torch.mm(grad, weight, out=dh[a:b])
            if dw is not None:
                _accumulate_dw(dw, grad, hidden[a:b])
            if db is not None:
                db += grad.float().sum(0)
        return (
            dh,
            None if dw is None else dw.to(weight.dtype),
            None if db is None else db.to(bias.dtype),
            None,
            None,
            None,
        )


def _accumulate_dw(dw: torch.Tensor, grad: torch.Tensor, h: torch.Tensor) -> None:
    """dw (V, D) fp32 += gradᵀ (V, C) @ h (C, D), without a (V, D) temporary when the inputs are fp32."""
    if grad.dtype == torch.float32:
        dw.addmm_(grad.T, h)
    else:
        dw += (grad.T @ h).float()


def chunked_rows(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    opts: RowLossOptions,
) -> torch.Tensor:
    """Per-row losses (N,) fp32, 0 at ignored rows; backward recomputes the logits chunk by chunk."""
    return _ChunkedLinearCE.apply(hidden, weight, bias, targets, opts, None)


def chunked_reduced(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    opts: RowLossOptions,
    scale: float,
) -> torch.Tensor:
    """scale · Σ_i loss_i (a 0-d fp32 tensor); gradients are computed during the forward."""
    return _ChunkedLinearCE.apply(hidden, weight, bias, targets, opts, float(scale))
