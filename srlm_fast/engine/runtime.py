"""How the generator runs the model: `Llama.forward` itself, on packed inference weights or the model's own.

There is one network, `srlm_fast.model.llama.Llama`, and one forward. What this module adds is applied from
outside the model, as a runtime conversion:

* `pack_for_inference(model)` builds an inference copy of the model: the same `Llama` class, sharing the
  embedding, norms and rotary buffer with the model, whose projections are replaced by packed ones: q/k/v fused into
  one `qkv_proj`, gate/up into one `gate_up_proj` (fewer, larger matmuls: a decode step of a small model is
  dominated by per-op overhead), and every projection weight, the LM head included, stored K-major ((in, out)
  contiguous, `KMajorLinear`), the layout MKL's GEMM runs fastest at decode shapes. The model itself is never
  modified, so a trainer can keep training it; the copy costs a second copy of the projection weights.
* `Runner` keeps that copy in step with the model (it is rebuilt when any parameter was replaced or updated in
  place: optimizer steps bump the tensors' version counters), and optionally compiles the decode step with
  `torch.compile(mode="reduce-overhead")` (CUDA graphs) at static shapes.

FSDP-sharded models run unpacked (their parameters only exist inside forward): `Runner(model, pack=False)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srlm_fast.model.llama import CacheView, KVCache, Llama


def weights_version(model: nn.Module) -> tuple:
    """Changes whenever a parameter is replaced or updated in place (in-place ops bump version counters)."""
    return tuple((id(p), p._version) for p in model.parameters())


class KMajorLinear(nn.Module):
    """A bias-free projection x @ Wᵀ whose weight is stored transposed, (in, out) contiguous ("K-major").

    `forward` is one `x @ weight_t`: the same product as `nn.Linear` on W, in the layout MKL multiplies fastest at
    decode shapes, and without `F.linear`'s extra dispatches (a decode step of a small model is op-bound).
    """

    def __init__(self, weight: Tensor) -> None:  # weight: (out, in), as nn.Linear holds it
        super().__init__()
        self.weight_t = nn.Parameter(weight.detach().t().contiguous(), requires_grad=False)  # (in, out)

    @property
    def weight(self) -> Tensor:
        """The (out, in) weight, a view of the K-major storage."""
        return self.weight_t.t()

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight_t

    # Called as forward itself, without `nn.Module.__call__`'s hook dispatch (~2 µs of Python a call, 17 calls per
    # decode step): an inference-only leaf of the engine's own copy, which nothing hooks (FSDP shards the model's
    # blocks, never this copy; the copy is rebuilt, not wrapped).
    __call__ = forward


@torch.no_grad()
def pack_for_inference(model: Llama) -> Llama:
    """An inference copy of `model` with packed, K-major projections (see the module docstring).

    Embedding, norm weights and the rotary buffer are the model's own tensors; every projection is a new packed
    copy. Its forward is `Llama.forward`: prefill gives bit-identical hidden states in fp32 (tested).
    """
    with torch.device("meta"):
        packed = Llama(model.config, attn_backend=model.attn_backend)
    packed.train(model.training)
    packed.embed_tokens.weight = model.embed_tokens.weight
    packed.norm.weight = model.norm.weight
    packed.rope_inv_freq = model.rope_inv_freq
    for ours, theirs in zip(packed.layers, model.layers):
        ours.input_layernorm.weight = theirs.input_layernorm.weight
        ours.post_attention_layernorm.weight = theirs.post_attention_layernorm.weight
        a, mlp = theirs.self_attn, theirs.mlp
        qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])  # (Hq·Dh + 2·Hkv·Dh, D)
        ours.self_attn.qkv_proj = KMajorLinear(qkv)
        ours.self_attn.q_proj = ours.self_attn.k_proj = ours.self_attn.v_proj = None
        ours.self_attn.o_proj = KMajorLinear(a.o_proj.weight)
        ours.mlp.gate_up_proj = KMajorLinear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))  # (2I, D)
        ours.mlp.gate_proj = ours.mlp.up_proj = None
        ours.mlp.down_proj = KMajorLinear(mlp.down_proj.weight)
    # Also when tied: the embedding keeps its (V, D) table for lookups, the head gets a K-major copy.
    packed.lm_head = KMajorLinear(model.lm_head_weight)
    bind_attributes(packed)
    return packed


def bind_attributes(module: nn.Module) -> None:
    """Make every submodule and parameter of `module`'s tree a plain instance attribute as well.

    `nn.Module` keeps them in dicts that attribute reads reach only through its Python `__getattr__` fallback,
    about a microsecond each; a decode step of `Llama.forward` makes ~64 such reads (`self.self_attn`,
    `self.weight`, ...), which is most of what its Python costs over a hand-written loop. The inference copy is
    never restructured (`Runner.refresh` builds a new one instead), so the bindings stay true; reassigning a
    parameter or submodule through `nn.Module.__setattr__` drops its binding, but moving the copy (`.to()`,
    `to_empty`) may replace parameters behind it: pack a new copy instead. Buffers stay unbound (the model
    recomputes its rotary buffer after every `.to()`; it is read once per forward).
    """
    for m in module.modules():
        vars(m).update(m._modules)
        vars(m).update(m._parameters)


class Runner:
    """The generator's handle on the forward: `Llama.forward` against a cache, on packed weights or the model's.

    Args:
        model: the model (never modified).
        pack: run an inference copy with packed weights (`pack_for_inference`), rebuilt by `refresh()` when the
            model's weights changed. Needs unsharded weights.
        compile_decode: compile the decode step (CUDA graphs on CUDA); shapes must then be static.
        lm_head: the (V, D) head weight for `logits` when not packed (the generator gathers a sharded one once
            per call); default the model's.
    """

    # Compiled versions of the decode step one process may need: one per (rows, attended-length bucket), and the
    # buckets are powers of two from 64 to max_len (8 of them at 8192), times the row counts of the engines a
    # process builds. Dynamo keeps 8 versions of a frame by default and runs every further shape *uncompiled*,
    # with one log line, so the limit is raised (globally: dynamo has no per-function limit).
    RECOMPILE_LIMIT = 64

    def __init__(
        self,
        model: Llama,
        *,
        pack: bool = False,
        compile_decode: bool = False,
        lm_head: Callable[[], Tensor] | None = None,
    ) -> None:
        self.model = model
        self.pack = pack
        self.net = model  # what forward runs: the model, or its packed copy
        self._lm_head = lm_head or (lambda: self.model.lm_head_weight)
        self._versions: tuple | None = None
        self._decode = self._forward
        if compile_decode:
            import torch._dynamo.config as dynamo_config

            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, self.RECOMPILE_LIMIT)
            self._decode = torch.compile(self._forward, mode="reduce-overhead", dynamic=False)
        self.refresh()

    def refresh(self) -> None:
        """Re-pack the weights if any parameter was replaced or updated in place since the last pack."""
        if not self.pack:
            return
        versions = weights_version(self.model)
        if versions != self._versions:
            self.net = None  # free the old copy first
            self.net = pack_for_inference(self.model)
            self._versions = versions

    def _forward(
        self,
        ids: Tensor,
        positions: Tensor,
        k: list[Tensor],
        v: list[Tensor],
        kv_len: int,
        prefix: KVCache | None = None,
    ) -> Tensor:
        return self.net(ids, positions=positions, cache=CacheView(KVCache(k, v), None, kv_len, prefix))

    def forward(
        self,
        ids: Tensor,
        positions: Tensor,
        cache: KVCache,
        kv_len: int,
        decode: bool,
        prefix: KVCache | None = None,
    ) -> Tensor:
        """Hidden states (B, T, D) of `ids` at `positions`, writing their K/V into `cache` (slot = position).

        `prefix`: a one-row cache of slots every row also holds (see `CacheView.prefix`); decode steps may read
        it once for all rows.
        """
        fn = self._decode if decode else self._forward
        return fn(ids, positions, cache.k, cache.v, kv_len, prefix)

    def logits(self, hidden: Tensor) -> Tensor:
        """fp32 logits (…, V) of final hidden states."""
        if self.pack:
            return self.net.lm_head(hidden).float()  # the K-major head
        return F.linear(hidden, self._lm_head()).float()
