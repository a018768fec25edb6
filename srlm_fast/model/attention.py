"""Attention backends behind one switch: `sdpa` (default), `flash_attn` (when importable), `reference`.

The model builds one `AttnLayout` per forward (it says which query may see which key) and every
layer calls `attend`. Three layouts cover what training, scoring and decoding need:

* causal: one sequence per row, no padding; the fastest path everywhere (SDPA/flash `is_causal`).
* masked: a boolean (B, 1, T, S) mask, for padded batches, packed sequences (documents in one row
  never see each other) and decoding against the KV cache (a query at position p sees cache slots
  0..p). Packed sequences also carry `cu_seqlens`, so flash-attn runs its varlen kernel on them.
* cached: decoding; the cache slot of a token is its position, so ragged rows need no extra mask.

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


def cache_layout(positions: Tensor, kv_len: int) -> AttnLayout:
    """Decoding against a KV cache whose slot s holds the token at position s of that row."""
    slots = torch.arange(kv_len, device=positions.device)
    mask = slots[None, None, :] <= positions[:, :, None]  # (B, T, S)
    return AttnLayout(is_causal=False, mask=mask[:, None])


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
