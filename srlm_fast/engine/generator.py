"""KV-cached batched sampling: continuous batching over a static cache, shared prefixes, n samples per prefill.

How a `Generator.generate` call runs:

* One static KV cache of `rows × length` slots, sized to the work and to a memory budget: its length is the
  longest prompt + completion of the calls so far (rounded up to `CACHE_LEN_STEP`, at most `max_len`), its rows as
  many as the budget holds at that length (at most `max_batch`). It grows when a call needs more and is otherwise
  reused, so a judge whose prompts are 700 tokens long gets the rows of 700-token sequences, not of the model's
  8,192-token context. The slot of a token is its position, so ragged prompts need no mask bookkeeping: a row
  simply attends to its slots ≤ position.
* **Active rows are always a contiguous prefix** `[0, B)` of the cache. When a row finishes, the highest active row
  is moved into the hole (a copy of its filled slots), so a decode step works on a plain view `cache[:, :B]`: no
  gather of the cache, no compute on dead rows, and static shapes are easy on GPU.
* **Continuous batching**: whenever rows are free, the next waiting requests are prefilled into them (one batched,
  right-padded forward), so a short answer never waits for a long one.
* The **n samples of a request share one prefill**: the prompt is prefilled into one row and its slots are copied
  into the sibling rows; all siblings sample their first token from the same logits with different seeds.
* A **shared prefix** (the longest common token prefix of all requests in the call, e.g. the judge rubric) is
  prefilled once into a side buffer and copied into each new row; only the suffix is computed per request. The
  buffer is kept across calls (keyed by its tokens and the weights' version), so repeated judge calls with the
  same rubric pay for it once. Decode steps also *attend* to it once for all rows (cascade attention, in
  `model/attention.py`: the prefix part of every row's attention is one matmul against the buffer, merged exactly
  with the row's own part).
* Randomness is counter-based (`sampling.sample`: a hash of (seed, step)), so a request's samples do not depend on
  which other requests shared its batch. Sample j of a request uses `sample_seed(seed, j)`; step = token index.

The network is the model's own forward, `Llama.forward` with a `CacheView` (see `runtime.py`); `runner=` only
chooses its weights:

* `"packed"` (default for unsharded models off CUDA): an inference copy of the model with q/k/v and gate/up fused
  and every projection stored K-major (`runtime.pack_for_inference`), rebuilt when any parameter changes, so a
  trainer can update the model between calls. Prefill is bit-identical to the unpacked model in fp32 (tested).
  Its forwards run under `torch.inference_mode` (the copy and the cache never meet autograd).
* `"model"`: the model's own weights. Required for FSDP-sharded models (their parameters only exist inside
  forward); default on CUDA, where the decode step is optionally compiled with `torch.compile(mode=
  "reduce-overhead")` (CUDA graphs) at static shapes: all `rows` decode every step and the attended length is
  bucketed to powers of two.

Request and result types live in `params.py`, the book-keeping of samples and cache rows in `rows.py`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor

from srlm_fast.engine import sampling
from srlm_fast.engine.params import Completion, GenerationResult, Request, SamplingParams, sample_seed
from srlm_fast.engine.rows import Group, Rows, Seq, shared_prefix_length, take
from srlm_fast.engine.runtime import Runner, weights_version
from srlm_fast.model.llama import KVCache, Llama

__all__ = ["Completion", "GenerationResult", "Generator", "Request", "SamplingParams", "sample_seed"]

RUNNERS = ("packed", "model")
CACHE_LEN_STEP = 256  # the cache's length grows in steps of this many slots (fewer reallocations)
CPU_BUDGET_CAP = 4 << 30  # the default CPU budget: a quarter of the available memory, at most this
_DONE = object()  # what `next` returns once the inner step generator is exhausted


# ---- the generator -------------------------------------------------------------------------------------------------


def _has_dtensor(model: torch.nn.Module) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


def available_memory_bytes() -> int:
    """Memory the machine can still give this process (Linux's MemAvailable; else the free pages; else 16 GiB)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


class Generator:
    """Batched, KV-cached sampling from a `Llama` (see the module docstring for how it works).

    Args:
        model: the model; put it in eval mode and on its device first.
        tokenizer: optional `srlm_fast.tokenizer.Tokenizer`: lets requests be strings, fills `Completion.text`,
            enables stop strings and adds the chat template's end-of-turn ids to the stop tokens.
        max_batch: most rows (sequences) decoded at once.
        max_len: cache slots per row = the longest prompt + completion; default min(model max_seq_len, 8192).
        memory_budget_bytes: cap on the KV cache; rows = min(max_batch, budget // bytes per row of the cache's
            length). Default: a quarter of the available memory on CPU (at most 4 GiB), half of the free memory
            on CUDA.
        prefix_reuse: prefill the requests' longest common prefix once (when >= `min_prefix_tokens`).
        runner: which weights `Llama.forward` runs on: "packed" (an inference copy with packed, K-major
            projections; "fast" is its old name), "model" (the model's own), or None = "model" for sharded models
            and CUDA, else "packed".
        compile: compile the decode step with CUDA graphs (static shapes); None = on for CUDA with the model's
            own weights.
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
        runner: Literal["packed", "model", "fast"] | None = None,
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
            runner = "model" if sharded or self.device.type == "cuda" else "packed"
        runner = "packed" if runner == "fast" else runner  # the name before the packed weights became a swap
        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)} (or None), got {runner!r}")
        if runner == "packed" and sharded:
            raise ValueError("runner='packed' needs unsharded weights; use runner='model' for FSDP models")
        if compile is None:
            compile = self.device.type == "cuda" and runner == "model" and not sharded
        self.compiled = bool(compile)
        self.runner_name = runner
        self._runner = Runner(
            model, pack=runner == "packed", compile_decode=self.compiled, lm_head=self._lm_head_weight
        )

        self.max_batch = max_batch
        self._token_bytes = KVCache.bytes_per_token(self.config, self.dtype)
        if memory_budget_bytes is None:
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                memory_budget_bytes = free // 2
            else:
                memory_budget_bytes = min(CPU_BUDGET_CAP, available_memory_bytes() // 4)
        self.memory_budget_bytes = memory_budget_bytes
        self.rows = self.rows_for(self.max_len)  # rows at any length; shorter calls may get more
        self.cache: KVCache | None = None
        self._prefix: tuple[tuple, KVCache] | None = None  # ((tokens, weights' version), its KV)
        self._lm_head: Tensor | None = None
        # Sequences retired since construction: a caller driving `steps` reads it to count progress inside a call.
        self.finished_sequences = 0

        stops: list[int] = []
        if tokenizer is not None:
            stops = list(tokenizer.stop_ids)
        elif self.config.eos_token_id is not None:
            eos = self.config.eos_token_id
            stops = list(eos) if isinstance(eos, list | tuple) else [eos]
        self.default_stop_ids = frozenset(stops)
        self.pad_id = int(getattr(tokenizer, "pad_id", 0) or 0) if tokenizer is not None else 0

    # ---- public API ----------------------------------------------------------------------------------------------
    def rows_for(self, length: int) -> int:
        """Cache rows of `length` slots that the memory budget holds (at least 1, at most `max_batch`)."""
        return max(1, min(self.max_batch, self.memory_budget_bytes // (self._token_bytes * max(1, length))))

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

    def _make_seq(self, req: int, index: int, prompt: list[int], p: SamplingParams, seed: int) -> Seq:
        stop_ids = frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else self.default_stop_ids)
        return Seq(
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
    ) -> tuple[list[list[Seq]], list[list[int]]]:
        """Encode and validate requests and resolve seeds: one list of `Seq` per request."""
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

    def collect(self, seqs: list[list[Seq]], prompts: list[list[int]]) -> list[GenerationResult]:
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
    def _cache_len(self, seqs: list[list[Seq]]) -> int:
        """Slots a call needs: its longest prompt + completion, rounded up to `CACHE_LEN_STEP`."""
        longest = max(len(s.prompt) + s.max_new for group in seqs for s in group)
        return min(self.max_len, -(-longest // CACHE_LEN_STEP) * CACHE_LEN_STEP)

    def _ensure_cache(self, rows_needed: int, length: int) -> KVCache:
        """A cache of at least `length` slots with as many of `rows_needed` rows as the budget holds there. It only
        grows (to the longest call so far, and then to the most rows that length allows): calls of mixed lengths
        reuse one allocation instead of trading it back and forth."""
        old = self.cache
        if self.compiled:  # static shapes: every row at full length, always decoded
            rows, length = self.rows, self.max_len
        else:
            length = max(length, old.max_len if old is not None else 0)
            rows = min(self.rows_for(length), max(rows_needed, old.batch if old is not None else 0))
        if old is None or old.batch < rows or old.max_len < length:
            self.cache = old = None  # free the old one first
            self.cache = KVCache.allocate(self.config, rows, length, self.dtype, self.device)
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

    def _kv_len(self, max_pos: int, cache_len: int) -> int:
        need = max_pos + 1
        if self.compiled:
            return min(cache_len, max(64, 1 << (need - 1).bit_length()))
        return min(cache_len, -(-need // self.kv_bucket) * self.kv_bucket)

    # ---- the engine ----------------------------------------------------------------------------------------------
    def _grad_mode(self):
        """`inference_mode` for the packed copy, whose tensors (like the cache's) never meet autograd: it skips
        the per-op version and view tracking of `no_grad`, which a decode step of a small model pays ~30 times
        per layer. `no_grad` for the model's own weights (FSDP's parameter buffers, the compiled CUDA path)."""
        return torch.inference_mode() if self.runner_name == "packed" else torch.no_grad()

    def dummy_forward(self) -> None:
        """One 1-token forward that changes nothing visible (lockstep ranks without work keep the collectives)."""
        with self._grad_mode():
            cache = self._ensure_cache(1, 1)
            ids = torch.full((1, 1), self.pad_id, dtype=torch.long, device=self.device)
            pos = torch.zeros(1, 1, dtype=torch.long, device=self.device)
            self._runner.forward(ids, pos, cache.rows(0, 1), 1, decode=False)

    def steps(
        self, seqs: list[list[Seq]], prompts: list[list[int]], logits_out: Tensor | None = None
    ) -> Iterator[None]:
        """Run the requests to completion, yielding after every forward call (lockstep mode counts them).

        With `logits_out` (N, V), only prefill: write each request's next-token logits there and stop.
        """
        run = self._steps(seqs, prompts, logits_out)
        while True:
            with self._grad_mode():  # entered on every resume: between steps the caller runs in its own mode
                done = next(run, _DONE) is _DONE
            if done:
                return
            yield

    def _steps(self, seqs: list[list[Seq]], prompts: list[list[int]], logits_out: Tensor | None) -> Iterator:
        self._runner.refresh()
        self._lm_head = None
        self._lm_head_weight()  # before any early return: for a sharded model this is a collective
        total = sum(len(g) for g in seqs)
        if total == 0:
            return
        cache = self._ensure_cache(total, self._cache_len(seqs))
        R = cache.batch
        dev = self.device

        P = shared_prefix_length(prompts, self.min_prefix_tokens) if self.prefix_reuse else 0
        if P:
            tokens = tuple(prompts[0][:P])
            # The kept buffer is valid for these tokens under these weights only: a trainer may have updated
            # the model in place since (optimizer steps bump the parameters' version counters).
            key = (tokens, weights_version(self.model))
            if self._prefix is None or self._prefix[0] != key:
                self._prefix = None
                buf = KVCache.allocate(self.config, 1, P, self.dtype, dev)
                ids = torch.tensor([tokens], dtype=torch.long, device=dev)
                pos = torch.arange(P, device=dev)[None]
                self._runner.forward(ids, pos, buf, P, decode=False)
                yield
                self._prefix = (key, buf)
        prefix = self._prefix[1] if P else None

        rows = Rows(R, dev)
        pending = deque(Group(g[0].req, prompts[g[0].req], deque(g)) for g in seqs if g)
        if logits_out is not None:
            # Prefill only: one sample per request, rows recycled batch after batch.
            while pending:
                groups = take(pending, R, P, self.prefill_tokens)
                yield from self._prefill(groups, 0, P, prefix, cache, logits_out=logits_out)
            return

        while pending or rows.n_active:
            if pending and rows.n_active < R:
                groups = take(pending, R - rows.n_active, P, self.prefill_tokens)
                box: list[tuple[Tensor, list[Seq]]] = []
                yield from self._prefill(groups, rows.n_active, P, prefix, cache, box=box)
                logits, new = box[0]
                self._advance(logits, rows.admit(new), rows, cache, fresh=True)
                continue
            # One decode step over the contiguous active rows [0, B).
            n_active = rows.n_active
            B = R if self.compiled else n_active
            kv_len = self._kv_len(int(rows.pos[:n_active].max()), cache.max_len)
            # Compiled: B is every row, and the step must get the very tensors marked static (a view of them is
            # a new input to the graph, and CUDA graphs would be skipped for its in-place cache writes).
            view = cache if cache.batch == B else cache.rows(0, B)
            # The kept prefix buffer is read once for all rows (cascade attention); not under static shapes,
            # where its length would be one more shape to compile for.
            shared = None if self.compiled else prefix
            ids, pos = rows.tok[:B, None], rows.pos[:B, None]
            hidden = self._runner.forward(ids, pos, view, kv_len, decode=True, prefix=shared)
            yield
            logits = self._runner.logits(hidden[:n_active, -1])  # (n_active, V)
            self._advance(logits, slice(0, n_active), rows, cache, fresh=False)

    def _prefill(
        self,
        groups: list[tuple[Group, list[Seq]]],
        r0: int,
        P: int,
        prefix: KVCache | None,
        cache: KVCache,
        *,
        box: list[tuple[Tensor, list[Seq]]] | None = None,
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

    def _advance(self, logits: Tensor, sl: slice, rows: Rows, cache: KVCache, *, fresh: bool) -> None:
        """Sample the next token of rows `sl` from `logits`, record it, retire finished rows, compact the cache."""
        new = sampling.sample(
            logits,
            temperature=rows.temp[sl],
            top_k=rows.top_k[sl],
            top_p=rows.top_p[sl],
            seeds=rows.seed[sl],
            steps=rows.step[sl],
            impl=self.sampler_impl,
        )
        seqs = rows.seq[sl]
        want_lp = any(s.logprobs is not None for s in seqs)
        lps = sampling.token_logprobs(logits, new).tolist() if want_lp else [None] * len(seqs)
        finished = [
            sl.start + i
            for i, (s, t, lp) in enumerate(zip(seqs, new.tolist(), lps))
            if s.record(t, lp, self.tokenizer)
        ]
        rows.tok[sl] = new
        rows.step[sl] += 1
        if not fresh:  # a decode step: every active row advanced one position (fresh rows already point
            rows.pos[sl] += 1  # at the prompt's end, where their first sampled token goes)
        if finished:
            self.finished_sequences += len(finished)
            rows.retire(finished, cache)
