"""A Llama-family decoder, written to be read: RMSNorm, rotary embeddings (with Llama-3 frequency
scaling), grouped-query attention, SwiGLU MLP, optional tied embeddings.

Module names follow the Hugging Face layout (`layers.N.self_attn.q_proj`, ...) so checkpoints map
one-to-one (checkpoint.py adds the `model.` prefix). Rotary embeddings use the HF "rotate half"
convention, so HF weights load without permuting q/k.

`forward` returns the final normalised hidden states (B, T, D), never logits: the loss kernels take
the LM-head weight themselves, so training never materialises the (tokens × vocabulary) logits.
`logits()` is there for tests, evaluation and sampling.

One forward serves training, scoring, prefill and decode: with a `CacheView` it writes the new keys and values
into a static KV cache (slot = position) and attends over the cached slots (`attention.attend_cache`, which runs
CPU decode steps as batched matmuls and can read a prefix shared by every row once for all rows). For inference
the engine may give the modules packed weights from outside (`srlm_fast/engine/runtime.py`: q/k/v and gate/up
fused into one projection each, stored K-major); `Attention.qkv_proj` and `MLP.gate_up_proj` are those optional
fused projections, absent (None) in a trained or loaded model.

The model holds no parallelism code: build it on the meta device, shard it from outside (FSDP2),
then `to_empty` and `init_weights()` or load a checkpoint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srlm_fast.model import attention as attn
from srlm_fast.model import checkpoint
from srlm_fast.model.config import ModelConfig

M = TypeVar("M", bound=nn.Module)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # One lookup, not three: a parameter read is a Python `Module.__getattr__` (per-op overhead bounds decode).
        w = self.weight
        if x.dtype == torch.float32 and w.dtype == torch.float32:
            # The same ops in the same order in one call (bit-identical, tested; fewer dispatches per decode step).
            return F.rms_norm(x, w.shape, w, self.eps)
        # Normalise in fp32 and cast back before the weight, as HF Llama does (bit-compatible outputs).
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * x32.to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_inv_freq(config: ModelConfig, device: torch.device | None = None) -> Tensor:
    """Rotary inverse frequencies (head_dim / 2,), with Llama-3 scaling when configured."""
    hd = config.head_size
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64, device=device) / hd))
    s = config.rope_scaling
    if s is None:
        return inv_freq.float()
    # Llama 3: keep high frequencies, divide low ones by `factor`, interpolate smoothly in between.
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
    scaled = torch.where(mid, (1 - smooth) * inv_freq / s.factor + smooth * inv_freq, scaled)
    return scaled.float()


def rope_cos_sin(inv_freq: Tensor, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables for per-row positions (B, T) → (B, 1, T, head_dim), computed in fp32."""
    freqs = positions[..., None].float() * inv_freq  # (B, T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, hd)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


@dataclass
class KVCache:
    """A static, preallocated key/value cache: slot s of row b holds the token at position s.

    One (batch, n_kv_heads, max_len, head_dim) tensor per layer for the keys and one for the values. Because the
    slot is the position, ragged prompts need no bookkeeping: a query at position p attends to slots 0..p of its
    row. Per-layer tensors rather than one 5-D tensor: a compiled decode step can then update each in place,
    where writes through views of one big base make inductor copy the whole base every step.
    """

    k: list[Tensor]
    v: list[Tensor]

    @classmethod
    def allocate(
        cls, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str
    ) -> KVCache:
        shape = (batch, config.n_kv_heads, max_len, config.head_size)
        zeros = lambda: [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        return cls(zeros(), zeros())

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def rows(self, start: int, stop: int) -> KVCache:
        """A view of rows [start, stop) (writes go to this cache)."""
        return KVCache([t[start:stop] for t in self.k], [t[start:stop] for t in self.v])

    def copy_slots(self, dst: slice, src: slice, length: int, source: KVCache | None = None) -> None:
        """Rows `dst` get slots [0, length) of rows `src` of `source` (default: this cache); a one-row source
        broadcasts to every destination row."""
        source = self if source is None else source
        for ours, theirs in ((self.k, source.k), (self.v, source.v)):
            for a, b in zip(ours, theirs):
                a[dst, :, :length] = b[src, :, :length]

    @staticmethod
    def bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
        return 2 * config.n_layers * config.n_kv_heads * config.head_size * dtype.itemsize


@dataclass
class CacheView:
    """What one forward call does with the cache: which rows, and how many slots attention reads.

    `prefix`: a one-row cache holding slots [0, P) that every row of the call also holds (a shared prompt prefix,
    P <= every position of the call); decode steps may read those slots from it once for all rows (cascade
    attention) instead of from each row. A hint only: results equal those without it, up to rounding.
    """

    cache: KVCache
    rows: Tensor | None  # (B,) indices into the cache batch; None = all rows, in order
    kv_len: int  # attention reads slots [0, kv_len); must exceed every position in the call
    prefix: KVCache | None = None

    def __post_init__(self) -> None:
        # `write_rows` (B, 1): the cache row of each row of the call, for the K/V writes. Once per forward, not once
        # per layer: a decode step of a small model is bound by per-op overhead. A plain attribute, not a field:
        # FSDP2 moves a forward's dataclass inputs with `dataclasses.replace` over the fields, which re-runs this.
        rows = self.rows
        if rows is None:
            rows = torch.arange(self.cache.batch, device=self.cache.k[0].device)
        self.write_rows = rows[:, None]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_size
        d = config.dim
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        # q, k and v fused into one (Hq·Dh + 2·Hkv·Dh, D) projection: set only on inference copies whose weights
        # the engine packed (engine/runtime.py); q_proj/k_proj/v_proj are then None.
        self.register_module("qkv_proj", None)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        layout: attn.AttnLayout,
        backend: str,
        cache: CacheView | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        B, T, _ = x.shape
        H, Hkv, Dh = self.n_heads, self.n_kv_heads, self.head_dim
        qkv_proj = self.qkv_proj  # one `Module.__getattr__`, not two (see RMSNorm.forward)
        if qkv_proj is not None:
            qkv = qkv_proj(x).view(B, T, H + 2 * Hkv, Dh).transpose(1, 2)  # (B, H + 2·Hkv, T, Dh)
            qk = apply_rope(qkv[:, : H + Hkv], cos, sin)  # the q and k heads rotated in one go
            q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + Hkv :]
        else:
            q = self.q_proj(x).view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
            k = self.k_proj(x).view(B, T, Hkv, Dh).transpose(1, 2)  # (B, Hkv, T, Dh)
            v = self.v_proj(x).view(B, T, Hkv, Dh).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            out = self._attend_cached(q, k, v, cache, positions, layout, backend)
        else:
            out = attn.attend(q, k, v, layout, backend)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * Dh))

    def _attend_cached(self, q, k, v, cache: CacheView, positions, layout, backend) -> Tensor:
        k_all, v_all = cache.cache.k[self.layer_idx], cache.cache.v[self.layer_idx]  # (Bc, Hkv, S, Dh)
        if backend == "flash_attn" and cache.rows is None:
            return attn.flash_decode(q, k, v, k_all, v_all, positions)
        rows = cache.write_rows  # (B, 1)
        # Advanced indices (rows, positions) around a slice: the indexed view is (B, T, Hkv, Dh).
        k_all[rows, :, positions] = k.transpose(1, 2)
        v_all[rows, :, positions] = v.transpose(1, 2)
        if cache.rows is None:
            keys, values = k_all[:, :, : cache.kv_len], v_all[:, :, : cache.kv_len]
        else:
            keys, values = k_all[cache.rows, :, : cache.kv_len], v_all[cache.rows, :, : cache.kv_len]
        prefix = None
        if cache.prefix is not None:
            prefix = (cache.prefix.k[self.layer_idx][0], cache.prefix.v[self.layer_idx][0])  # (Hkv, P, Dh)
        return attn.attend_cache(q, keys, values, layout, backend, prefix)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.dim, bias=False)
        # gate and up fused into one (2·I, D) projection: inference copies only (see Attention.qkv_proj).
        self.register_module("gate_up_proj", None)

    def forward(self, x: Tensor) -> Tensor:
        gate_up_proj = self.gate_up_proj  # one `Module.__getattr__`, not two (see RMSNorm.forward)
        if gate_up_proj is not None:
            gate, up = gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cos, sin, layout, backend, cache=None, positions=None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, layout, backend, cache, positions)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, config: ModelConfig, attn_backend: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.attn_backend = attn.check_backend(attn_backend)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.dim, config.vocab_size, bias=False)
        # Not a checkpoint tensor: recomputed from the config (also after `to_empty` from meta).
        self.register_buffer("rope_inv_freq", rope_inv_freq(config), persistent=False)

    # ---- weights -------------------------------------------------------------------------------
    @property
    def lm_head_weight(self) -> Tensor:
        """The (V, D) output projection (the embedding matrix when tied)."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def init_buffers(self) -> None:
        """Recompute non-persistent buffers, e.g. after `to_empty()` from the meta device."""
        self.rope_inv_freq = rope_inv_freq(self.config, device=self.rope_inv_freq.device)

    def _apply(self, fn, recurse=True):
        # `.to(bf16)` would round the rotary frequencies; they are cheap to recompute in fp32.
        super()._apply(fn, recurse)
        self.init_buffers()
        return self

    @torch.no_grad()
    def init_weights(self, std: float = 0.02, seed: int | None = None) -> None:
        """Random init: N(0, std) for matrices, output projections scaled by 1/sqrt(2·n_layers) (GPT-2)."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.embed_tokens.weight.device).manual_seed(seed)
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0)  # RMSNorm gains
            else:
                is_out = name.endswith(("o_proj.weight", "down_proj.weight"))
                p.normal_(0.0, out_std if is_out else std, generator=gen)
        self.init_buffers()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- checkpoints (HF layout; see checkpoint.py) ---------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        attn_backend: str = "sdpa",
    ) -> Llama:
        """Load an HF Llama checkpoint directory (dtype: the checkpoint's unless given)."""
        config = checkpoint.read_model_config(directory)
        model = materialize(
            lambda: cls(config, attn_backend=attn_backend),
            device=device,
            dtype=dtype or checkpoint.checkpoint_dtype(directory),
        )
        checkpoint.load_weights(model, directory)
        return model

    def save_pretrained(self, directory: str | os.PathLike, **kwargs) -> None:
        """Write config.json + safetensors (+ tokenizer.json when `tokenizer=` is given); see
        `checkpoint.save_pretrained` for the keyword arguments."""
        checkpoint.save_pretrained(self, directory, **kwargs)

    # ---- forward -------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        *,
        positions: Tensor | None = None,
        attention_mask: Tensor | None = None,
        doc_ids: Tensor | None = None,
        cache: CacheView | None = None,
    ) -> Tensor:
        """Final normalised hidden states (B, T, D).

        input_ids: (B, T). At most one of:
          attention_mask (B, T): 1 = real token, 0 = padding (left or right); positions default to
            the count of real tokens before each one.
          doc_ids (B, T): packed documents; tokens attend only within their document and positions
            restart at 0 in each document.
          cache: incremental decoding; `positions` (B, T) are required and give the cache slots.
        """
        B, T = input_ids.shape
        if positions is not None and cache is None and int(positions.max()) >= self.config.max_seq_len:
            raise ValueError(f"position {int(positions.max())} exceeds max_seq_len={self.config.max_seq_len}")
        if sum(x is not None for x in (attention_mask, doc_ids, cache)) > 1:
            raise ValueError("pass at most one of attention_mask, doc_ids and cache")
        if cache is not None:
            if positions is None:
                raise ValueError("decoding with a KV cache needs explicit per-row positions (B, T)")
            layout = None  # built below, in the activations' dtype
        elif doc_ids is not None:
            layout = attn.packed_layout(doc_ids)
            positions = attn.positions_in_docs(doc_ids) if positions is None else positions
        elif attention_mask is not None and not bool(attention_mask.all()):
            layout = attn.padded_layout(attention_mask)
            if positions is None:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        else:
            layout = attn.causal_layout()
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        if self.config.max_seq_len < T:
            raise ValueError(
                f"sequence of {T} tokens exceeds the model's max_seq_len={self.config.max_seq_len}"
            )

        x = self.embed_tokens(input_ids)  # (B, T, D)
        if cache is not None:
            layout = attn.cache_layout(positions, cache.kv_len, x.dtype)
        cos, sin = rope_cos_sin(self.rope_inv_freq, positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, layout, self.attn_backend, cache, positions)
        return self.norm(x)

    def logits(self, input_ids: Tensor, **kwargs) -> Tensor:
        """Full logits (B, T, V) in fp32; for tests, evaluation and sampling (training never needs them)."""
        hidden = self(input_ids, **kwargs)
        return F.linear(hidden, self.lm_head_weight).float()


def build_model(
    config: ModelConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = 0,
    attn_backend: str = "sdpa",
) -> Llama:
    """Build on the meta device, materialise on `device` and randomly initialise (in fp32, then cast, so a seed
    draws the same weights in every dtype)."""
    model = materialize(lambda: Llama(config, attn_backend=attn_backend), device=device)
    model.init_weights(seed=seed)
    return model.to(dtype)


def materialize(
    make: Callable[[], M],
    *,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    prepare: Callable[[M], None] | None = None,
) -> M:
    """The one way a model comes to exist: construct it on the meta device (no memory, no init), optionally cast
    it and let `prepare` wrap or shard it (activation checkpointing, compile, `fully_shard`), then allocate it on
    `device` (only the local shards, when sharded) and recompute the non-persistent buffers. The caller fills
    the weights: `Llama.init_weights`, `checkpoint.load_weights` or a scattered full state dict.
    """
    with torch.device("meta"):
        module = make()
    if dtype is not None:
        module.to(dtype)
    if prepare is not None:
        prepare(module)
    module.to_empty(device=device)
    for m in module.modules():
        if isinstance(m, Llama):
            m.init_buffers()
    return module
