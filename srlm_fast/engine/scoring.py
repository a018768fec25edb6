"""Teacher-forced scoring: log-probs of given continuations, and next-token distributions over chosen tokens.

* `continuation_logprobs(model, prompts, continuations)`: log p(c_j | prompt, c_<j) for every continuation token,
  from one batched forward per chunk (right-padded); logits are formed only at the scored positions, so memory is
  (scored tokens × V), not (all tokens × V).
* `next_token_logprobs(generator, prompts, token_ids, forced=...)`: log p(token | prompt + forced) for a few chosen
  tokens. It runs through the `Generator`'s KV cache, so prompts sharing a prefix (the judge rubric) prefill it once.
* `choice_distribution` / `score_distribution`: the same, renormalised over the choices: what the judge's `expected`
  mode reads after the forced text `Score: ` over the tokens "0".."5".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from srlm_fast.engine.generator import Generator
from srlm_fast.model.llama import Llama


@torch.no_grad()
def continuation_logprobs(
    model: Llama,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    max_batch_tokens: int = 16384,
) -> list[list[float]]:
    """Per-token log-probs (T = 1, unfiltered) of each continuation given its prompt, in input order."""
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts and {len(continuations)} continuations")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(
                f"prompt {i} is empty: scoring the first continuation token needs a context token"
            )
    device = model.embed_tokens.weight.device
    seqs = [list(p) + list(c) for p, c in zip(prompts, continuations)]
    for i, s in enumerate(seqs):
        if len(s) > model.config.max_seq_len:
            raise ValueError(f"sequence {i} has {len(s)} tokens; max_seq_len is {model.config.max_seq_len}")
    out: list[list[float]] = [[] for _ in seqs]
    # Longest first, chunked by padded size: similar lengths share a chunk, so padding stays small.
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    start = 0
    while start < len(order):
        T = len(seqs[order[start]])
        end = start + max(1, max_batch_tokens // max(T, 1))
        idx = [i for i in order[start:end] if continuations[i]]
        start = end
        if not idx:
            continue
        B = len(idx)
        ids = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
            mask[r, : len(seqs[i])] = 1
        hidden = model(ids.to(device), attention_mask=mask.to(device))  # (B, T, D)
        # Token t of a sequence is predicted at position t - 1.
        rows, cols, targets = [], [], []
        for r, i in enumerate(idx):
            L, n = len(prompts[i]), len(continuations[i])
            rows += [r] * n
            cols += range(L - 1, L - 1 + n)
            targets += continuations[i]
        h = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]  # (N, D)
        lp = torch.log_softmax(F.linear(h, model.lm_head_weight).float(), dim=-1)  # (N, V)
        vals = lp.gather(1, torch.tensor(targets, device=device)[:, None]).squeeze(1).tolist()
        k = 0
        for i in idx:
            n = len(continuations[i])
            out[i] = vals[k : k + n]
            k += n
    return out


@torch.no_grad()
def next_token_logprobs(
    generator: Generator,
    prompts: Sequence[Sequence[int] | str],
    token_ids: Sequence[int],
    *,
    forced: Sequence[int] | str = (),
) -> Tensor:
    """log p(token | prompt + forced) over the full vocabulary, for each prompt and chosen token: (N, K) float32."""
    forced_ids = _ids(generator, forced, "forced")
    full = [_ids(generator, p, f"prompt {i}") + forced_ids for i, p in enumerate(prompts)]
    logits = generator.prefill_logits(full)  # (N, V)
    lp = torch.log_softmax(logits, dim=-1)
    return lp[:, torch.tensor(list(token_ids), device=lp.device)]


def choice_distribution(
    generator: Generator,
    prompts: Sequence[Sequence[int] | str],
    token_ids: Sequence[int],
    *,
    forced: Sequence[int] | str = (),
) -> tuple[Tensor, Tensor]:
    """(probs (N, K) renormalised over the chosen tokens, mass (N,) = their total probability before renormalising)."""
    lp = next_token_logprobs(generator, prompts, token_ids, forced=forced)
    mass = lp.exp().sum(-1)
    return torch.softmax(lp, dim=-1), mass


def score_distribution(
    generator: Generator,
    prompts: Sequence[str],
    *,
    forced: str = "Score: ",
    choices: Sequence[str] = ("0", "1", "2", "3", "4", "5"),
) -> list[dict[str, float]]:
    """The judge's score distribution: after `prompt + forced`, p(choice) renormalised over `choices`.

    Every choice must be a single token of the generator's tokenizer. The forced text is tokenized on its own, so a
    BPE that would merge it with the digit (" 4") still reads the digit as its own token, as the judge intends.
    """
    tok = generator.tokenizer
    if tok is None:
        raise ValueError("score_distribution needs a Generator with a tokenizer")
    ids = []
    for c in choices:
        enc = tok.encode(c)
        if len(enc) != 1:
            raise ValueError(
                f"choice {c!r} is {len(enc)} tokens in this tokenizer; each choice must be one token"
            )
        ids.append(enc[0])
    probs, _ = choice_distribution(
        generator, [tok.encode(p) if isinstance(p, str) else p for p in prompts], ids, forced=forced
    )
    return [dict(zip(choices, row)) for row in probs.tolist()]


def _ids(generator: Generator, x: Sequence[int] | str, what: str) -> list[int]:
    if isinstance(x, str):
        if generator.tokenizer is None:
            raise ValueError(f"{what} is a string but the Generator has no tokenizer")
        return generator.tokenizer.encode(x) if x else []
    return [int(t) for t in x]
