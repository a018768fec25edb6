"""A checkpoint as the recipe sees it: chat-formatted generation and judge-score distributions.

The recipe modules (self-instruct, judge, evaluation) take plain callables over user-message strings; `Policy`
provides them on top of the KV-cached `Generator`: it applies the tokenizer's chat template, gives every request
its own seed (so results do not depend on batching), and turns prompts too long for the model into a counted,
logged skip (empty completions, which the judge counts as invalid) instead of an error deep inside a batch.

Under torchrun (a process group of more than one rank) every call is collective and returns the same results on
every rank, equal to a single process's:

* data-parallel (the default): every rank holds the full model and samples its strided slice of the requests
  (`generate_dist.generate_data_parallel`);
* lockstep (a model loaded with `Policy.load(..., sharded=True)`): FSDP-sharded weights, every rank makes the same
  number of forward calls (`generate_dist.generate_lockstep`), for models too large for one device.

Requests are processed in chunks of several times the rows all ranks decode at once, so a `progress` scope can
report per chunk without starving continuous batching; per-request seeds keep results independent of chunking.
In one process a scope also counts requests as they finish inside a chunk (a judged request counts half when its
justification is written and half when its score is read), since one chunk can take many minutes on a CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist

from srlm_fast.device import resolve_device, resolve_dtype
from srlm_fast.engine import distributed as GD
from srlm_fast.engine.generator import GenerationResult, Generator, Request, SamplingParams
from srlm_fast.model.llama import Llama
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.progress import Progress
from srlm_fast.recipe.judge import MAX_SCORE, MIN_SCORE, JudgeConfig, JudgeResult, JudgeTemplate, judge

SCORE_MARKER = "Score:"
# A chunk holds this many times the rows all ranks decode at once: continuous batching keeps the rows full for all
# but the tail of each chunk, and a progress bar still moves every few batches.
CHUNK_ROWS_FACTOR = 8


def _request_seed(seed: int, i: int) -> int:
    # Distinct, stable per (call seed, request index); the generator derives per-sample seeds from it.
    return (seed * 1_000_003 + i) % (2**62)


def score_tokens(tokenizer: Tokenizer) -> tuple[dict[str, int], list[int]]:
    """The tokens whose probabilities after `Score:` are the judge's score distribution, and the tokens to append
    to `Score:` before reading them (the "gap").

    A byte-level BPE like ours has " 4" as one token, and "Score: 4" ends in it: the digits are read right after
    `Score:`, alone ("4") or with their space (" 4"). Tokenizers that split digits from the space before them
    (SmolLM2's, Llama 3's, SentencePiece's) write "Score: 4" as `Score`, `:`, ` `, `4`: right after `Score:` the
    model expects the space, so its space is appended and the digit read after it. Read at the space, the digits
    hold ~0.1% of the probability and their renormalised distribution is noise.
    """
    digits = range(MIN_SCORE, MAX_SCORE + 1)
    spaced = [tokenizer.encode(f" {d}") for d in digits]
    gap = spaced[0][:-1]
    if gap and all(len(s) == len(gap) + 1 and s[:-1] == gap for s in spaced):
        return {str(d): s[-1] for d, s in zip(digits, spaced)}, gap
    single: dict[str, int] = {}
    for d in digits:
        for text in (str(d), f" {d}"):
            ids = tokenizer.encode(text)
            if len(ids) == 1:
                single[text] = ids[0]
    return single, []


def _multi_rank() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Policy:
    """Generation and judging with one model and its tokenizer (collective under torchrun; see the module doc)."""

    def __init__(
        self,
        model,
        tokenizer: Tokenizer,
        *,
        max_batch: int = 64,
        max_len: int | None = None,
        data_parallel: bool | None = None,
        chunk_requests: int | None = None,
    ) -> None:
        """max_len: the most prompt + completion tokens of a sequence (None: the model's context, at most 8192);
        the KV cache is sized to the calls' longest sequence, not to max_len (`Generator`). data_parallel: split
        requests over the ranks of the default process group (None: when it has more than one rank). A sharded
        model always runs in lockstep. chunk_requests: requests per chunk (None: auto).
        """
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.generator = Generator(model, tokenizer, max_batch=max_batch, max_len=max_len)
        self.max_len = self.generator.max_len
        self.skipped_too_long = 0
        if self.generator.sharded:
            self.mode = "lockstep"
        elif _multi_rank() and data_parallel is not False:
            self.mode = "data_parallel"
        else:
            self.mode = "local"
        self.rank = dist.get_rank() if self.mode != "local" else 0
        self.world = dist.get_world_size() if self.mode != "local" else 1
        self.chunk_requests = chunk_requests
        self._rows = self._rows_on_every_rank()
        self._progress: Progress | None = None
        self._reported = 0  # requests of the current chunk already counted in the progress scope
        self._pending = 0.0  # a fraction of a request, not yet counted (the judge's first pass counts half)
        self._score_tokens, self._score_gap = score_tokens(tokenizer)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: str = "auto",
        sharded: bool = False,
        max_batch: int = 64,
        max_len: int | None = None,
    ) -> Policy:
        """Load an HF checkpoint. sharded: FSDP-shard it over the process group for lockstep generation (a
        model too large for one device); with no group of more than one rank it loads whole."""
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        if sharded and _multi_rank():
            model = GD.load_sharded_model(directory, device=device, dtype=torch_dtype)
        else:
            model = Llama.from_pretrained(directory, dtype=torch_dtype, device=device)
        return cls(model, Tokenizer.from_dir(directory), max_batch=max_batch, max_len=max_len)

    def close(self) -> None:
        self.generator.close()

    @contextmanager
    def progress(self, desc: str, *, interval_s: float = 30.0) -> Iterator[Progress]:
        """Report the requests of every call inside this scope under one description (on rank 0 only). A nested
        scope reports alone: the enclosing one is muted until it ends (its lines would repeat 0/0 meanwhile)."""
        outer = self._progress
        if outer is not None:
            outer.muted = True
        self._progress = Progress(desc, enabled=self.rank == 0, interval_s=interval_s)
        try:
            yield self._progress
        finally:
            self._progress.close()
            self._progress = outer
            if outer is not None:
                outer.muted = False

    # ---- requests in chunks, on one rank or many -------------------------------------------------------------

    def _rows_on_every_rank(self) -> int:
        """The fewest cache rows of any rank. Rows follow each device's free memory, but every rank must cut a
        call into the same chunks (each chunk is a collective), so they agree on one number."""
        rows = torch.tensor([self.generator.rows], device=self.generator.device)
        if self.world > 1:
            dist.all_reduce(rows, op=dist.ReduceOp.MIN)
        return int(rows.item())

    def _chunks(self, n_requests: int, samples_per_request: int) -> Iterator[tuple[int, int]]:
        size = self.chunk_requests or max(
            self.world, CHUNK_ROWS_FACTOR * self._rows * self.world // max(1, samples_per_request)
        )
        if self._progress is not None:
            self._progress.add_total(n_requests)
        for lo in range(0, n_requests, size):
            hi = min(n_requests, lo + size)
            self._reported, self._pending = 0, 0.0
            yield lo, hi
            # What the chunk did not count as it went: requests that finished after the last count, skipped
            # prompts, the judge's second pass, the whole chunk with more than one rank.
            rest = hi - lo - self._reported
            if self._progress is not None and rest:
                self._progress.update(rest)

    def _report(self, n: float) -> None:
        """`n` requests of the current chunk are done (one process: a chunk can take minutes on a CPU, and a
        bar that moves only between chunks sits at 0 for a whole evaluation). Fractions add up."""
        self._pending += n
        whole = int(self._pending)
        if self._progress is not None and whole:
            self._pending -= whole
            self._reported += whole
            self._progress.update(whole)

    def _run_generate(
        self, requests: list[Request], params: list[SamplingParams], *, weight: float = 1.0
    ) -> list[GenerationResult]:
        """weight: how much of a request its generation is, for the progress scope (0: not counted here)."""
        if self.mode == "lockstep":
            return GD.generate_lockstep(self.generator, requests, params)
        if self.mode == "data_parallel":
            return GD.generate_data_parallel(self.generator, requests, params)
        seqs, prompts = self.generator.prepare(requests, params)
        n_seqs = sum(len(group) for group in seqs)
        # A request is n sequences: each finished one is 1/n of it (fractions add up in _report).
        share = weight * len(seqs) / n_seqs if n_seqs and self._progress is not None else 0.0
        counted = self.generator.finished_sequences
        for _ in self.generator.steps(seqs, prompts):
            done = self.generator.finished_sequences - counted
            if share and done:
                self._report(share * done)
                counted += done
        return self.generator.collect(seqs, prompts)

    def _run_prefill(self, requests: list[Request], transform: GD.Transform) -> torch.Tensor:
        if self.mode == "lockstep":
            return GD.prefill_logits_lockstep(self.generator, requests, transform=transform)
        if self.mode == "data_parallel":
            return GD.prefill_logits_data_parallel(self.generator, requests, transform=transform)
        return transform(self.generator.prefill_logits(requests))

    def _encode(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[list[int]], list[bool]]:
        ids = [self.tokenizer.encode_prompt(p) for p in prompts]
        fits = [len(x) + max_new_tokens <= self.max_len for x in ids]
        skipped = fits.count(False)
        if skipped:
            self.skipped_too_long += skipped
            if self.rank == 0:  # every rank sees the same prompts: say it once
                print(
                    f"    skipped {skipped} prompt(s) longer than {self.max_len - max_new_tokens} tokens",
                    flush=True,
                )
        return ids, fits

    # ---- the recipe's callables --------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 64,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> list[list[str]]:
        """n completions of each user message (chat template applied); "" for a prompt that does not fit."""
        ids, fits = self._encode(prompts, max_new_tokens)
        out: list[list[str]] = []
        for lo, hi in self._chunks(len(ids), n):
            out += self._generate_encoded(
                ids[lo:hi], fits[lo:hi], lo, n, temperature, top_p, max_new_tokens, seed, stop
            )
        return out

    def _generate_encoded(
        self, ids: list[list[int]], fits: list[bool], first: int, n: int, temperature: float, top_p: float,
        max_new_tokens: int, seed: int, stop: Sequence[str], weight: float = 1.0,
    ) -> list[list[str]]:  # fmt: skip
        """`ids` are requests first, first + 1, ... of the call: their seeds follow the index in the call.
        weight: how much of a request this generation is, in the progress scope."""
        todo = [i for i, ok in enumerate(fits) if ok]
        params = [
            SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n,
                           seed=_request_seed(seed, first + i), stop=tuple(stop), include_stop_str_in_output=True)
            for i in todo
        ]  # fmt: skip
        out: list[list[str]] = [[""] * n for _ in ids]
        if todo:  # the same on every rank (same prompts), so collectives stay matched
            for i, result in zip(todo, self._run_generate([ids[i] for i in todo], params, weight=weight)):
                out[i] = [t or "" for t in result.texts]
        return out

    def score_probs(self, prompts: Sequence[str], max_new_tokens: int = 64) -> list[Mapping[str, float]]:
        """For each judge prompt, the probabilities of the score digits right after the judge writes `Score:`.

        The judge first writes its justification greedily up to `Score:` (as it was trained to; forcing
        `Score:` straight after the prompt would ask for a score it never learned to give without one), and
        `Score:` is appended if it never writes it. One forward pass then reads the digit distribution.

        Identical prompts (a model often writes the same candidate twice) are scored once: fewer forwards, and
        equal candidates get exactly equal scores whatever batch or rank served them.
        """
        unique = list(dict.fromkeys(prompts))
        ids, fits = self._encode(unique, max_new_tokens)
        scored: list[Mapping[str, float]] = []
        for lo, hi in self._chunks(len(ids), 1):
            scored += self._score_encoded(ids[lo:hi], fits[lo:hi], lo, max_new_tokens)
        by_prompt = dict(zip(unique, scored))
        return [dict(by_prompt[p]) for p in prompts]

    def _score_encoded(
        self, ids: list[list[int]], fits: list[bool], first: int, max_new_tokens: int
    ) -> list[Mapping[str, float]]:
        # Two passes of about equal cost (the justification is short beside the prompt): the first counts half a
        # request as it finishes, the chunk's end counts the rest once the scores are read.
        texts = self._generate_encoded(ids, fits, first, 1, 0.0, 1.0, max_new_tokens, 0, (SCORE_MARKER,),
                                       weight=0.5)  # fmt: skip
        forced, index = [], []
        for i, (prompt_ids, ok, t) in enumerate(zip(ids, fits, texts)):
            if not ok:
                continue
            head = t[0]
            cut = head.find(SCORE_MARKER)
            head = head[: cut + len(SCORE_MARKER)] if cut >= 0 else head.rstrip() + "\n" + SCORE_MARKER
            forced.append(prompt_ids + self.tokenizer.encode(head) + self._score_gap)
            index.append(i)
        out: list[Mapping[str, float]] = [{} for _ in ids]
        keep = [j for j, f in enumerate(forced) if len(f) < self.max_len]
        if keep:  # the same on every rank
            cols = list(self._score_tokens.values())
            # Softmax over the whole vocabulary, then only the digit columns leave the rank.
            picked = self._run_prefill(
                [forced[j] for j in keep], lambda logits: logits.softmax(dim=-1)[:, cols]
            )
            for j, row in zip(keep, picked.tolist()):
                out[index[j]] = dict(zip(self._score_tokens, row))
        return out

    def judge(
        self, items: Sequence[tuple[str, str]], template: JudgeTemplate, config: JudgeConfig, seed: int = 0
    ) -> list[JudgeResult]:
        """This model as the judge of (instruction, response) items, in either judge mode."""
        return judge(
            items,
            template,
            config,
            generate_fn=self.generate,
            score_probs_fn=lambda prompts: self.score_probs(prompts, max_new_tokens=config.max_new_tokens),
            seed=seed,
        )
