"""Book-keeping of the generator: running samples, the queue of waiting requests, and the static cache's rows.

* `Seq` is one sample while it runs: its tokens, log-probs and why it finished (`record` appends a token and
  checks the stop tokens, stop strings and length).
* `Group` is a request waiting for rows; `take` pops the next samples off the queue within a free-row count
  and a prefill token budget, grouped by request (the n samples of a request share one prefill).
* `Rows` is the per-row state of the cache (last token, position = cache slot, sampling parameters, seed and
  step), with **active rows always a contiguous prefix** `[0, n_active)`: `retire` moves the highest active rows
  into the holes finished rows leave (a copy of their filled slots), so a decode step works on a plain view of
  the first rows of the cache.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from srlm_fast.engine.params import FinishReason, SamplingParams
from srlm_fast.model.llama import KVCache


@dataclass
class Seq:
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

    def record(self, token: int, logprob: float | None, tokenizer) -> bool:
        """Append a sampled token (and its log-prob); whether the sample is now finished."""
        if self.max_new == 0:  # nothing to generate: the prefill only existed for uniformity
            self.finish = "length"
            return True
        self.tokens.append(token)
        if self.logprobs is not None:
            self.logprobs.append(logprob)
        if token in self.stop_ids:
            self.finish, self.stop_reason = "stop", token
        elif self.params.stop and self._stop_string(tokenizer):
            self.finish = "stop"
        elif len(self.tokens) >= self.max_new:
            self.finish = "length"
        return self.finish is not None

    def _stop_string(self, tokenizer) -> bool:
        """Whether the sample's text now contains a stop string; if so cut the text exactly there."""
        text = tokenizer.decode(self.tokens)
        # Earlier text was searched already; back off by the longest stop string plus a few characters, since the
        # tail of the previous decode may have been an incomplete UTF-8 sequence that has now changed.
        start = max(0, self.checked_chars - max(len(x) for x in self.params.stop) - 4)
        best: tuple[int, str] | None = None
        for stop in self.params.stop:
            j = text.find(stop, start)
            if j >= 0 and (best is None or j < best[0]):
                best = (j, stop)
        self.checked_chars = len(text)
        if best is None:
            return False
        j, stop = best
        self.text = text[: j + len(stop)] if self.params.include_stop_str_in_output else text[:j]
        self.stop_reason = stop
        return True


@dataclass
class Group:
    """A request waiting for rows: its samples not yet admitted."""

    req: int
    prompt: list[int]
    seqs: deque[Seq]


def take(pending: deque[Group], free: int, P: int, prefill_tokens: int) -> list[tuple[Group, list[Seq]]]:
    """Pop up to `free` samples off the queue, grouped by request, while the padded prefill (requests × longest
    suffix after the shared `P` tokens) stays within `prefill_tokens` (at least one request is always taken)."""
    groups: list[tuple[Group, list[Seq]]] = []
    longest = 0
    while pending and free > 0:
        g = pending[0]
        longest2 = max(longest, len(g.prompt) - P)
        if groups and (len(groups) + 1) * longest2 > prefill_tokens:
            break
        k = min(free, len(g.seqs))
        groups.append((g, [g.seqs.popleft() for _ in range(k)]))
        free -= k
        longest = longest2
        if not g.seqs:
            pending.popleft()
    return groups


def shared_prefix_length(prompts: list[list[int]], min_tokens: int) -> int:
    """Length of the prefix to prefill once: the longest common prefix, leaving >= 1 token per prompt; 0 when it
    is shorter than `min_tokens` or there is a single prompt."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
        if n < min_tokens:
            return 0
    return n if n >= min_tokens else 0


class Rows:
    """Per-row state of a cache of `R` rows (row r of every tensor belongs to cache row r); rows [0, n_active)
    are the active ones."""

    def __init__(self, R: int, device: torch.device) -> None:
        self.seq: list[Seq | None] = [None] * R
        self.n_active = 0
        self.tok = torch.zeros(R, dtype=torch.long, device=device)  # last sampled token (next step's input)
        self.pos = torch.zeros(R, dtype=torch.long, device=device)  # its position = its cache slot
        self.temp = torch.zeros(R, dtype=torch.float64, device=device)
        self.top_k = torch.zeros(R, dtype=torch.long, device=device)
        self.top_p = torch.ones(R, dtype=torch.float64, device=device)
        self.seed = torch.zeros(R, dtype=torch.long, device=device)
        self.step = torch.zeros(R, dtype=torch.long, device=device)  # tokens sampled so far (the RNG counter)

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.tok, self.pos, self.temp, self.top_k, self.top_p, self.seed, self.step)

    def admit(self, seqs: list[Seq]) -> slice:
        """Give `seqs` the rows after the active ones (their prompts are already in the cache there)."""
        start = self.n_active
        for r, s in enumerate(seqs, start=start):
            p = s.params
            self.seq[r] = s
            self.pos[r], self.step[r] = len(s.prompt), 0  # the first sampled token goes at the prompt's end
            self.temp[r], self.top_k[r], self.top_p[r], self.seed[r] = p.temperature, p.top_k, p.top_p, s.seed
        self.n_active += len(seqs)
        return slice(start, self.n_active)

    def retire(self, finished: list[int], cache: KVCache) -> None:
        """Free the rows `finished` and compact: move the highest active rows into the holes."""
        for r in finished:
            self.seq[r] = None
        n_active = self.n_active
        holes = sorted(finished)
        while holes:
            hole = holes[0]
            last = n_active - 1
            while last >= 0 and self.seq[last] is None:
                last -= 1
            n_active = last + 1
            if hole >= n_active:
                break
            holes.pop(0)
            L = int(self.pos[last])  # slots [0, L) are filled; slot L is where the pending token goes
            cache.copy_slots(slice(hole, hole + 1), slice(last, last + 1), L)
            for t in self._tensors():
                t[hole] = t[last]
            self.seq[hole], self.seq[last] = self.seq[last], None
        while n_active > 0 and self.seq[n_active - 1] is None:
            n_active -= 1
        self.n_active = n_active
        # Free rows decode junk only under static shapes; keep their positions in range (slot 0 is theirs).
        self.pos[n_active:] = 0
