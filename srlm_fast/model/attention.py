"""Attention backends behind one switch: `sdpa` (default), `flash_attn` (when importable), `reference`.

The model builds one `AttnLayout` per forward (it says which query may see which key) and every
layer calls `attend`. Three layouts cover what training, scoring and decoding need:

* causal: one sequence per row, no padding; the fastest path everywhere (SDPA/flash `is_causal`).
* masked: a boolean (B, 1, T, S) mask, for padded batches, packed sequences (documents in one row
  never see each other) and decoding against the KV cache (a query at position p sees cache slots
  0..p). Packed sequences also carry `cu_seqlens`, so flash-attn runs its varlen kernel on them.
* cached: attention against a static KV cache (`attend_cache`); the cache slot of a token is its position,
  so ragged rows need only the (B, 1, T, S) "slot <= position" mask.

Decode steps on the CPU (one query per row, fp32) do not go through SDPA: `decode_attention` computes them as
batched matmuls over 3-D views of the cache, where SDPA's CPU kernel pays a per-call setup that dominates with a
single query. With a prefix shared by every row (the judge rubric), its keys and values are read once for all
rows from a one-row buffer and merged exactly with each row's own part (cascade attention).

`reference` is the plain softmax(QKᵀ/√d)V in fp32 that the tests hold the others to.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("sdpa", "flash_attn", "reference")


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def available_backends() -> list[str]:
    return [b for b in BACKENDS if b != "flash_attn" or flash_attn_available()]


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "flash_attn" and not flash_attn_available():
        raise RuntimeError("attention backend 'flash_attn' needs the flash-attn package and a CUDA device")
    return name


@dataclass
class AttnLayout:
    """Which key each query may attend to; built once per forward and shared by all layers."""

    is_causal: bool = True
    mask: Tensor | None = None  # (B, 1, T, S) bool, True = may attend
    bias: Tensor | None = None  # (B, 1, 1, S) additive 0 / -inf form of a one-query mask (decode matmuls)
    cu_seqlens: Tensor | None = None  # (n_docs + 1,) int32 over the flattened (B*T) tokens, packed only
    max_seqlen: int = 0


def causal_layout() -> AttnLayout:
    return AttnLayout(is_causal=True)


def padded_layout(attention_mask: Tensor) -> AttnLayout:
    """Causal attention over the valid (mask == 1) tokens of each row; padding may be left or right."""
    T = attention_mask.shape[1]
    valid = attention_mask.bool()
    idx = torch.arange(T, device=attention_mask.device)
    causal = idx[None, :] <= idx[:, None]  # (T, T): key j visible from query i
    mask = causal[None] & valid[:, None, :]  # (B, T, T)
    # A padding query sees no valid key; let it see itself so no row of the softmax is empty (an
    # all -inf row gives NaN, and NaN values would leak through 0-weights into later layers).
    mask = mask | torch.eye(T, dtype=torch.bool, device=mask.device)[None]
    return AttnLayout(is_causal=False, mask=mask[:, None])


def packed_layout(doc_ids: Tensor) -> AttnLayout:
    """Several documents per row: causal within a document, nothing across documents."""
    T = doc_ids.shape[1]
    idx = torch.arange(T, device=doc_ids.device)
    causal = idx[None, :] <= idx[:, None]
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    mask = (causal[None] & same_doc)[:, None]
    # Boundaries of the flattened (B*T) token stream for flash-attn's varlen kernel: a new document
    # starts where the id changes or a new row begins.
    flat = doc_ids.reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1]
    starts[::T] = True
    start_idx = torch.nonzero(starts).flatten()
    cu = torch.cat([start_idx, start_idx.new_tensor([flat.numel()])]).to(torch.int32)
    return AttnLayout(is_causal=False, mask=mask, cu_seqlens=cu, max_seqlen=0)


def cache_layout(positions: Tensor, kv_len: int, dtype: torch.dtype | None = None) -> AttnLayout:
    """Decoding against a KV cache whose slot s holds the token at position s of that row.

    When the call is a decode step that `decode_attention` computes (see `use_decode_matmuls`; `dtype` is the
    activations'), the layout also carries the mask as an additive bias, built once per forward for every layer.
    """
    slots = torch.arange(kv_len, device=positions.device)
    mask = (slots[None, None, :] <= positions[:, :, None])[:, None]  # (B, 1, T, S)
    bias = None
    if dtype is not None and use_decode_matmuls(positions.shape[1], positions.device, dtype):
        bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    return AttnLayout(is_causal=False, mask=mask, bias=bias)


def use_decode_matmuls(n_queries: int, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether one-query attention runs as `decode_attention`: on the CPU in fp32/fp64. On CUDA SDPA's kernels
    win, and in bf16 the matmul path's softmax would run in bf16, where SDPA's accumulates in fp32."""
    return n_queries == 1 and device.type == "cpu" and dtype in (torch.float32, torch.float64)


def positions_in_docs(doc_ids: Tensor) -> Tensor:
    """Position of each token within its document (restarts at 0 at every document boundary)."""
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    is_start = torch.ones_like(doc_ids, dtype=torch.bool)
    is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start = torch.where(is_start, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start


def attend(q: Tensor, k: Tensor, v: Tensor, layout: AttnLayout, backend: str = "sdpa") -> Tensor:
    """Attention of q (B, H, T, Dh) over k, v (B, Hkv, S, Dh) with grouped-query heads → (B, H, T, Dh)."""
    if backend == "sdpa":
        return _sdpa(q, k, v, layout)
    if backend == "flash_attn":
        return _flash(q, k, v, layout)
    if backend == "reference":
        return reference_attention(q, k, v, layout)
    raise ValueError(f"unknown attention backend {backend!r}")


def attend_cache(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: AttnLayout,
    backend: str = "sdpa",
    prefix: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Attention of q (B, H, T, Dh) over cache slots k, v (B, Hkv, S, Dh) under a `cache_layout` → (B, H, T, Dh).

    `prefix`: the (Hkv, P, Dh) keys and values of slots [0, P), which every row holds too; only a hint (the rows'
    own copies give the same result), used by the CPU decode matmuls to read them once for all rows.
    """
    if backend == "sdpa" and layout.bias is not None:  # a CPU decode step (see `cache_layout`)
        return decode_attention(q, k, v, layout.bias, prefix)
    return attend(q, k, v, layout, backend)


def decode_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor, prefix: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """One query per row, as batched matmuls over the query heads of each KV head (no repeat of K/V).

    q: (B, H, 1, Dh); k, v: (B, Hkv, S, Dh) cache views (strided: slots [0, S) of a longer cache); bias
    (B, 1, 1, S) additive. With `prefix` = the (Hkv, P, Dh) keys and values of a prefix common to every row, slots
    [0, P) are read from it once for all rows, as one matmul per KV head whose M dimension is every query of the
    batch, instead of once per row; slots [P, S) come from the rows. The two parts are merged exactly by
    normalising them with a common max (cascade attention).
    """
    B, H, _, Dh = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    P = 0 if prefix is None else prefix[0].shape[1]
    scale = Dh**-0.5
    # 3-D views (B·Hkv, S - P, Dh) of the rows' slots: `torch.bmm` reads the strided cache slice in place, where
    # a 4-D `matmul` would first copy it.
    kb = k[:, :, P:].reshape(B * Hkv, S - P, Dh)
    vb = v[:, :, P:].reshape(B * Hkv, S - P, Dh)
    s_own = torch.bmm(q.reshape(B * Hkv, G, Dh), kb.transpose(1, 2)).view(B, Hkv, G, S - P)
    s_own = s_own.mul_(scale).add_(bias[..., P:])
    if prefix is None:
        p = s_own.softmax(dim=-1).view(B * Hkv, G, S)
        return torch.bmm(p, vb).view(B, H, 1, Dh)
    pk, pv = prefix  # (Hkv, P, Dh)
    qh = q.reshape(B, Hkv, G, Dh).transpose(0, 1).reshape(Hkv, B * G, Dh)  # every query, per KV head
    s_pre = torch.bmm(qh, pk.transpose(1, 2)).mul_(scale)  # (Hkv, B·G, P)
    s_pre_b = s_pre.view(Hkv, B, G, P).permute(1, 0, 2, 3)  # the same memory seen as (B, Hkv, G, P)
    m = torch.maximum(s_pre_b.amax(-1, keepdim=True), s_own.amax(-1, keepdim=True))  # (B, Hkv, G, 1)
    s_pre_b.sub_(m).exp_()  # in place: s_pre now holds the prefix's unnormalised probabilities
    e_own = s_own.sub_(m).exp_()
    denom = s_pre_b.sum(-1, keepdim=True) + e_own.sum(-1, keepdim=True)
    o_pre = torch.bmm(s_pre, pv).view(Hkv, B, G, Dh).permute(1, 0, 2, 3)  # (B, Hkv, G, Dh)
    o_own = torch.bmm(e_own.view(B * Hkv, G, S - P), vb).view(B, Hkv, G, Dh)
    return (o_pre + o_own).div_(denom).reshape(B, H, 1, Dh)


def reference_attention(q: Tensor, k: Tensor, v: Tensor, layout: AttnLayout) -> Tensor:
    """softmax(QKᵀ/√d + mask)V in fp32, materialising the scores: the ground truth for the tests."""
    T, Dh = q.shape[2], q.shape[3]
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1).float()  # (B, H, S, Dh)
    v = v.repeat_interleave(groups, dim=1).float()
    scores = q.float() @ k.transpose(-1, -2) / math.sqrt(Dh)  # (B, H, T, S)
    if layout.is_causal:
        S = k.shape[2]
        allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    else:
        allowed = layout.mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(dim=-1) @ v).to(q.dtype)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, layout: AttnLayout) -> Tensor:
    gqa = q.shape[1] != k.shape[1]
    if layout.is_causal:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if gqa and q.is_cuda:
        # On CUDA a mask rules out the flash kernel and `enable_gqa` the memory-efficient one, leaving the math
        # path, which materialises every score. Folding the query groups into the query axis needs neither.
        return masked_gqa_as_mha(q, k, v, layout.mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=layout.mask, enable_gqa=gqa)


def masked_gqa_as_mha(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Grouped-query attention with a (B, 1, T, S) mask as plain attention over the KV heads: the G query heads
    that share KV head j become G·T queries of head j (query head h uses KV head h // G)."""
    B, H, T, Dh = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    folded = q.reshape(B, Hkv, G * T, Dh)  # row g·T + t of head j = query head j·G + g at position t
    out = F.scaled_dot_product_attention(folded, k, v, attn_mask=mask.repeat(1, 1, G, 1))
    return out.reshape(B, H, T, Dh)


def _flash(q: Tensor, k: Tensor, v: Tensor, layout: AttnLayout) -> Tensor:
    # flash-attn wants (B, T, H, Dh) and handles GQA natively. Only the layouts it has kernels for
    # go there (causal, and packed via varlen); padded and cache masks fall back to SDPA.
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if layout.is_causal:
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
        return out.transpose(1, 2)
    if layout.cu_seqlens is not None:
        B, H, T, Dh = q.shape
        max_seqlen = int((layout.cu_seqlens[1:] - layout.cu_seqlens[:-1]).max())
        flat = lambda x: x.transpose(1, 2).reshape(B * T, x.shape[1], Dh)  # (B*T, H, Dh)
        out = flash_attn_varlen_func(
            flat(q), flat(k), flat(v),
            layout.cu_seqlens, layout.cu_seqlens, max_seqlen, max_seqlen, causal=True,
        )  # fmt: skip
        return out.reshape(B, T, H, Dh).transpose(1, 2)
    return _sdpa(q, k, v, layout)


def flash_decode(
    q: Tensor, k_new: Tensor, v_new: Tensor, k_cache: Tensor, v_cache: Tensor, positions: Tensor
) -> Tensor:
    """flash-attn's KV-cache kernel: writes k_new/v_new at each row's position and attends in one call.

    q, k_new, v_new: (B, H|Hkv, T, Dh); caches: (B, Hkv, S, Dh) views; positions: (B, T) contiguous per row.
    """
    from flash_attn import flash_attn_with_kvcache

    out = flash_attn_with_kvcache(
        q.transpose(1, 2),
        k_cache.transpose(1, 2),  # (B, S, Hkv, Dh) strided view into our cache; flash writes through it
        v_cache.transpose(1, 2),
        k=k_new.transpose(1, 2),
        v=v_new.transpose(1, 2),
        cache_seqlens=positions[:, 0].to(torch.int32),
        causal=True,
    )
    return out.transpose(1, 2)
