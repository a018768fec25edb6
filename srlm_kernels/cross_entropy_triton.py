"""Triton kernels for the linear cross-entropy family: logits live only in on-chip tiles.

Forward: program (i, k) owns a block of BLOCK_N rows and the k-th contiguous slice of the vocabulary. It
walks that slice in (BLOCK_N, BLOCK_V) tiles of s = softcap(h Wᵀ + b) / T, each computed by a loop over D
with fp32 accumulation, and keeps an online logsumexp (running max m and rescaled sum of exponentials, as in
FlashAttention), the target's score s_y and (for label smoothing) Σ_j s_j. The per-slice partials, a few
floats per row and slice, are combined in torch. Splitting V over programs keeps an H100 busy when N is
small (DPO microbatches) instead of leaving SMs idle.

Backward: program (i, j) recomputes the logits tile (i, j) (Cut Cross-Entropy, Wijmans et al. 2024,
arXiv:2411.09009: recomputing is cheaper than storing N · V), turns it into ∂loss/∂z with the saved lse,
and adds its contributions  dh[i] += G W[j]  and  dW[j] += Gᵀ h[i]  with fp32 atomics, D in BLOCK_D chunks.
dh and dW accumulate in fp32 (bf16 accumulation loses small updates: the precision problem reported for
Liger-Kernel) and are rounded to the input dtype once, when complete. Row blocks whose upstream gradient is
all zero are skipped. Extra memory beyond dh and dW themselves: O(N · splits) floats of forward partials,
O(N) saved floats, a bounded fp32 scratch for one vocabulary slice of dW, and, for 16-bit inputs, an fp32
(N, D) dh, unless `low_memory` computes dh in a second pass a slice of rows at a time (see `_backward`).
The math is in `srlm_kernels._common`.

Triton interpreter (TRITON_INTERPRET=1, CPU): fp32/fp16 only (bf16 dots are wrong there); tl.tanh-free
softcap via exp, because libdevice is unavailable in the interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import RowLossOptions, interpreter_on


@triton.jit
def _scores_tile(
    H,
    W,
    B,
    rows,
    cols,
    row_mask,
    col_mask,
    D,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    softcap,
    inv_temp,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Returns (s, ∂s/∂z) for one (BLOCK_N, BLOCK_V) tile in fp32 (∂s/∂z a scalar without softcap)."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    rows = rows.to(tl.int64)  # 64-bit offsets: N · D or V · D can pass 2³¹ elements
    cols = cols.to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_mask = ds < D
        h = tl.load(
            H + rows[:, None] * stride_hn + ds[None, :] * stride_hd,
            mask=row_mask[:, None] & d_mask[None, :],
            other=0.0,
        )  # (BLOCK_N, BLOCK_D)
        w = tl.load(
            W + cols[:, None] * stride_wv + ds[None, :] * stride_wd,
            mask=col_mask[:, None] & d_mask[None, :],
            other=0.0,
        )  # (BLOCK_V, BLOCK_D)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_SOFTCAP:
        # tanh(x) = 1 − 2 / (exp(2x) + 1): saturates correctly at ±inf and needs no libdevice.
        t = 1.0 - 2.0 / (tl.exp(2.0 * acc / softcap) + 1.0)
        s = softcap * t * inv_temp
        dsdz = (1.0 - t * t) * inv_temp
    else:
        s = acc * inv_temp
        dsdz = inv_temp  # a scalar: no second (BLOCK_N, BLOCK_V) tile in registers
    return s, dsdz


@triton.jit
def _lce_fwd_kernel(
    H,
    W,
    B,
    Y,
    M_OUT,
    L_OUT,
    SY_OUT,
    SS_OUT,
    N,
    V,
    D,
    v_per_split,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    softcap,
    inv_temp,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    NEED_SUM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    y = tl.load(Y + rows, mask=row_mask, other=-1)
    m = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
    sum_exp = tl.zeros((BLOCK_N,), dtype=tl.float32)
    s_y = tl.zeros((BLOCK_N,), dtype=tl.float32)
    s_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    v_start = pid_s * v_per_split
    v_end = tl.minimum(v_start + v_per_split, V)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < v_end
        s, _ = _scores_tile(
            H, W, B, rows, cols, row_mask, col_mask, D, stride_hn, stride_hd, stride_wv, stride_wd,
            softcap, inv_temp, HAS_BIAS, HAS_SOFTCAP, BLOCK_N, BLOCK_V, BLOCK_D, DOT_PRECISION,
        )  # fmt: skip
        s_y += tl.sum(tl.where(cols[None, :] == y[:, None], s, 0.0), axis=1)
        if NEED_SUM:
            s_sum += tl.sum(tl.where(col_mask[None, :], s, 0.0), axis=1)
        s = tl.where(col_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        sum_exp = sum_exp * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m = m_new
    out = pid_s * N + rows  # partials are (num_splits, N)
    tl.store(M_OUT + out, m, mask=row_mask)
    tl.store(L_OUT + out, sum_exp, mask=row_mask)
    tl.store(SY_OUT + out, s_y, mask=row_mask)
    if NEED_SUM:
        tl.store(SS_OUT + out, s_sum, mask=row_mask)


@triton.jit
def _grad_dots(
    H, W, DH, DW, grad_in, rows, cols, row_mask, col_mask, D, v_start,
    stride_hn, stride_hd, stride_wv, stride_wd,
    COMPUTE_DH: tl.constexpr, COMPUTE_DW: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """dh += grad · W[cols] and dW[cols] += gradᵀ · h, over D in BLOCK_D chunks (fp32 atomics).

    The atomics are relaxed: nothing in the kernel reads dh, dW or db back, so they need no ordering, only
    atomicity (Triton's default, acq_rel, adds a fence to every one of the N·D·V/BLOCK_V additions)."""
    rows64 = rows.to(tl.int64)
    cols64 = cols.to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_mask = ds < D
        if COMPUTE_DH:
            w = tl.load(
                W + cols64[:, None] * stride_wv + ds[None, :] * stride_wd,
                mask=col_mask[:, None] & d_mask[None, :],
                other=0.0,
            )  # (BLOCK_V, BLOCK_D)
            dh = tl.dot(grad_in, w, input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_D)
            tl.atomic_add(
                DH + rows64[:, None] * D + ds[None, :],
                dh,
                mask=row_mask[:, None] & d_mask[None, :],
                sem="relaxed",
            )
        if COMPUTE_DW:
            h = tl.load(
                H + rows64[:, None] * stride_hn + ds[None, :] * stride_hd,
                mask=row_mask[:, None] & d_mask[None, :],
                other=0.0,
            )  # (BLOCK_N, BLOCK_D)
            dw = tl.dot(tl.trans(grad_in), h, input_precision=DOT_PRECISION)  # (BLOCK_V, BLOCK_D)
            tl.atomic_add(
                DW + (cols64 - v_start)[:, None] * D + ds[None, :],
                dw,
                mask=col_mask[:, None] & d_mask[None, :],
                sem="relaxed",
            )


@triton.jit
def _lce_bwd_kernel(
    H,
    W,
    B,
    Y,
    LSE,
    G,
    DH,
    DW,
    DB,
    N,
    V,
    D,
    v_start,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    softcap,
    inv_temp,
    z_loss2,
    target_weight,
    uniform_weight,
    filter_eps,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    COMPUTE_DH: tl.constexpr,
    COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr,
    FILTER: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_v = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    g = tl.load(G + rows, mask=row_mask, other=0.0)  # upstream gradient, 0 at ignored rows
    if tl.max(tl.abs(g), axis=0) > 0.0:  # skip row blocks that receive no gradient
        # This launch covers the vocabulary rows [v_start, V); DW holds only those rows (its row 0 is v_start).
        cols = v_start + pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        col_mask = cols < V
        s, dsdz = _scores_tile(
            H, W, B, rows, cols, row_mask, col_mask, D, stride_hn, stride_hd, stride_wv, stride_wd,
            softcap, inv_temp, HAS_BIAS, HAS_SOFTCAP, BLOCK_N, BLOCK_V, BLOCK_D, DOT_PRECISION,
        )  # fmt: skip
        lse = tl.load(LSE + rows, mask=row_mask, other=0.0)
        y = tl.load(Y + rows, mask=row_mask, other=-1)
        tile = row_mask[:, None] & col_mask[None, :]
        p = tl.exp(s - lse[:, None]) * (1.0 + z_loss2 * lse)[:, None]
        dloss = p - tl.where(cols[None, :] == y[:, None], target_weight, 0.0) - uniform_weight  # ∂loss/∂s
        grad = tl.where(tile, dloss * dsdz * g[:, None], 0.0)  # (BLOCK_N, BLOCK_V)
        if COMPUTE_DB:
            tl.atomic_add(DB + cols, tl.sum(grad, axis=0), mask=col_mask, sem="relaxed")
        grad_in = grad.to(H.dtype.element_ty)  # dots in the input dtype, fp32 accumulation
        if FILTER:
            # Gradient filtering: a tile whose every |∂loss/∂s| is below filter_eps adds nothing to dh and dW.
            # Far from the target most softmax entries are tiny, so most tiles skip both matmuls.
            biggest = tl.max(tl.max(tl.abs(tl.where(tile, dloss, 0.0)), axis=1), axis=0)  # a scalar
            if biggest >= filter_eps:
                _grad_dots(
                    H, W, DH, DW, grad_in, rows, cols, row_mask, col_mask, D, v_start,
                    stride_hn, stride_hd, stride_wv, stride_wd, COMPUTE_DH, COMPUTE_DW, BLOCK_D, DOT_PRECISION,
                )  # fmt: skip
        else:
            _grad_dots(
                H, W, DH, DW, grad_in, rows, cols, row_mask, col_mask, D, v_start,
                stride_hn, stride_hd, stride_wv, stride_wd, COMPUTE_DH, COMPUTE_DW, BLOCK_D, DOT_PRECISION,
            )  # fmt: skip


def _pow2(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(x), 1))))


def _blocks(n: int, v: int, d: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_V, BLOCK_D, num_warps). The interpreter pays per program and per loop iteration, so it
    gets large tiles. GPU tiles (bf16): 128 × 128 with BLOCK_D = 64 and 8 warps, Hopper's usual GEMM tile. Compiled
    ahead of time for sm_90 as the JIT specialises them (strides divisible by 16, so the D loop is pipelined with
    cp.async over 3 stages; tests/kernels/test_cross_entropy_triton.py): no register spills in any kernel variant,
    at most 160 KiB of shared memory (of 227), registers at the 255 cap with every option on. 4 warps spill
    ~700 bytes in the backward; BLOCK_D = 32 (the earlier choice) also compiles clean. fp32 (tests, not speed):
    64 × 64 × 16; 64 × 128 spilled 16-20 bytes in the backward. Not yet timed on a GPU: bench/tune_lce_tiles.py."""
    if interpreter_on():
        return _pow2(n, 16, 64), _pow2(v, 16, 512), _pow2(d, 16, 256), 4
    return _gpu_blocks(n, v, d, dtype)


# (BLOCK_N, BLOCK_V, BLOCK_D, num_warps, num_stages) for every GPU launch instead of the defaults below; None =
# defaults (and Triton's default num_stages). For tile sweeps (bench/tune_lce_tiles.py): any powers of two
# (≥ 16) give the same results, since masks cover the edges, but large ones can exceed shared memory or spill.
GPU_TILES_OVERRIDE: tuple[int, int, int, int, int] | None = None


def _launch_options() -> dict[str, int]:
    """Extra launch keywords: num_stages when a tile sweep sets it."""
    if GPU_TILES_OVERRIDE is None or interpreter_on():
        return {}
    return {"num_stages": GPU_TILES_OVERRIDE[4]}


def _gpu_blocks(n: int, v: int, d: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    if GPU_TILES_OVERRIDE is not None:
        return GPU_TILES_OVERRIDE[:4]
    if dtype in (torch.bfloat16, torch.float16):
        return _pow2(n, 16, 128), _pow2(v, 16, 128), _pow2(d, 16, 64), 8
    return _pow2(n, 16, 64), _pow2(v, 16, 64), _pow2(d, 16, 16), 8


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs get exact fp32 dots (TF32 would cost ~3 decimal digits); bf16/fp16 always use tensor cores.
    return "ieee" if dtype == torch.float32 else "tf32"


def _num_splits(n_blocks: int, v_blocks: int, device: torch.device) -> int:
    if interpreter_on() or device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(v_blocks, triton.cdiv(4 * sms, n_blocks)))


def _forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    opts: RowLossOptions,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss rows (N,), lse (N,)), both fp32; targets are all valid here (ignored rows were dropped)."""
    n, d = hidden.shape
    v = weight.shape[0]
    block_n, block_v, block_d, warps = _blocks(n, v, d, hidden.dtype)
    n_blocks, v_blocks = triton.cdiv(n, block_n), triton.cdiv(v, block_v)
    splits = _num_splits(n_blocks, v_blocks, hidden.device)
    v_per_split = triton.cdiv(v_blocks, splits) * block_v
    splits = triton.cdiv(v, v_per_split)  # every split non-empty
    need_sum = opts.label_smoothing > 0.0
    part = torch.empty((4 if need_sum else 3, splits, n), dtype=torch.float32, device=hidden.device)
    _lce_fwd_kernel[(n_blocks, splits)](
        hidden, weight, bias if bias is not None else hidden, targets,
        part[0], part[1], part[2], part[3] if need_sum else part[2],
        n, v, d, v_per_split,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        opts.logit_softcap or 1.0, 1.0 / opts.temperature,
        HAS_BIAS=bias is not None, HAS_SOFTCAP=opts.logit_softcap is not None, NEED_SUM=need_sum,
        BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_D=block_d, DOT_PRECISION=_dot_precision(hidden.dtype),
        num_warps=warps, **_launch_options(),
    )  # fmt: skip
    m, sum_exp = part[0], part[1]  # (splits, N)
    m_max = m.max(dim=0).values  # (N,)
    lse = m_max + torch.log((sum_exp * torch.exp(m - m_max)).sum(dim=0))
    loss = lse - (1.0 - opts.label_smoothing) * part[2].sum(dim=0)
    if need_sum:
        loss -= (opts.label_smoothing / v) * part[3].sum(dim=0)
    if opts.z_loss:
        loss += opts.z_loss * lse.square()
    return loss, lse


# fp32 scratch for the weight gradient of a 16/32-bit weight, per launch. dW must accumulate in fp32 (summing
# thousands of bf16 tile products in bf16 is where chunked peers lose precision), but a full fp32 copy of dW
# doubles the backward's memory at a large head (2.1 GB for 128256 × 4096). So the vocabulary is covered in
# slices whose fp32 dW fits this budget; each slice is rounded into the output dW once, when it is complete.
# `low_memory` does the same for dh with slices of rows (then dh needs a pass of its own over the vocabulary).
DW_SCRATCH_BYTES = 64 << 20
DH_SCRATCH_BYTES = 64 << 20


def _dw_slice_rows(v: int, d: int, block_v: int, weight_dtype: torch.dtype) -> int:
    """Vocabulary rows per backward launch: all of them for an fp32 weight (dW accumulates in place)."""
    if weight_dtype == torch.float32:
        return v
    rows = max(block_v, DW_SCRATCH_BYTES // (4 * d) // block_v * block_v)
    return min(rows, triton.cdiv(v, block_v) * block_v)


def _dh_slice_rows(n: int, d: int, block_n: int) -> int:
    """Rows of hidden per launch of the low-memory dh pass: a multiple of BLOCK_N whose fp32 dh fits the budget."""
    rows = max(block_n, DH_SCRATCH_BYTES // (4 * d) // block_n * block_n)
    return min(rows, triton.cdiv(n, block_n) * block_n)


def _dh_in_row_slices(opts: RowLossOptions, dtype: torch.dtype) -> bool:
    """Whether dh gets its own pass, a slice of rows at a time. An fp32 dh accumulates in the output itself,
    so the one-pass backward has no fp32 copy of it to save: `low_memory` changes nothing there."""
    return opts.low_memory and dtype != torch.float32


_Saved = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]


def _launch_backward(
    saved: _Saved,
    opts: RowLossOptions,
    dh: torch.Tensor | None,
    dw: torch.Tensor | None,
    db: torch.Tensor | None,
    v0: int,
    v1: int,
) -> None:
    """One launch over every row of `saved` = (hidden, weight, bias, targets, lse, g) and the vocabulary rows
    [v0, v1): adds into the fp32 buffers dh (rows of hidden), dw (rows v0..v1 of the weight: its row 0 is v0) and
    db (the whole vocabulary)."""
    hidden, weight, bias, targets, lse, g = saved
    n, d = hidden.shape
    block_n, block_v, block_d, warps = _blocks(n, weight.shape[0], d, hidden.dtype)
    unused = g  # any fp32 pointer: the kernel never touches a buffer whose COMPUTE_* flag is off
    _lce_bwd_kernel[(triton.cdiv(n, block_n), triton.cdiv(v1 - v0, block_v))](
        hidden, weight, bias if bias is not None else hidden, targets, lse, g,
        dh if dh is not None else unused, dw if dw is not None else unused, db if db is not None else unused,
        n, v1, d, v0,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        opts.logit_softcap or 1.0, 1.0 / opts.temperature,
        2.0 * opts.z_loss, 1.0 - opts.label_smoothing, opts.label_smoothing / weight.shape[0],
        opts.grad_filter_eps,
        HAS_BIAS=bias is not None, HAS_SOFTCAP=opts.logit_softcap is not None,
        COMPUTE_DH=dh is not None, COMPUTE_DW=dw is not None, COMPUTE_DB=db is not None,
        FILTER=opts.grad_filter_eps > 0.0,
        BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_D=block_d, DOT_PRECISION=_dot_precision(hidden.dtype),
        num_warps=warps, **_launch_options(),
    )  # fmt: skip


def _vocabulary_pass(
    saved: _Saved, opts: RowLossOptions, dh: torch.Tensor | None, db: torch.Tensor | None, need_dw: bool
) -> torch.Tensor | None:
    """Launches over vocabulary slices: returns dW (fp32 scratch of at most `DW_SCRATCH_BYTES` per slice, rounded
    into the weight's dtype once the slice is complete) and adds into the fp32 buffers dh and db when given.
    The scratch dies with this function's frame, before any later pass allocates its own."""
    hidden, weight = saved[0], saved[1]
    n, d = hidden.shape
    v = weight.shape[0]
    _, block_v, _, _ = _blocks(n, v, d, hidden.dtype)
    in_place = weight.dtype == torch.float32  # fp32 dW accumulates in the output itself, slice by slice
    dw = scratch = None
    slice_rows = v
    if need_dw:
        slice_rows = _dw_slice_rows(v, d, block_v, weight.dtype)
        if in_place:
            dw = torch.zeros((v, d), dtype=torch.float32, device=weight.device)
        else:
            dw = torch.empty((v, d), dtype=weight.dtype, device=weight.device)
            scratch = torch.empty((slice_rows, d), dtype=torch.float32, device=weight.device)
    for v0 in range(0, v, slice_rows):
        v1 = min(v, v0 + slice_rows)
        dw_slice = None
        if dw is not None:
            dw_slice = dw[v0:v1] if scratch is None else scratch[: v1 - v0].zero_()
        _launch_backward(saved, opts, dh, dw_slice, db, v0, v1)
        if scratch is not None:
            dw[v0:v1].copy_(dw_slice)  # rounded to the weight's dtype once, after the full sum
    return dw


def _row_pass(saved: _Saved, opts: RowLossOptions) -> torch.Tensor:
    """`low_memory`'s dh: launches over slices of rows, each against the whole vocabulary, into an fp32 scratch
    of at most `DH_SCRATCH_BYTES` that is rounded into dh (the input dtype) once the slice is complete."""
    hidden, weight, bias, targets, lse, g = saved
    n, d = hidden.shape
    v = weight.shape[0]
    block_n, _, _, _ = _blocks(n, v, d, hidden.dtype)
    rows = _dh_slice_rows(n, d, block_n)
    dh = torch.empty_like(hidden)
    scratch = torch.empty((rows, d), dtype=torch.float32, device=hidden.device)
    for n0 in range(0, n, rows):
        part = slice(n0, min(n, n0 + rows))
        dh_slice = scratch[: part.stop - n0].zero_()
        sliced = (hidden[part], weight, bias, targets[part], lse[part], g[part])
        _launch_backward(sliced, opts, dh_slice, None, None, 0, v)
        dh[part].copy_(dh_slice)  # every vocabulary tile of these rows is in: round once
    return dh


def _backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    lse: torch.Tensor,
    g: torch.Tensor,
    opts: RowLossOptions,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of hidden, weight and bias.

    One pass (default): the vocabulary pass adds each tile's share of dh too, which therefore sums over the whole
    vocabulary in an fp32 (N, D) buffer. With `low_memory` (16-bit inputs) that pass leaves dh out and a second
    one computes it a slice of rows at a time, recomputing every logits tile once more. The two passes' scratch
    buffers are never alive together.
    """
    saved = (hidden, weight, bias, targets, lse, g)
    f32 = {"dtype": torch.float32, "device": hidden.device}
    split_dh = needs[0] and _dh_in_row_slices(opts, hidden.dtype)
    dh = torch.zeros(hidden.shape, **f32) if needs[0] and not split_dh else None
    db = torch.zeros((weight.shape[0],), **f32) if needs[2] else None
    dw = None
    if needs[1] or dh is not None or db is not None:
        dw = _vocabulary_pass(saved, opts, dh, db, needs[1])
    if split_dh:
        dh = _row_pass(saved, opts)
    return (
        None if dh is None else dh.to(hidden.dtype),
        dw,
        None if db is None else db.to(bias.dtype),
    )


class _TritonLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, opts: RowLossOptions) -> torch.Tensor:
        loss, lse = _forward(hidden, weight, bias, targets, opts)
        loss = torch.where(targets >= 0, loss, 0.0)  # ignored rows (target −1) contribute 0
        ctx.opts = opts
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        return loss

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if not any(needs):
            return None, None, None, None, None
        g = torch.where(targets >= 0, grad_rows.float(), 0.0).contiguous()  # (N,)
        dh, dw, db = _backward(hidden, weight, bias, targets, lse, g, ctx.opts, needs)
        return dh, dw, db, None, None


def triton_rows(
    hidden: torch.Tensor,  # (N, D)
    weight: torch.Tensor,  # (V, D)
    bias: torch.Tensor | None,  # (V,)
    targets: torch.Tensor,  # (N,), every target valid (the dispatcher drops ignored rows)
    opts: RowLossOptions,
) -> torch.Tensor:
    """Per-row losses (N,) fp32 through the Triton kernels."""
    if hidden.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"impl='triton' supports fp32, fp16 and bf16 inputs, got {hidden.dtype}")
    valid = targets != opts.ignore_index
    targets = torch.where(valid, targets, -1).to(torch.int32).contiguous()  # -1 never matches a column
    return _TritonLinearCE.apply(hidden, weight, bias, targets, opts)
