"""A checkpoint as the recipe sees it: chat-formatted generation and judge-score distributions.

The recipe modules (self-instruct, judge, evaluation) take plain callables over user-message strings; `Policy`
provides them on top of the KV-cached `Generator`: it applies the tokenizer's chat template, gives every request
its own seed (so results do not depend on batching), and turns prompts too long for the model into a counted,
logged skip (empty completions, which the judge counts as invalid) instead of an error deep inside a batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

from srlm_fast.checkpoint import from_pretrained
from srlm_fast.generate import Generator, SamplingParams
from srlm_fast.judge import MAX_SCORE, MIN_SCORE, JudgeConfig, JudgeResult, JudgeTemplate, judge
from srlm_fast.tokenizer import Tokenizer

SCORE_MARKER = "Score:"


def _request_seed(seed: int, i: int) -> int:
    # Distinct, stable per (call seed, request index); the generator derives per-sample seeds from it.
    return (seed * 1_000_003 + i) % (2**62)


class Policy:
    """Generation and judging with one model and its tokenizer."""

    def __init__(self, model, tokenizer: Tokenizer, *, max_batch: int = 64) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.generator = Generator(model, tokenizer, max_batch=max_batch)
        self.max_len = self.generator.max_len
        self.skipped_too_long = 0
        # Score digits may be tokenised alone ("4") or with the space before them (" 4"): read both.
        self._score_tokens: dict[str, int] = {}
        for d in range(MIN_SCORE, MAX_SCORE + 1):
            for text in (str(d), f" {d}"):
                ids = tokenizer.encode(text)
                if len(ids) == 1:
                    self._score_tokens[text] = ids[0]

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str = "cpu", dtype: str = "auto") -> Policy:
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        model = from_pretrained(directory, dtype=torch_dtype, device=device)
        return cls(model, Tokenizer.from_dir(directory))

    def close(self) -> None:
        self.generator.close()

    def _encode(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[list[int]], list[bool]]:
        ids = [self.tokenizer.encode_prompt(p) for p in prompts]
        fits = [len(x) + max_new_tokens <= self.max_len for x in ids]
        skipped = fits.count(False)
        if skipped:
            self.skipped_too_long += skipped
            print(
                f"    skipped {skipped} prompt(s) longer than {self.max_len - max_new_tokens} tokens",
                flush=True,
            )
        return ids, fits

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
        return self._generate_encoded(ids, fits, n, temperature, top_p, max_new_tokens, seed, stop)

    def _generate_encoded(
        self, ids: list[list[int]], fits: list[bool], n: int, temperature: float, top_p: float,
        max_new_tokens: int, seed: int, stop: Sequence[str],
    ) -> list[list[str]]:  # fmt: skip
        todo = [i for i, ok in enumerate(fits) if ok]
        params = [
            SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n,
                           seed=_request_seed(seed, i), stop=tuple(stop), include_stop_str_in_output=True)
            for i in todo
        ]  # fmt: skip
        out: list[list[str]] = [[""] * n for _ in ids]
        if todo:
            for i, result in zip(todo, self.generator.generate([ids[i] for i in todo], params)):
                out[i] = [t or "" for t in result.texts]
        return out

    def score_probs(self, prompts: Sequence[str], max_new_tokens: int = 64) -> list[Mapping[str, float]]:
        """For each judge prompt, the probabilities of the score digits right after the judge writes `Score:`.

        The judge first writes its justification greedily up to `Score:` (as it was trained to; forcing
        `Score:` straight after the prompt would ask for a score it never learned to give without one), and
        `Score:` is appended if it never writes it. One forward pass then reads the digit distribution.
        """
        ids, fits = self._encode(prompts, max_new_tokens)
        texts = self._generate_encoded(ids, fits, 1, 0.0, 1.0, max_new_tokens, 0, (SCORE_MARKER,))
        forced, index = [], []
        for i, (prompt_ids, ok, t) in enumerate(zip(ids, fits, texts)):
            if not ok:
                continue
            head = t[0]
            cut = head.find(SCORE_MARKER)
            head = head[: cut + len(SCORE_MARKER)] if cut >= 0 else head.rstrip() + "\n" + SCORE_MARKER
            forced.append(prompt_ids + self.tokenizer.encode(head))
            index.append(i)
        out: list[Mapping[str, float]] = [{} for _ in prompts]
        keep = [j for j, f in enumerate(forced) if len(f) < self.max_len]
        if keep:
            probs = self.generator.prefill_logits([forced[j] for j in keep]).softmax(dim=-1)
            cols = torch.tensor(list(self._score_tokens.values()), device=probs.device)
            picked = probs[:, cols].tolist()
            for j, row in zip(keep, picked):
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
