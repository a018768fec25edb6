"""What a generation request asks for and what it gets back: `SamplingParams`, `Completion`, `GenerationResult`.

Also the seed of each of a request's n samples (`sample_seed`): sample j of a request with seed s samples with
`sample_seed(s, j)`, so a request's samples never depend on which other requests share its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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
