"""Teacher-forced scoring against log_softmax of full logits; next-token distributions with and without prefix reuse."""

import pytest
import torch

from srlm_fast.config import PRESETS
from srlm_fast.engine.generator import Generator
from srlm_fast.engine.scoring import (
    choice_distribution,
    continuation_logprobs,
    next_token_logprobs,
    score_distribution,
)
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def model():
    return build_model(PRESETS["tiny"], seed=4).eval()


def rand(n, seed):
    return torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def full_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model.logits(torch.tensor([ids]))[0], -1)


def test_continuation_logprobs_equal_full_log_softmax(model):
    prompts = [rand(n, i) for i, n in enumerate((3, 17, 1, 9))]
    conts = [rand(n, 10 + i) for i, n in enumerate((5, 2, 11, 0))]
    got = continuation_logprobs(model, prompts, conts, max_batch_tokens=40)  # forces several chunks
    for p, c, g in zip(prompts, conts, got):
        lp = full_logprobs(model, p + c)
        want = [lp[len(p) - 1 + j, t].item() for j, t in enumerate(c)]
        assert g == pytest.approx(want, abs=1e-5)
    assert got[3] == []
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        continuation_logprobs(model, [[]], [[1]])


@pytest.mark.parametrize("reuse", [True, False])
def test_next_token_distribution_after_forced_prefix(model, reuse):
    shared = rand(30, 20)
    prompts = [shared + rand(n, 30 + n) for n in (2, 7, 4)]
    forced, choices = [11, 12], [5, 6, 7, 8, 9, 10]
    gen = Generator(model, prefix_reuse=reuse, sampler_impl="torch")
    lp = next_token_logprobs(gen, prompts, choices, forced=forced)
    probs, mass = choice_distribution(gen, prompts, choices, forced=forced)
    assert (gen._prefix is not None) == reuse
    for i, p in enumerate(prompts):
        want = full_logprobs(model, p + forced)[-1, choices]
        torch.testing.assert_close(lp[i], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(probs[i], torch.softmax(want, -1), atol=1e-5, rtol=0)
        torch.testing.assert_close(mass[i], want.exp().sum(), atol=1e-6, rtol=0)


def test_score_distribution_reads_digits_after_forced_text(model):
    texts = ["Rate this. Score: 3 fine", "answer 0 1 2 3 4 5 Score: 5"] * 10
    tok = Tokenizer.train_bpe(texts, vocab_size=300, min_frequency=1)
    gen = Generator(model, tok, sampler_impl="torch")
    dists = score_distribution(gen, ["Rate this.", "answer"])
    digits = [tok.encode(str(d))[0] for d in range(6)]
    for prompt, d in zip(["Rate this.", "answer"], dists):
        assert list(d) == ["0", "1", "2", "3", "4", "5"]
        want = torch.softmax(full_logprobs(model, tok.encode(prompt) + tok.encode("Score: "))[-1, digits], -1)
        assert list(d.values()) == pytest.approx(want.tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="one token"):
        score_distribution(gen, ["x"], choices=("Rate this",))
