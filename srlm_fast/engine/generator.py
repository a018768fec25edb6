"""KV-cached batched sampling: continuous batching over a static cache, shared prefixes, n samples per prefill.

How a `Generator.generate` call runs:

* One static KV cache of `rows × max_len` slots is allocated once (rows come from a memory budget). The slot of a
  token is its position, so ragged prompts need no mask bookkeeping: a row simply attends to its slots ≤ position.
* **Active rows are always a contiguous prefix** `[0, B)` of the cache. When a row finishes, the highest active row
  is moved into the hole (a copy of its filled slots, ~1 MB for the debug model), so a decode step works on a plain
  view `cache[:, :B]`: no gather of the cache, no compute on dead rows, and static shapes are easy on GPU.
* **Continuous batching**: whenever rows are free, the next waiting requests are prefilled into them (one batched,
  right-padded forward), so a short answer never waits for a long one.
* The **n samples of a request share one prefill**: the prompt is prefilled into one row and its slots are copied
  into the sibling rows; all siblings sample their first token from the same logits with different seeds.
* A **shared prefix** (the longest common token prefix of all requests in the call, e.g. the judge rubric) is
  prefilled once into a side buffer and copied into each new row; only the suffix is computed per request. The
  buffer is kept across calls, so repeated judge calls with the same rubric pay for it once. The fast runner's
  decode steps also *attend* to it once for all rows (cascade attention: the prefix part of every row's
  attention is one matmul against the buffer, merged exactly with the row's own part).
* Randomness is counter-based (`sampling.sample`: a hash of (seed, step)), so a request's samples do not depend on
  which other requests shared its batch. Sample j of a request uses `sample_seed(seed, j)`; step = token index.

Two ways to run the network (`runner=`):

* `"fast"` (default on CPU): a lean re-implementation of the Llama forward on the model's own weights, with q/k/v
  and gate/up projections packed into one matmul each and rotary tables precomputed. On this 2-core CPU the model
  is tiny and the step is dominated by per-op overhead and small matmuls, so fewer, larger matmuls win; weights
  are stored transposed (K-major), which MKL multiplies faster at these shapes, and a decode step computes its
  attention as two batched matmuls instead of the CPU flash kernel. Prefill gives bit-identical hidden states to
  `Llama.forward` in fp32; decode steps agree to rounding (both tested). The packed weights are a second copy of
  the model (fine at the CPU sizes this runner is for). They are rebuilt when any parameter changes (in-place
  optimizer steps bump the tensors' version counters), so a trainer can update the model between calls.
* `"model"`: `Llama.forward` with a `CacheView`. Required for FSDP-sharded models (their parameters only exist
  inside forward); default on CUDA, where the decode step is optionally compiled with
  `torch.compile(mode="reduce-overhead")` (CUDA graphs) at static shapes: all `rows` decode every step and the
  attended length is bucketed to powers of two. That path is untested on real hardware in CI.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from srlm_fast.engine import sampling
from srlm_fast.model.llama import CacheView, KVCache, Llama, apply_rope

FinishReason = Literal["stop", "length"]
Request = Sequence[int] | str

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample `index` of a request with `seed` (sample 0 keeps the seed, so n=1 and n>1 agree on it)."""
    if index == 0:
        return seed
    h = _splitmix64((seed & _MASK64) ^ _splitmix64(index))
    return h - (1 << 64) if h >= 1 << 63 else h  # as signed int64


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request. `temperature=0` is greedy; `top_k=0` and `top_p=1` are off.

    `stop` strings end a sample when its decoded text contains one (the text is cut right before it, unless
    `include_stop_str_in_output`); `stop_token_ids` end it at that token (the token is kept in `token_ids`, never
    in `text`). Unless `ignore_eos`, the tokenizer's end-of-turn tokens (or the model config's eos ids) are stop
    tokens too. `seed=None` draws a seed from torch's global RNG at `generate()` time.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: bool = False
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.max_new_tokens < 0:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0 or math.isnan(self.temperature):
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be >= 0, got {self.top_k}")
        if any(not s for s in self.stop):
            raise ValueError("SamplingParams.stop strings must be non-empty")


@dataclass
class Completion:
    """One sample of a request."""

    index: int  # which of the request's n samples
    token_ids: list[int]
    text: str | None  # None without a tokenizer
    finish_reason: FinishReason
    stop_reason: str | int | None = None  # the stop string or stop token that ended it
    logprobs: list[float] | None = None  # log p(token) under the model (T = 1, unfiltered), per token


@dataclass
class GenerationResult:
    """The outcome of one request, in the order the requests were given."""

    request_index: int
    prompt_token_ids: list[int]
    samples: list[Completion]

    @property
    def text(self) -> str | None:
        return self.samples[0].text

    @property
    def texts(self) -> list[str | None]:
        return [s.text for s in self.samples]

    @property
    def token_ids(self) -> list[int]:
        return self.samples[0].token_ids


@dataclass
class _Seq:
    """Book-keeping of one sample while it runs."""

    req: int
    index: int
    prompt: list[int]
    params: SamplingParams
    seed: int
    stop_ids: frozenset[int]
    max_new: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    finish: FinishReason | None = None
    stop_reason: str | int | None = None
    text: str | None = None
    checked_chars: int = 0  # stop-string search resumes near here


@dataclass
class _Group:
    """A request waiting for rows: its samples not yet admitted."""

    req: int
    prompt: list[int]
    seqs: deque[_Seq]


# ---- network runners -----------------------------------------------------------------------------------------------


def _weights_version(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter is replaced or updated in place (in-place ops bump version counters)."""
    return tuple((id(p), p._version) for p in model.parameters())


class _ModelRunner:
    """Runs `Llama.forward` against a cache view (works for FSDP-sharded models; compiled on CUDA when asked)."""

    # Compiled versions of the decode step one process may need: one per (rows, attended-length bucket), and the
    # buckets are powers of two from 64 to max_len (8 of them at 8192), times the row counts of the engines a
    # process builds. Dynamo keeps 8 versions of a frame by default and runs every further shape *uncompiled*,
    # with one log line, so the limit is raised (globally: dynamo has no per-function limit).
    RECOMPILE_LIMIT = 64

    def __init__(self, model: Llama, compile_decode: bool, lm_head: Callable[[], Tensor]) -> None:
        self.model = model
        self._lm_head = lm_head  # the (V, D) head weight, gathered once per call when the model is sharded
        self._decode = self._forward
        if compile_decode:
            import torch._dynamo.config as dynamo_config

            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, self.RECOMPILE_LIMIT)
            self._decode = torch.compile(self._forward, mode="reduce-overhead", dynamic=False)

    def _forward(
        self, ids: Tensor, positions: Tensor, k: list[Tensor], v: list[Tensor], kv_len: int
    ) -> Tensor:
        return self.model(ids, positions=positions, cache=CacheView(KVCache(k, v), None, kv_len))

    def forward(
        self,
        ids: Tensor,
        positions: Tensor,
        cache: KVCache,
        kv_len: int,
        decode: bool,
        shared: KVCache | None = None,
    ) -> Tensor:
        # `shared` is a hint (the rows' prefix slots also hold it); the model's attention reads the rows' copies.
        fn = self._decode if decode else self._forward
        return fn(ids, positions, cache.k, cache.v, kv_len)

    def logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self._lm_head()).float()

    def refresh(self) -> None:
        pass


@dataclass
class _Packed:
    """One layer's weights, transposed to (in, out) and packed: `x @ w` with a K-major weight measures 20-30%
    faster than `F.linear` at decode shapes with MKL on this CPU (the LM head most of all)."""

    ln1: Tensor
    wqkv: Tensor  # (D, Hq·Dh + 2·Hkv·Dh)
    wo: Tensor  # (Hq·Dh, D)
    ln2: Tensor
    wgu: Tensor  # (D, 2·I)
    wdown: Tensor  # (I, D)


class _FastRunner:
    """A lean Llama forward with packed projections; bit-identical to `Llama.forward` in fp32 (see tests)."""

    def __init__(self, model: Llama, max_len: int) -> None:
        self.model = model
        self.max_len = max_len
        self._versions: tuple | None = None
        self.layers: list[_Packed] = []
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-pack the weights if any parameter was replaced or updated in place since the last pack."""
        versions = _weights_version(self.model)
        if versions == self._versions:
            return
        m = self.model
        self.layers = []
        for layer in m.layers:
            a, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                _Packed(
                    ln1=layer.input_layernorm.weight,
                    wqkv=torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).t().contiguous(),
                    wo=a.o_proj.weight.t().contiguous(),
                    ln2=layer.post_attention_layernorm.weight,
                    wgu=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).t().contiguous(),
                    wdown=mlp.down_proj.weight.t().contiguous(),
                )
            )
        self.lm_head = m.lm_head_weight.t().contiguous()  # (D, V)
        # Rotary tables for every slot, computed exactly as `rope_cos_sin` does (fp32 product, then cos/sin).
        pos = torch.arange(self.max_len, device=m.rope_inv_freq.device)
        freqs = pos[:, None].float() * m.rope_inv_freq  # (S, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (S, hd)
        dtype = m.embed_tokens.weight.dtype
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)
        self._versions = versions

    def _rms(self, x: Tensor, w: Tensor) -> Tensor:
        # Same op order as model.RMSNorm so results are bit-identical.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.model.config.norm_eps)
        return w * x32.to(x.dtype)

    def _decode_attention(
        self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, shared: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """One query per row as batched matmuls over the query heads of each KV head (no repeat of K/V).

        At decode shapes this measures ~3x faster than the CPU flash kernel of `scaled_dot_product_attention`,
        whose per-call setup dominates when there is a single query.

        With `shared` = the (Hkv, P, Dh) keys and values of a prefix common to every row (the judge rubric), slots
        [0, P) are read from it once for all rows, as one matmul per KV head whose M dimension is every query
        of the batch, instead of once per row; slots [P, S) come from the rows. The two parts are merged exactly
        by normalising them with a common max (cascade attention).
        """
        B, H, _, Dh = q.shape
        Hkv, S = k.shape[1], k.shape[2]
        G = H // Hkv
        P = 0 if shared is None else shared[0].shape[1]
        scale = Dh**-0.5
        # 3-D views (B·Hkv, ·, Dh) of the rows' slots: `torch.bmm` reads the strided cache slice in place, where
        # a 4-D `matmul` would first copy it (measured 2x slower here).
        kb = k[:, :, P:].reshape(B * Hkv, S - P, Dh)
        vb = v[:, :, P:].reshape(B * Hkv, S - P, Dh)
        s_own = torch.bmm(q.reshape(B * Hkv, G, Dh), kb.transpose(1, 2)).view(B, Hkv, G, S - P)
        s_own = s_own.mul_(scale).add_(bias[..., P:])
        if shared is None:
            p = s_own.softmax(dim=-1).view(B * Hkv, G, S)
            return torch.bmm(p, vb).view(B, H, 1, Dh)
        pk, pv = shared  # (Hkv, P, Dh)
        qh = q.reshape(B, Hkv, G, Dh).transpose(0, 1).reshape(Hkv, B * G, Dh)  # every query, per KV head
        s_pre = torch.bmm(qh, pk.transpose(1, 2)).mul_(scale)  # (Hkv, B·G, P)
        s_pre_b = s_pre.view(Hkv, B, G, P).permute(1, 0, 2, 3)  # the same memory seen as (B, Hkv, G, P)
        m = torch.maximum(s_pre_b.amax(-1, keepdim=True), s_own.amax(-1, keepdim=True))  # (B, Hkv, G, 1)
        s_pre_b.sub_(m).exp_()  # in place: s_pre now holds the prefix's unnormalised probabilities
        e_own = s_own.sub_(m).exp_()
        denom = s_pre_b.sum(-1, keepdim=True) + e_own.sum(-1, keepdim=True)
        o_pre = torch.bmm(s_pre, pv).view(Hkv, B, G, Dh).permute(1, 0, 2, 3)
        o_own = torch.bmm(e_own.view(B * Hkv, G, S - P), vb).view(B, Hkv, G, Dh)
        return (o_pre + o_own).div_(denom).reshape(B, H, 1, Dh)

    def logits(self, hidden: Tensor) -> Tensor:
        return (hidden @ self.lm_head).float()

    def forward(
        self,
        ids: Tensor,
        positions: Tensor,
        cache: KVCache,
        kv_len: int,
        decode: bool,
        shared: KVCache | None = None,
    ) -> Tensor:
        """Hidden states (B, T, D) of `ids` at `positions`, writing their K/V into `cache` (slot = position).

        `shared`: a one-row cache holding a prefix that every row also starts with; decode steps read those slots
        from it (see `_decode_attention`). Prefill ignores it (the rows hold their own copy of the prefix).
        """
        c = self.model.config
        B, T = ids.shape
        H, Hkv, Dh = c.n_heads, c.n_kv_heads, c.head_size
        nq, nk = H * Dh, Hkv * Dh
        x = F.embedding(ids, self.model.embed_tokens.weight)  # (B, T, D)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # (B, 1, T, Dh)
        slots = torch.arange(kv_len, device=ids.device)
        mask = (slots[None, None, :] <= positions[:, :, None])[:, None]  # (B, 1, T, S)
        bias = None
        if T == 1:  # additive mask of the decode attention, one per row: (B, 1, 1, S)
            bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        rows = torch.arange(B, device=ids.device)[:, None]  # (B, 1)
        for i, w in enumerate(self.layers):
            h = self._rms(x, w.ln1)
            qkv = h @ w.wqkv  # (B, T, nq + 2 nk)
            q = qkv[..., :nq].view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
            k = qkv[..., nq : nq + nk].view(B, T, Hkv, Dh).transpose(1, 2)  # (B, Hkv, T, Dh)
            v = qkv[..., nq + nk :].view(B, T, Hkv, Dh)  # (B, T, Hkv, Dh): the layout the cache write wants
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            k_all, v_all = cache.k[i], cache.v[i]  # (B, Hkv, S_max, Dh)
            k_all[rows, :, positions] = k.transpose(1, 2)
            v_all[rows, :, positions] = v
            k_all, v_all = k_all[:, :, :kv_len], v_all[:, :, :kv_len]
            if T == 1:
                pre = None if shared is None else (shared.k[i][0], shared.v[i][0])
                o = self._decode_attention(q, k_all, v_all, bias, pre)
            else:
                o = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, enable_gqa=Hkv != H)
            x = x + o.transpose(1, 2).reshape(B, T, nq) @ w.wo
            h = self._rms(x, w.ln2)
            gate, up = (h @ w.wgu).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ w.wdown
        return self._rms(x, self.model.norm.weight)


# ---- the generator -------------------------------------------------------------------------------------------------


def _has_dtensor(model: torch.nn.Module) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


class Generator:
    """Batched, KV-cached sampling from a `Llama` (see the module docstring for how it works).

    Args:
        model: the model; put it in eval mode and on its device first.
        tokenizer: optional `srlm_fast.tokenizer.Tokenizer`: lets requests be strings, fills `Completion.text`,
            enables stop strings and adds the chat template's end-of-turn ids to the stop tokens.
        max_batch: most rows (sequences) decoded at once.
        max_len: cache slots per row = the longest prompt + completion; default min(model max_seq_len, 8192).
        memory_budget_bytes: cap on the KV cache; rows = min(max_batch, budget // bytes per row). Default: 4 GiB on
            CPU, half of the free memory on CUDA.
        prefix_reuse: prefill the requests' longest common prefix once (when >= `min_prefix_tokens`).
        runner: "fast" (packed CPU forward), "model" (`Llama.forward`), or None = "model" for sharded models and
            CUDA, else "fast".
        compile: compile the decode step with CUDA graphs (static shapes); None = on for CUDA with the model runner.
        kv_bucket: attend over the used slots rounded up to a multiple of this (CPU); powers of two when compiled.
        prefill_tokens: most (padded) tokens in one batched prefill forward, bounding activation memory.
        sampler_impl: passed to `sampling.sample` ("auto" uses the native op when it builds).
    """

    def __init__(
        self,
        model: Llama,
        tokenizer=None,
        *,
        max_batch: int = 64,
        max_len: int | None = None,
        memory_budget_bytes: int | None = None,
        prefix_reuse: bool = True,
        min_prefix_tokens: int = 16,
        runner: Literal["fast", "model"] | None = None,
        compile: bool | None = None,
        kv_bucket: int = 32,
        prefill_tokens: int = 8192,
        sampler_impl: sampling.Impl = "auto",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config
        self.device = model.embed_tokens.weight.device
        self.dtype = model.embed_tokens.weight.dtype
        self.max_len = min(max_len or min(self.config.max_seq_len, 8192), self.config.max_seq_len)
        self.prefix_reuse = prefix_reuse
        self.min_prefix_tokens = max(1, min_prefix_tokens)
        self.kv_bucket = max(1, kv_bucket)
        self.prefill_tokens = prefill_tokens
        self.sampler_impl = sampler_impl
        self.sharded = sharded = _has_dtensor(model)  # FSDP-sharded: forward calls are collectives
        if runner is None:
            runner = "model" if sharded or self.device.type == "cuda" else "fast"
        if runner == "fast" and sharded:
            raise ValueError("runner='fast' needs unsharded weights; use runner='model' for FSDP models")
        if compile is None:
            compile = self.device.type == "cuda" and runner == "model" and not sharded
        self.compiled = bool(compile)
        self.runner_name = runner
        self._runner = (
            _FastRunner(model, self.max_len)
            if runner == "fast"
            else _ModelRunner(model, self.compiled, self._lm_head_weight)
        )

        row_bytes = KVCache.bytes_per_token(self.config, self.dtype) * self.max_len
        if memory_budget_bytes is None:
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                memory_budget_bytes = free // 2
            else:
                memory_budget_bytes = 4 << 30
        self.rows = max(1, min(max_batch, memory_budget_bytes // row_bytes))
        self.cache: KVCache | None = None
        self._prefix: tuple[tuple, KVCache] | None = None  # ((tokens, weights' version), its KV)
        self._lm_head: Tensor | None = None

        stops: list[int] = []
        if tokenizer is not None:
            stops = list(tokenizer.stop_ids)
        elif self.config.eos_token_id is not None:
            eos = self.config.eos_token_id
            stops = list(eos) if isinstance(eos, list | tuple) else [eos]
        self.default_stop_ids = frozenset(stops)
        self.pad_id = int(getattr(tokenizer, "pad_id", 0) or 0) if tokenizer is not None else 0

    # ---- public API ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the KV cache and the prefix buffer (the next call allocates them again)."""
        self.cache = None
        self._prefix = None
        self._lm_head = None

    @torch.no_grad()
    def generate(
        self, requests: Sequence[Request], params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[GenerationResult]:
        """Sample completions for `requests` (token-id lists, or strings with a tokenizer), in request order.

        `params` is one `SamplingParams` for all requests or one per request.
        """
        seqs, prompts = self.prepare(requests, params)
        for _ in self.steps(seqs, prompts):
            pass
        return self.collect(seqs, prompts)

    @torch.no_grad()
    def prefill_logits(self, requests: Sequence[Request]) -> Tensor:
        """The next-token logits (N, V) in fp32 after each prompt, computed with the cache (prefix reuse applies).

        The judge's "distribution over score tokens after a forced `Score: `" is a softmax over columns of this.
        """
        out = torch.empty(len(requests), self.config.vocab_size, dtype=torch.float32, device=self.device)
        for _ in self.prefill_steps(requests, out):
            pass
        return out

    def prefill_steps(self, requests: Sequence[Request], out: Tensor) -> Iterator[None]:
        """`prefill_logits` into `out` (N, V) fp32, yielding after every forward call (lockstep mode counts
        them). The requests are validated before the first forward."""
        prompts = [self._encode(r, i) for i, r in enumerate(requests)]
        if out.shape != (len(prompts), self.config.vocab_size):
            raise ValueError(
                f"out must be ({len(prompts)}, {self.config.vocab_size}), got {tuple(out.shape)}"
            )
        greedy = SamplingParams(max_new_tokens=1, temperature=0.0)
        seqs = [[self._make_seq(i, 0, p, greedy, 0)] for i, p in enumerate(prompts)]
        return self.steps(seqs, prompts, logits_out=out)

    # ---- preparation ---------------------------------------------------------------------------------------------
    def _encode(self, request: Request, i: int) -> list[int]:
        if isinstance(request, str):
            if self.tokenizer is None:
                raise ValueError(f"request {i} is a string but the Generator has no tokenizer")
            ids = self.tokenizer.encode(request)
        else:
            ids = [int(t) for t in request]
        if not ids:
            raise ValueError(f"request {i} is empty: the prompt needs at least one token (e.g. BOS)")
        if len(ids) >= self.max_len:
            raise ValueError(f"request {i} has {len(ids)} tokens; the generator's max_len is {self.max_len}")
        bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(
                f"request {i} has token id {bad[0]} outside the vocabulary [0, {self.config.vocab_size})"
            )
        return ids

    def _make_seq(self, req: int, index: int, prompt: list[int], p: SamplingParams, seed: int) -> _Seq:
        stop_ids = frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else self.default_stop_ids)
        return _Seq(
            req=req,
            index=index,
            prompt=prompt,
            params=p,
            seed=sample_seed(seed, index),
            stop_ids=stop_ids,
            max_new=min(p.max_new_tokens, self.max_len - len(prompt)),
            logprobs=[] if p.logprobs else None,
        )

    def prepare(
        self, requests: Sequence[Request], params: SamplingParams | Sequence[SamplingParams] | None
    ) -> tuple[list[list[_Seq]], list[list[int]]]:
        """Encode and validate requests and resolve seeds: one list of `_Seq` per request."""
        params = params if params is not None else SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(requests)
        if len(params) != len(requests):
            raise ValueError(f"got {len(params)} SamplingParams for {len(requests)} requests")
        prompts = [self._encode(r, i) for i, r in enumerate(requests)]
        seqs = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            if p.stop and self.tokenizer is None:
                raise ValueError(f"request {i}: stop strings need a tokenizer")
            seed = p.seed if p.seed is not None else int(torch.randint(0, 2**62, ()).item())
            seqs.append([self._make_seq(i, j, prompt, p, seed) for j in range(p.n)])
        return seqs, prompts

    def collect(self, seqs: list[list[_Seq]], prompts: list[list[int]]) -> list[GenerationResult]:
        results = []
        for i, group in enumerate(seqs):
            samples = []
            for s in group:
                text = s.text
                if text is None and self.tokenizer is not None:
                    ids = s.tokens[:-1] if s.finish == "stop" and isinstance(s.stop_reason, int) else s.tokens
                    text = self.tokenizer.decode(ids)
                samples.append(
                    Completion(s.index, s.tokens, text, s.finish or "length", s.stop_reason, s.logprobs)
                )
            results.append(GenerationResult(i, prompts[i], samples))
        return results

    # ---- cache management ----------------------------------------------------------------------------------------
    def _ensure_cache(self, rows_needed: int) -> KVCache:
        rows = min(self.rows, rows_needed)
        if self.compiled:
            rows = self.rows  # static shapes: always decode every row
        if self.cache is None or self.cache.batch < rows:
            self.cache = None  # free the old one first
            self.cache = KVCache.allocate(self.config, rows, self.max_len, self.dtype, self.device)
            if self.compiled:
                # CUDA graphs may mutate inputs in place only when their addresses are static.
                for t in (*self.cache.k, *self.cache.v):
                    torch._dynamo.mark_static_address(t)
        return self.cache

    def _lm_head_weight(self) -> Tensor:
        w = self.model.lm_head_weight
        try:
            from torch.distributed.tensor import DTensor

            if isinstance(w, DTensor):
                # Sharded LM head (FSDP): gather it once per call, on every rank (a collective).
                if self._lm_head is None:
                    self._lm_head = w.full_tensor()
                return self._lm_head
        except ImportError:  # pragma: no cover
            pass
        return w

    def _kv_len(self, max_pos: int) -> int:
        need = max_pos + 1
        if self.compiled:
            return min(self.max_len, max(64, 1 << (need - 1).bit_length()))
        return min(self.max_len, -(-need // self.kv_bucket) * self.kv_bucket)

    def _shared_prefix(self, prompts: list[list[int]]) -> int:
        """Length of the prefix to prefill once: the longest common prefix, leaving >= 1 token per prompt."""
        if not self.prefix_reuse or len(prompts) < 2:
            return 0
        first, n = prompts[0], min(len(p) for p in prompts) - 1
        for p in prompts[1:]:
            i = 0
            while i < n and p[i] == first[i]:
                i += 1
            n = i
            if n < self.min_prefix_tokens:
                return 0
        return n if n >= self.min_prefix_tokens else 0

    # ---- the engine ----------------------------------------------------------------------------------------------
    def dummy_forward(self) -> None:
        """One 1-token forward that changes nothing visible (lockstep ranks without work keep the collectives)."""
        cache = self._ensure_cache(1)
        ids = torch.full((1, 1), self.pad_id, dtype=torch.long, device=self.device)
        pos = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self._runner.forward(ids, pos, cache.rows(0, 1), 1, decode=False)

    def steps(
        self, seqs: list[list[_Seq]], prompts: list[list[int]], logits_out: Tensor | None = None
    ) -> Iterator[None]:
        """Run the requests to completion, yielding after every forward call (lockstep mode counts them).

        With `logits_out` (N, V), only prefill: write each request's next-token logits there and stop.
        """
        self._runner.refresh()
        self._lm_head = None
        self._lm_head_weight()  # before any early return: for a sharded model this is a collective
        total = sum(len(g) for g in seqs)
        if total == 0:
            return
        cache = self._ensure_cache(total)
        R = cache.batch if self.compiled else min(cache.batch, self.rows)
        dev = self.device

        P = self._shared_prefix(prompts)
        if P:
            tokens = tuple(prompts[0][:P])
            # The kept buffer is valid for these tokens under these weights only: a trainer may have updated
            # the model in place since (optimizer steps bump the parameters' version counters).
            key = (tokens, _weights_version(self.model))
            if self._prefix is None or self._prefix[0] != key:
                self._prefix = None
                buf = KVCache.allocate(self.config, 1, P, self.dtype, dev)
                ids = torch.tensor([tokens], dtype=torch.long, device=dev)
                pos = torch.arange(P, device=dev)[None]
                self._runner.forward(ids, pos, buf, P, decode=False)
                yield
                self._prefix = (key, buf)
        prefix = self._prefix[1] if P else None

        # Per-row state; row r of these tensors belongs to cache row r.
        row_seq: list[_Seq | None] = [None] * R
        tok = torch.zeros(R, dtype=torch.long, device=dev)  # last sampled token (input of the next step)
        pos = torch.zeros(R, dtype=torch.long, device=dev)  # its position = its cache slot
        temp = torch.zeros(R, dtype=torch.float64, device=dev)
        top_k = torch.zeros(R, dtype=torch.long, device=dev)
        top_p = torch.ones(R, dtype=torch.float64, device=dev)
        seed = torch.zeros(R, dtype=torch.long, device=dev)
        step = torch.zeros(R, dtype=torch.long, device=dev)
        state = (tok, pos, temp, top_k, top_p, seed, step)

        pending = deque(_Group(g[0].req, prompts[g[0].req], deque(g)) for g in seqs if g)
        if logits_out is not None:
            # Prefill only: one sample per request, rows recycled batch after batch.
            while pending:
                groups = self._take(pending, R, P)
                yield from self._prefill(groups, 0, P, prefix, cache, logits_out=logits_out)
            return

        n_active = 0
        while pending or n_active:
            if pending and n_active < R:
                groups = self._take(pending, R - n_active, P)
                box: list[tuple[Tensor, list[_Seq]]] = []
                yield from self._prefill(groups, n_active, P, prefix, cache, box=box)
                logits, new = box[0]
                for r, s in enumerate(new, start=n_active):
                    row_seq[r] = s
                    p = s.params
                    pos[r], step[r] = len(s.prompt), 0
                    temp[r], top_k[r], top_p[r], seed[r] = p.temperature, p.top_k, p.top_p, s.seed
                sl = slice(n_active, n_active + len(new))
                n_active = self._advance(logits, sl, row_seq, state, cache, n_active + len(new), fresh=True)
                continue
            # One decode step over the contiguous active rows [0, B).
            B = R if self.compiled else n_active
            kv_len = self._kv_len(int(pos[:n_active].max()))
            # Compiled: B is every row, and the step must get the very tensors marked static (a view of them is
            # a new input to the graph, and CUDA graphs would be skipped for its in-place cache writes).
            view = cache if cache.batch == B else cache.rows(0, B)
            hidden = self._runner.forward(
                tok[:B, None], pos[:B, None], view, kv_len, decode=True, shared=prefix
            )
            yield
            logits = self._runner.logits(hidden[:n_active, -1])  # (B, V)
            n_active = self._advance(logits, slice(0, n_active), row_seq, state, cache, n_active, fresh=False)

    def _take(self, pending: deque[_Group], free: int, P: int) -> list[tuple[_Group, list[_Seq]]]:
        """Pop up to `free` samples off the queue, grouped by request, within the prefill token budget."""
        groups: list[tuple[_Group, list[_Seq]]] = []
        longest = 0
        while pending and free > 0:
            g = pending[0]
            longest2 = max(longest, len(g.prompt) - P)
            if groups and (len(groups) + 1) * longest2 > self.prefill_tokens:
                break
            k = min(free, len(g.seqs))
            groups.append((g, [g.seqs.popleft() for _ in range(k)]))
            free -= k
            longest = longest2
            if not g.seqs:
                pending.popleft()
        return groups

    def _prefill(
        self,
        groups: list[tuple[_Group, list[_Seq]]],
        r0: int,
        P: int,
        prefix: KVCache | None,
        cache: KVCache,
        *,
        box: list[tuple[Tensor, list[_Seq]]] | None = None,
        logits_out: Tensor | None = None,
    ) -> Iterator[None]:
        """Prefill one row per request at rows r0.., copy it to the request's other samples.

        Leaders occupy rows [r0, r0 + G) and the other samples follow in group order. Appends to `box` the
        first-step logits of every new row and the samples in row order (or, with `logits_out`, writes each
        request's logits there instead).
        """
        G = len(groups)
        lens = [len(g.prompt) - P for g, _ in groups]
        T = max(lens)
        ids = torch.full((G, T), self.pad_id, dtype=torch.long)
        for i, (g, _) in enumerate(groups):
            ids[i, : lens[i]] = torch.tensor(g.prompt[P:], dtype=torch.long)
        ids = ids.to(self.device)
        # Pad tokens write junk at slots >= their row's length; decoding overwrites them before they are visible.
        positions = (P + torch.arange(T, device=self.device)).expand(G, T)
        if prefix is not None:
            cache.copy_slots(slice(r0, r0 + G), slice(0, 1), P, source=prefix)
        view = cache.rows(r0, r0 + G)
        hidden = self._runner.forward(ids, positions, view, P + T, decode=False)
        yield
        last = torch.tensor(lens, device=self.device) - 1
        logits = self._runner.logits(hidden[torch.arange(G, device=self.device), last])  # (G, V)
        if logits_out is not None:
            logits_out[[g.req for g, _ in groups]] = logits
            return
        # Siblings: rows after the leaders, in group order; copy each leader's prompt slots into them.
        r = r0 + G
        counts = []
        for i, (g, samples) in enumerate(groups):
            extra = len(samples) - 1
            L = len(g.prompt)
            if extra:
                cache.copy_slots(slice(r, r + extra), slice(r0 + i, r0 + i + 1), L)
            r += extra
            counts.append(len(samples))
        # Row order is: every leader, then the other samples in group order.
        order = [samples[0] for _, samples in groups] + [s for _, samples in groups for s in samples[1:]]
        lead_of = list(range(G)) + [i for i, c in enumerate(counts) for _ in range(c - 1)]
        assert box is not None
        box.append((logits[torch.tensor(lead_of, device=self.device)], order))

    def _advance(
        self,
        logits: Tensor,
        sl: slice,
        row_seq: list[_Seq | None],
        state: tuple[Tensor, ...],
        cache: KVCache,
        n_active: int,
        *,
        fresh: bool,
    ) -> int:
        """Sample the next token of rows `sl` from `logits`, record it, retire finished rows, compact the cache."""
        tok, pos, temp, top_k, top_p, seed, step = state
        new = sampling.sample(
            logits,
            temperature=temp[sl],
            top_k=top_k[sl],
            top_p=top_p[sl],
            seeds=seed[sl],
            steps=step[sl],
            impl=self.sampler_impl,
        )
        want_lp = any(row_seq[r].logprobs is not None for r in range(sl.start, sl.stop))
        lps = sampling.token_logprobs(logits, new).tolist() if want_lp else None
        toks = new.tolist()
        finished = []
        for i, t in enumerate(toks):
            r = sl.start + i
            s = row_seq[r]
            if s.max_new == 0:  # nothing to generate: the prefill only existed for uniformity
                s.finish = "length"
                finished.append(r)
                continue
            s.tokens.append(t)
            if s.logprobs is not None:
                s.logprobs.append(lps[i])
            if t in s.stop_ids:
                s.finish, s.stop_reason = "stop", t
            elif s.params.stop and self._stop_string(s):
                s.finish = "stop"
            elif len(s.tokens) >= s.max_new:
                s.finish = "length"
            if s.finish is not None:
                finished.append(r)
        tok[sl] = new
        step[sl] += 1
        if not fresh:  # a decode step: every active row advanced one position (fresh rows already point
            pos[sl] += 1  # at the prompt's end, where their first sampled token goes)
        if not finished:
            return n_active
        # Retire and compact: move the highest active rows into the holes, so rows [0, n_active) stay active.
        for r in finished:
            row_seq[r] = None
        holes = sorted(finished)
        while holes:
            hole = holes[0]
            last = n_active - 1
            while last >= 0 and row_seq[last] is None:
                last -= 1
            n_active = last + 1
            if hole >= n_active:
                break
            holes.pop(0)
            L = int(pos[last])  # slots [0, L) are filled; slot L is where the pending token goes
            cache.copy_slots(slice(hole, hole + 1), slice(last, last + 1), L)
            for t in state:
                t[hole] = t[last]
            row_seq[hole], row_seq[last] = row_seq[last], None
        while n_active > 0 and row_seq[n_active - 1] is None:
            n_active -= 1
        # Free rows decode junk only under static shapes; keep their positions in range (slot 0 is theirs).
        pos[n_active:] = 0
        return n_active

    def _stop_string(self, s: _Seq) -> bool:
        """Whether the sample's text now contains a stop string; if so cut the text exactly there."""
        text = self.tokenizer.decode(s.tokens)
        # Earlier text was searched already; back off by the longest stop string plus a few characters, since the
        # tail of the previous decode may have been an incomplete UTF-8 sequence that has now changed.
        start = max(0, s.checked_chars - max(len(x) for x in s.params.stop) - 4)
        best: tuple[int, str] | None = None
        for stop in s.params.stop:
            j = text.find(stop, start)
            if j >= 0 and (best is None or j < best[0]):
                best = (j, stop)
        s.checked_chars = len(text)
        if best is None:
            return False
        j, stop = best
        s.text = text[: j + len(stop)] if s.params.include_stop_str_in_output else text[:j]
        s.stop_reason = stop
        return True
