"""Where the expected-score judge reads its score: right after `Score:` for a tokenizer that has " 4" as one token
(ours), after the space for one that splits digits from it (SmolLM2's, Llama 3's)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from srlm_fast.model.config import ModelConfig
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import SPECIAL_TOKENS, Tokenizer
from srlm_fast.recipe.policy import Policy, score_tokens

TEXTS = ["Score: 0", "Score: 1", "Score: 2", "Score: 3", "Score: 4", "Score: 5", "Judge the response."] * 20


def _tokenizer(split_digits: bool) -> Tokenizer:
    if not split_digits:
        return Tokenizer.train_bpe(TEXTS, vocab_size=300)
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXTS, trainer=trainer)
    return Tokenizer(tok, "srlm")


def test_score_tokens_with_and_without_a_space_token():
    ours = _tokenizer(split_digits=False)
    tokens, gap = score_tokens(ours)
    assert gap == [] and " 4" in tokens and tokens[" 4"] == ours.encode("Score: 4")[-1]
    split = _tokenizer(split_digits=True)
    tokens, gap = score_tokens(split)
    assert split.encode(" 4") == [*gap, tokens["4"]] and len(gap) == 1
    assert sorted(tokens) == [str(d) for d in range(6)]
    # "Score: 4" is `Score:`, the gap, then the digit: the digit is the token after the gap.
    assert split.encode("Score: 4") == split.encode("Score:") + gap + [tokens["4"]]


def test_the_expected_score_is_read_after_the_space_a_split_tokenizer_writes():
    tok = _tokenizer(split_digits=True)
    cfg = ModelConfig(vocab_size=tok.vocab_size, dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                      intermediate_size=64, max_seq_len=128)  # fmt: skip
    policy = Policy(build_model(cfg, seed=0), tok, max_batch=4)
    tokens, gap = score_tokens(tok)
    seen: list[list[int]] = []
    run_prefill = policy._run_prefill

    def spy(requests, transform):
        seen.extend(list(r) for r in requests)
        return run_prefill(requests, transform)

    policy._run_prefill = spy
    (probs,) = policy.score_probs(["Judge the response."], max_new_tokens=3)
    assert sorted(probs) == sorted(tokens)
    (forced,) = seen
    assert forced[-len(gap) - 2 :] == tok.encode("Score:")[-2:] + gap
    # The probabilities are the model's next-token distribution at that position.
    with torch.no_grad():
        logits = policy.model.logits(torch.tensor([forced]))[0, -1].float()
    want = logits.softmax(-1)[[tokens[k] for k in sorted(tokens)]]
    assert torch.allclose(torch.tensor([probs[k] for k in sorted(tokens)]), want, atol=1e-5)
