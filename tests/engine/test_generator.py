"""The KV-cached sampler against full forwards, itself under other batchings, and transformers."""

from __future__ import annotations

import pytest
import torch

from srlm_fast.engine.generator import CACHE_LEN_STEP, Generator, SamplingParams
from srlm_fast.engine.runtime import Runner, pack_for_inference
from srlm_fast.model.config import PRESETS
from srlm_fast.model.llama import CacheView, KVCache, build_model
from srlm_fast.model.tokenizer import Tokenizer

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


def sharpened(seed: int = 1):
    """The tiny preset with larger weights: a random model's logits are nearly flat, and near-ties between the
    top two tokens would make token-level comparisons of differently-rounded computations flaky."""
    model = build_model(PRESETS["tiny"], seed=seed).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.mul_(5)
    return model


@pytest.fixture(scope="module")
def model():
    return sharpened()


def prompts_of(lengths, seed=0, vocab=512):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def greedy_reference(model, prompt, n):
    ids = list(prompt)
    device = model.embed_tokens.weight.device
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model.logits(torch.tensor([ids], device=device))[0, -1].argmax()))
    return ids[len(prompt) :]


def tokens(results):
    return [[s.token_ids for s in r.samples] for r in results]


@pytest.mark.parametrize("runner", ["packed", "model"])
def test_greedy_equals_repeated_argmax_of_full_forwards(model, runner):
    prompts = prompts_of((5, 17, 1, 40, 9))
    out = Generator(model, runner=runner, max_batch=3, sampler_impl="torch").generate(prompts, GREEDY)
    for p, r in zip(prompts, out):
        assert r.token_ids == greedy_reference(model, p, 12)
        assert r.samples[0].finish_reason == "length"
        assert r.prompt_token_ids == p


def test_packed_weights_prefill_is_bit_identical_to_model_forward(model):
    """The runtime swap (q/k/v and gate/up fused, K-major weights) runs the same `Llama.forward`: in fp32 its prefill
    gives the very same hidden states and cache contents as the model's own weights."""
    cfg = model.config
    ids = torch.randint(0, cfg.vocab_size, (3, 7))
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7]])
    c1 = KVCache.allocate(cfg, 3, 32, torch.float32, "cpu")
    c2 = KVCache.allocate(cfg, 3, 32, torch.float32, "cpu")
    with torch.no_grad():
        a = model(ids, positions=pos, cache=CacheView(c1, None, 16))
        b = Runner(model, pack=True).forward(ids, pos, c2, 16, decode=False)
    assert torch.equal(a, b)
    for a, b in zip(c1.k + c1.v, c2.k + c2.v):
        assert torch.equal(a, b)


def test_packed_decode_step_matches_model_forward(model):
    """Decode steps (one query per row) on packed weights: equal up to rounding to the model's own forward."""
    cfg = model.config
    c1 = KVCache.allocate(cfg, 3, 32, torch.float32, "cpu")
    c2 = KVCache.allocate(cfg, 3, 32, torch.float32, "cpu")
    fast = Runner(model, pack=True)
    prompt = torch.randint(0, cfg.vocab_size, (3, 9))
    pos = torch.arange(9).expand(3, 9)
    with torch.no_grad():
        model(prompt, positions=pos, cache=CacheView(c1, None, 16))
        fast.forward(prompt, pos, c2, 16, decode=False)
        ids = torch.randint(0, cfg.vocab_size, (3, 1))
        step = torch.tensor([[9], [5], [2]])  # ragged rows: each attends to its own slots <= position
        a = model(ids, positions=step, cache=CacheView(c1, None, 16))
        b = fast.forward(ids, step, c2, 16, decode=True)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    reference_logits = torch.nn.functional.linear(a[:, -1], model.lm_head_weight)
    torch.testing.assert_close(fast.logits(b[:, -1]), reference_logits, rtol=1e-5, atol=1e-5)


def test_packed_copy_shares_the_model_and_leaves_it_untouched():
    """The inference copy is the same `Llama` class with packed projections; the model keeps its HF layout."""
    model = sharpened(seed=4)
    names = list(model.state_dict())
    packed = pack_for_inference(model)
    assert type(packed) is type(model) and list(model.state_dict()) == names
    assert all(layer.self_attn.qkv_proj is None and layer.mlp.gate_up_proj is None for layer in model.layers)
    assert packed.embed_tokens.weight is model.embed_tokens.weight and packed.norm.weight is model.norm.weight
    a = packed.layers[0].self_attn
    assert a.q_proj is None and a.qkv_proj.weight.t().is_contiguous()  # stored K-major: (in, out) contiguous
    assert not any(p.is_meta for p in packed.parameters())
    with torch.no_grad():
        x = torch.randint(0, model.config.vocab_size, (2, 11))
        assert torch.equal(packed(x), model(x))  # the plain causal forward too
        torch.testing.assert_close(packed.logits(x), model.logits(x))


def test_packed_tied_embeddings_generate_like_the_model():
    from tests.helpers import tiny_model

    model = tiny_model(seed=5, tie_embeddings=True)
    packed = pack_for_inference(model)
    assert model.lm_head is None and packed.lm_head.weight.t().is_contiguous()
    torch.testing.assert_close(packed.lm_head_weight, model.embed_tokens.weight, rtol=0, atol=0)
    prompts = prompts_of((4, 9), seed=14, vocab=model.config.vocab_size)
    a = Generator(model, runner="packed", sampler_impl="torch").generate(prompts, GREEDY)
    b = Generator(model, runner="model", sampler_impl="torch").generate(prompts, GREEDY)
    assert tokens(a) == tokens(b)
    for p, r in zip(prompts, a):
        assert r.token_ids == greedy_reference(model, p, 12)


def test_runner_names():
    model = sharpened(seed=6)
    assert Generator(model).runner_name == "packed"  # the default off CUDA for unsharded models
    assert Generator(model, runner="fast").runner_name == "packed"  # the old name is still accepted
    with pytest.raises(ValueError, match="runner must be one of packed, model"):
        Generator(model, runner="lean")


@pytest.mark.parametrize("runner", ["packed", "model"])
def test_packed_and_model_weights_generate_the_same(model, runner):
    """Greedy and seeded sampling, with and without a shared prefix (cascade attention), agree between the swapped
    and unswapped model."""
    shared = prompts_of((40,), seed=15)[0]
    prompts = [shared + t for t in prompts_of((3, 8, 1, 12), seed=16)] + prompts_of((6, 21), seed=17)
    for params in (GREEDY, SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.9, n=2, seed=4)):
        ours = Generator(model, runner=runner, max_batch=3, sampler_impl="torch")
        plain = Generator(model, runner="model", max_batch=3, sampler_impl="torch", prefix_reuse=False)
        assert tokens(ours.generate(prompts[:4], params)) == tokens(plain.generate(prompts[:4], params))
        assert ours._prefix is not None  # the first four share 40 tokens: prefilled once, attended once
        assert tokens(ours.generate(prompts, params)) == tokens(plain.generate(prompts, params))


def test_ragged_batch_equals_each_request_alone(model):
    prompts = prompts_of((3, 25, 8, 14), seed=1)
    params = SamplingParams(max_new_tokens=10, temperature=0.9, top_k=50, seed=3, logprobs=True)
    gen = Generator(model, sampler_impl="torch")
    batch = gen.generate(prompts, params)
    for p, r in zip(prompts, batch):
        alone = gen.generate([p], params)[0]
        assert alone.token_ids == r.token_ids
        assert alone.samples[0].logprobs == pytest.approx(r.samples[0].logprobs, abs=1e-4)


def test_continuous_batching_equals_static_batching(model):
    prompts = prompts_of((4, 30, 2, 19, 7, 11, 3), seed=2)
    # Different lengths: with 2 rows, finished short requests hand their rows to waiting ones mid-flight.
    params = [SamplingParams(max_new_tokens=n, temperature=0.0) for n in (2, 15, 6, 1, 12, 4, 9)]
    static = Generator(model, max_batch=len(prompts), sampler_impl="torch").generate(prompts, params)
    continuous = Generator(model, max_batch=2, sampler_impl="torch").generate(prompts, params)
    assert tokens(static) == tokens(continuous)
    assert [len(r.token_ids) for r in continuous] == [2, 15, 6, 1, 12, 4, 9]
    assert [r.request_index for r in continuous] == list(range(len(prompts)))


def test_finished_sequences_counts_each_sample_as_its_row_retires(model):
    prompts = prompts_of((4, 9, 2), seed=4)
    params = [SamplingParams(max_new_tokens=n, temperature=0.0, n=2) for n in (1, 6, 3)]
    gen = Generator(model, max_batch=2, sampler_impl="torch")
    seqs, ids = gen.prepare(prompts, params)
    counts = [gen.finished_sequences]
    for _ in gen.steps(seqs, ids):
        counts.append(gen.finished_sequences)
    counts.append(gen.finished_sequences)  # the last rows retire after the last forward
    # Never ahead of the sequences that have finished, and every sample of every request counted once at the end.
    assert counts[0] == 0 and counts == sorted(counts) and counts[-1] == 6
    assert len(set(counts)) > 2  # rows retire in more than one step, not all at once
    gen.generate(prompts[:1], params[:1])
    assert gen.finished_sequences == 8  # it counts on over calls


def test_seeds_reproduce_across_batch_sizes(model):
    prompts = prompts_of((6, 13, 2, 21), seed=3)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, n=3, seed=7)
    runs = [
        Generator(model, max_batch=b, sampler_impl="torch").generate(prompts, params) for b in (64, 5, 2, 1)
    ]
    alone = [Generator(model, sampler_impl="torch").generate([p], params)[0] for p in prompts]
    for r in [*runs[1:], alone]:
        assert tokens(r) == tokens(runs[0])
    # The n samples differ from each other, and sample 0 is what n=1 with the same seed gives.
    assert len({tuple(s) for s in tokens(runs[0])[1]}) == 3
    one = Generator(model, sampler_impl="torch").generate(
        prompts, SamplingParams(max_new_tokens=10, top_p=0.9, seed=7)
    )
    assert [r.token_ids for r in one] == [r.token_ids for r in runs[0]]
    other_seed = Generator(model, sampler_impl="torch").generate(
        prompts, SamplingParams(max_new_tokens=10, seed=8)
    )
    assert [r.token_ids for r in other_seed] != [r.token_ids for r in one]


def test_prefix_reuse_gives_the_same_results(model):
    shared = prompts_of((40,), seed=4)[0]
    prompts = [shared + tail for tail in prompts_of((1, 6, 13, 3), seed=5)]
    for params in (
        SamplingParams(max_new_tokens=10, temperature=0.0, logprobs=True),
        SamplingParams(max_new_tokens=10, temperature=0.8, n=2, seed=1, logprobs=True),
    ):
        reuse = Generator(model, max_batch=3, sampler_impl="torch", prefix_reuse=True)
        plain = Generator(model, max_batch=3, sampler_impl="torch", prefix_reuse=False)
        a, b = reuse.generate(prompts, params), plain.generate(prompts, params)
        assert reuse._prefix is not None and len(reuse._prefix[0][0]) == 40  # (tokens, weights version)
        assert plain._prefix is None
        assert tokens(a) == tokens(b)
        for x, y in zip(a, b):
            assert x.samples[0].logprobs == pytest.approx(y.samples[0].logprobs, abs=1e-4)
        again = reuse.generate(prompts, params)  # the kept prefix buffer is reused by the next call
        assert tokens(again) == tokens(a)


def test_logprobs_are_the_full_forward_log_softmax(model):
    prompt = prompts_of((9,), seed=6)[0]
    r = Generator(model, sampler_impl="torch").generate(
        [prompt], SamplingParams(max_new_tokens=8, temperature=1.0, seed=2, logprobs=True)
    )[0]
    ids = torch.tensor([prompt + r.token_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model.logits(ids)[0], -1)
    want = [lp[len(prompt) - 1 + j, t].item() for j, t in enumerate(r.token_ids)]
    assert r.samples[0].logprobs == pytest.approx(want, abs=1e-4)


def test_greedy_tokens_identical_to_transformers_generate(model, tmp_path):
    transformers = pytest.importorskip("transformers")
    model.save_pretrained(tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    prompts = prompts_of((6, 6, 6), seed=7) + prompts_of((15,), seed=8)
    ours = Generator(model, sampler_impl="torch").generate(
        prompts, SamplingParams(max_new_tokens=16, temperature=0)
    )
    for p, r in zip(prompts, ours):
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([p]),
                attention_mask=torch.ones(1, len(p), dtype=torch.long),
                do_sample=False,
                max_new_tokens=16,
                eos_token_id=None,
                pad_token_id=0,
            )
        assert r.token_ids == out[0, len(p) :].tolist()


@pytest.fixture(scope="module")
def tokenizer():
    texts = [
        "the quick brown fox jumps over the lazy dog. " * 3,
        "hello world, Score: 4 and more text here.",
    ] * 20
    return Tokenizer.train_bpe(texts, vocab_size=400, min_frequency=1)


def test_stop_strings_cut_exactly(model, tokenizer):
    gen = Generator(model, tokenizer, sampler_impl="torch")
    prompt = prompts_of((5,), seed=9, vocab=tokenizer.vocab_size)[0]
    free = gen.generate([prompt], SamplingParams(max_new_tokens=30, temperature=0.0, ignore_eos=True))[0]
    text = free.text
    assert len(text) > 12
    stop = text[6:9]
    cut = text.find(stop)
    r = gen.generate(
        [prompt], SamplingParams(max_new_tokens=30, temperature=0.0, ignore_eos=True, stop=[stop, "\x00"])
    )
    s = r[0].samples[0]
    assert s.text == text[:cut]
    assert (s.finish_reason, s.stop_reason) == ("stop", stop)
    # Generation ended at the first token whose text completes the stop string.
    assert s.token_ids == free.token_ids[: len(s.token_ids)]
    assert stop in tokenizer.decode(s.token_ids) and stop not in tokenizer.decode(s.token_ids[:-1])
    kept = gen.generate(
        [prompt],
        SamplingParams(
            max_new_tokens=30, temperature=0.0, ignore_eos=True, stop=stop, include_stop_str_in_output=True
        ),
    )[0]
    assert kept.text == text[: cut + len(stop)]


def test_stop_token_ids_and_finish_reasons(model, tokenizer):
    gen = Generator(model, tokenizer, sampler_impl="torch")
    prompt = prompts_of((5,), seed=10, vocab=tokenizer.vocab_size)[0]
    free = gen.generate([prompt], SamplingParams(max_new_tokens=20, temperature=0.0, ignore_eos=True))[0]
    stop_tok = free.token_ids[4]
    first = free.token_ids.index(stop_tok)
    r = gen.generate(
        [prompt],
        SamplingParams(max_new_tokens=20, temperature=0.0, ignore_eos=True, stop_token_ids=[stop_tok]),
    )
    s = r[0].samples[0]
    assert s.token_ids == free.token_ids[: first + 1]  # the stop token is kept in the ids ...
    assert s.text == tokenizer.decode(free.token_ids[:first])  # ... never in the text
    assert (s.finish_reason, s.stop_reason) == ("stop", stop_tok)
    assert free.samples[0].finish_reason == "length"
    # max_len caps the completion: 10 slots, 5 prompt tokens -> 5 new tokens at most.
    short = Generator(model, tokenizer, max_len=10, sampler_impl="torch").generate(
        [prompt], SamplingParams(max_new_tokens=50, temperature=0.0, ignore_eos=True)
    )
    assert len(short[0].token_ids) == 5 and short[0].samples[0].finish_reason == "length"
    zero = gen.generate([prompt], SamplingParams(max_new_tokens=0))[0]
    assert zero.token_ids == [] and zero.samples[0].finish_reason == "length"


def test_strings_and_errors(model, tokenizer):
    gen = Generator(model, tokenizer, sampler_impl="torch")
    r = gen.generate(["hello world"], SamplingParams(max_new_tokens=3, temperature=0.0, ignore_eos=True))[0]
    assert r.prompt_token_ids == tokenizer.encode("hello world") and len(r.token_ids) == 3
    bare = Generator(model, sampler_impl="torch", max_len=64)
    with pytest.raises(ValueError, match="no tokenizer"):
        bare.generate(["text"])
    with pytest.raises(ValueError, match="request 1 has 64 tokens"):
        bare.generate([[1], [1] * 64])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        bare.generate([[1, 9999]])
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)


def test_packed_weights_follow_in_place_updates():
    model = sharpened(seed=2)
    gen = Generator(model, sampler_impl="torch")
    prompt = prompts_of((7,), seed=11)[0]
    before = gen.generate([prompt], GREEDY)[0].token_ids
    with torch.no_grad():
        for layer in model.layers:
            layer.self_attn.q_proj.weight.mul_(-1.5)  # an in-place update, as an optimizer step makes
            layer.mlp.up_proj.weight.add_(0.3)
    after = gen.generate([prompt], GREEDY)[0].token_ids
    assert after == greedy_reference(model, prompt, 12)
    assert after != before


def test_training_between_calls_sees_no_inference_tensors():
    """The packed runner generates under `inference_mode`; the model it reads stays trainable: a real optimizer
    step (autograd through the model) between two calls, and the second call follows the new weights."""
    model = sharpened(seed=7)
    shared = prompts_of((20,), seed=18)[0]
    prompts = [shared + t for t in prompts_of((2, 4), seed=19)]
    gen = Generator(model, sampler_impl="torch")
    assert gen.runner_name == "packed"
    before = tokens(gen.generate(prompts, GREEDY))
    assert gen._prefix is not None
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.tensor([prompts[0]])
    loss = torch.nn.functional.cross_entropy(model.logits(x[:, :-1])[0], x[0, 1:])
    loss.backward()
    opt.step()
    assert not any(p.is_inference() for p in model.parameters())
    after = tokens(gen.generate(prompts, GREEDY))
    assert after != before
    assert after == [[greedy_reference(model, p, 12)] for p in prompts]


def test_steps_leave_the_callers_grad_mode_between_forwards(model):
    gen = Generator(model, sampler_impl="torch")
    seqs, prompts = gen.prepare(prompts_of((3, 5), seed=20), GREEDY)
    n = 0
    for _ in gen.steps(seqs, prompts):
        assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
        n += 1
    assert n == 12  # one prefill and 11 decode steps
    assert [r.token_ids for r in gen.collect(seqs, prompts)] == [
        greedy_reference(model, p, 12) for p in prompts
    ]


@pytest.mark.parametrize("runner", ["packed", "model"])
def test_kept_prefix_follows_in_place_updates(runner):
    """The shared-prefix KV kept across calls is recomputed once the weights change (a trainer's step)."""
    model = sharpened(seed=3)
    shared = prompts_of((30,), seed=12)[0]
    prompts = [shared + tail for tail in prompts_of((2, 5), seed=13)]
    gen = Generator(model, runner=runner, sampler_impl="torch")
    before = tokens(gen.generate(prompts, GREEDY))
    with torch.no_grad():
        model.layers[0].self_attn.k_proj.weight.mul_(-2.0)  # changes the prefix's keys
    after = tokens(gen.generate(prompts, GREEDY))
    assert after == tokens(Generator(model, runner=runner, sampler_impl="torch").generate(prompts, GREEDY))
    assert after != before


def test_generate_command_writes_jsonl(tmp_path, tokenizer):
    import json

    from srlm_fast.cli import main as srlm

    build_model(PRESETS["tiny"], seed=0).save_pretrained(tmp_path / "ckpt", tokenizer=tokenizer)
    (tmp_path / "p.jsonl").write_text(
        '{"prompt": "hello"}\n{"messages": [{"role": "user", "content": "hi"}]}\n'
    )
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--checkpoint", str(tmp_path / "ckpt"), "--prompts", str(tmp_path / "p.jsonl")]
    assert srlm([*argv, "--out", str(out), "--n", "2", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and all(len(r["completions"]) == 2 for r in rows)
    assert all(c["num_tokens"] <= 4 for r in rows for c in r["completions"])


def cache_bytes(cache: KVCache) -> int:
    return sum(t.numel() * t.element_size() for t in cache.k + cache.v)


def test_cache_is_sized_to_the_calls_not_to_the_context(model):
    """A budget of two full-context rows: short calls get a short cache with many more rows, a longer call grows
    it (never past the budget), a short one after it reuses it, and the tokens are full-forward greedy throughout."""
    context = model.config.max_seq_len
    budget = KVCache.bytes_per_token(model.config, torch.float32) * context * 2
    gen = Generator(model, max_batch=16, memory_budget_bytes=budget, sampler_impl="torch")
    assert gen.rows == 2 and gen.rows_for(CACHE_LEN_STEP) == min(16, 2 * context // CACHE_LEN_STEP)

    def check(prompts, n_new):
        params = SamplingParams(max_new_tokens=n_new, temperature=0.0)
        for p, r in zip(prompts, gen.generate(prompts, params)):
            assert r.token_ids == greedy_reference(model, p, n_new)
        assert cache_bytes(gen.cache) <= budget

    short = prompts_of((5, 9, 3, 7, 11, 6, 8, 4), seed=3)
    check(short, 12)
    assert (gen.cache.batch, gen.cache.max_len) == (8, CACHE_LEN_STEP)  # 8 rows at once, not 2
    check(prompts_of((300, 20, 41), seed=4), 8)  # 308 slots: the cache grows to two steps, and keeps the most
    grown = (gen.cache.batch, gen.cache.max_len)  # rows (of the 8 it had) the budget holds at that length
    assert grown == (gen.rows_for(2 * CACHE_LEN_STEP), 2 * CACHE_LEN_STEP) and grown[0] < 8
    check(short[:3], 5)
    assert (gen.cache.batch, gen.cache.max_len) == grown  # reused: a shorter call never shrinks it


def test_default_cpu_budget_follows_the_machine(model, monkeypatch):
    import srlm_fast.engine.generator as G

    monkeypatch.setattr(G, "available_memory_bytes", lambda: 64 << 20)
    assert Generator(model).memory_budget_bytes == 16 << 20  # a quarter of what is available
    monkeypatch.setattr(G, "available_memory_bytes", lambda: 1 << 40)
    assert Generator(model).memory_budget_bytes == G.CPU_BUDGET_CAP
    monkeypatch.undo()  # the real one reads the machine
    assert 0 < G.available_memory_bytes() < 1 << 50


@pytest.mark.slow
def test_compiled_static_shape_decode_on_cpu(model):
    """The GPU's decode path on the CPU: every cache row decodes every step (free rows compute junk), the attended
    length is bucketed, and the step is compiled (inductor here, CUDA graphs on a GPU). ~10 s of compilation."""
    gen = Generator(model, max_batch=3, runner="model", compile=True)
    assert gen.compiled
    prompts = prompts_of((5, 17, 1, 40, 9))
    out = gen.generate(prompts, GREEDY)  # 5 requests through 3 static rows: rows are retired and refilled
    for p, r in zip(prompts, out):
        assert r.token_ids == greedy_reference(model, p, 12)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, n=2, seed=7)
    assert tokens(gen.generate(prompts, params)) == tokens(Generator(model).generate(prompts, params))


# --- CUDA: the model runner with its compiled, CUDA-graphed decode step (static shapes) ---


@pytest.mark.cuda
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_greedy_equals_repeated_argmax_of_full_forwards(compile):
    model = sharpened().cuda()
    prompts = prompts_of((5, 17, 1, 40, 9))
    gen = Generator(model, max_batch=3, compile=compile)
    assert gen.runner_name == "model" and gen.compiled == compile
    out = gen.generate(prompts, GREEDY)
    for p, r in zip(prompts, out):
        assert r.token_ids == greedy_reference(model, p, 12)
    again = gen.generate(prompts[::-1], GREEDY)  # graphs replayed with other rows and lengths
    assert tokens(again) == tokens(out)[::-1]


@pytest.mark.cuda
def test_cuda_seeds_reproduce_across_batch_sizes_and_prefix_reuse():
    model = sharpened().cuda()
    shared = prompts_of((40,), seed=4)[0]
    prompts = [shared + tail for tail in prompts_of((1, 6, 13, 3), seed=5)]
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, n=3, seed=7)
    runs = [
        Generator(model, max_batch=b, prefix_reuse=reuse).generate(prompts, params)
        for b, reuse in ((64, True), (2, True), (5, False))
    ]
    assert tokens(runs[1]) == tokens(runs[0]) and tokens(runs[2]) == tokens(runs[0])
