"""Tests for srlm_fast.engine.sampling and its native op (csrc/sampling.cpp, csrc/sampling_cuda.cu).

The native tests build the extension on first use (~15-20 s on a 2-core machine, cached afterwards).
Without a compiler they skip with the build error as reason, unless ``SRLM_REQUIRE_NATIVE=1`` (which CI
should set) turns that into a failure.
"""

from __future__ import annotations

import logging
import math
import os

import pytest
import torch

from srlm_fast.engine import native, sampling
from srlm_fast.engine.sampling import sample, sample_sorted, sample_torch, uniforms

MASK64 = (1 << 64) - 1


@pytest.fixture(scope="module")
def native_op():
    """The built native op; skip (or fail under SRLM_REQUIRE_NATIVE=1) when it cannot be built."""
    if not native.enabled():
        pytest.skip("native sampling disabled by SRLM_NATIVE")
    op = native.get_op()
    if op is None:
        msg = f"native sampling extension did not build: {native.build_info()['error']}"
        if os.environ.get("SRLM_REQUIRE_NATIVE") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return op


# ----------------------------------------------------------------------------------------------- helpers


def _py_mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _py_uniform(seed: int, step: int) -> float:
    """Reference of the counter-based uniform with Python's unbounded ints (uint64 semantics)."""
    key = _py_mix64((seed & MASK64) ^ 0x5851F42D4C957F2D)
    h = _py_mix64((key + 0x9E3779B97F4A7C15 * (step & MASK64)) & MASK64)
    return (h >> 11) / 2.0**53


def _exact_probs(logits: list[float], t: float, k: int, p: float) -> list[float]:
    """The filtered, renormalised distribution by a plain full sort, in Python floats (independent spec)."""
    v = len(logits)
    x = [float(a) / t for a in logits]
    order = sorted(range(v), key=lambda i: -x[i])
    m = x[order[0]]
    kept = set(range(v))
    if 0 < k < v:
        kth = x[order[k - 1]]
        kept = {i for i in kept if x[i] >= kth}
    w = {i: math.exp(x[i] - m) for i in kept}
    if p < 1.0:
        z = sum(w.values())
        mass, thr = 0.0, -math.inf
        for i in order:
            if i not in kept:
                continue
            mass += w[i]
            if mass >= p * z:  # the token that crosses p is kept
                thr = x[i]
                break
        kept = {i for i in kept if x[i] >= thr}
    z = sum(w[i] for i in kept)
    return [w[i] / z if i in kept else 0.0 for i in range(v)]


def _chi2_limit(df: int, z: float = 4.5) -> float:
    """Upper chi-square quantile (Wilson-Hilferty); z = 4.5 is a false-alarm rate of ~3e-6."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def _near_boundary(logits: torch.Tensor, t: float, k: int, p: float, u: float, tol: float = 1e-12) -> bool:
    """True when u * W (or a top-p prefix mass) lies within tol (relative) of a boundary, the only case
    where float summation order or an ulp of exp may legitimately make two implementations disagree."""
    if t <= 0:
        return False
    x = logits.double() / t
    keep_k = sampling._keep_mask(x[None], torch.tensor([k]), torch.tensor([1.0], dtype=torch.float64))[0][0]
    w = torch.exp(x - x.max())
    wk = torch.where(keep_k, w, 0.0)
    if p < 1.0:
        prefix = torch.cumsum(torch.sort(wk, descending=True).values, 0)
        if (prefix - p * wk.sum()).abs().min() <= tol * wk.sum():
            return True
    keep, w = sampling._keep_mask(x[None], torch.tensor([k]), torch.tensor([p], dtype=torch.float64))
    cdf = torch.cumsum(torch.where(keep[0], w[0], 0.0), 0)
    return bool((cdf - u * cdf[-1]).abs().min() <= tol * cdf[-1])


def _random_case(b: int, v: int, gen: torch.Generator, ties: bool = False) -> dict:
    """Random logits and mixed per-row parameters: greedy, plain, top-k, top-p and both in one batch."""
    logits = torch.randn(b, v, generator=gen) * 3.0
    if ties:
        logits = torch.round(logits * 2) / 2  # many exact ties, also at top-k / top-p boundaries
        logits[:, ::7] = float("-inf")  # masked tokens
        logits[:, 0] = 1.0  # at least one finite logit per row
    temperature = torch.rand(b, generator=gen) * 1.5 + 0.1
    temperature[torch.rand(b, generator=gen) < 0.2] = 0.0
    top_k = torch.randint(0, min(v, 50) + 1, (b,), generator=gen)
    top_k[torch.rand(b, generator=gen) < 0.4] = 0
    top_p = torch.rand(b, generator=gen) * 0.9 + 0.05
    top_p[torch.rand(b, generator=gen) < 0.4] = 1.0
    seeds = torch.randint(-(2**62), 2**62, (b,), generator=gen)
    steps = torch.randint(0, 10_000, (b,), generator=gen)
    return dict(logits=logits, temperature=temperature, top_k=top_k, top_p=top_p, seeds=seeds, steps=steps)


def _assert_same_tokens(a: torch.Tensor, b: torch.Tensor, case: dict) -> None:
    for r in (a != b).nonzero().flatten().tolist():
        u = float(uniforms(case["seeds"][r : r + 1], case["steps"][r : r + 1]))
        assert _near_boundary(
            case["logits"][r].cpu(),
            float(case["temperature"][r]),
            int(case["top_k"][r]),
            float(case["top_p"][r]),
            u,
        ), f"row {r}: tokens differ ({int(a[r])} vs {int(b[r])}) away from any CDF boundary"


# ------------------------------------------------------------------------------------------- randomness


def test_uniforms_match_python_splitmix64() -> None:
    seeds = [0, 1, -1, 42, 2**63 - 1, -(2**63), 123456789012345]
    steps = [0, 1, 7, 2**40, 2**63 - 1]
    s = torch.tensor([a for a in seeds for _ in steps])
    t = torch.tensor([b for _ in seeds for b in steps])
    want = torch.tensor([_py_uniform(a, b) for a in seeds for b in steps], dtype=torch.float64)
    assert torch.equal(uniforms(s, t), want)


def test_native_uniforms_bit_identical(native_op) -> None:
    gen = torch.Generator().manual_seed(1)
    s = torch.randint(-(2**63), 2**63 - 1, (1000,), generator=gen)
    t = torch.randint(0, 2**62, (1000,), generator=gen)
    assert torch.equal(native_op.uniforms(s, t), uniforms(s, t))


def test_uniforms_are_uniform() -> None:
    # Consecutive steps of one seed and consecutive seeds at one step: both must look uniform.
    n, bins = 100_000, 50
    for s, t in [
        (torch.zeros(n, dtype=torch.long), torch.arange(n)),
        (torch.arange(n), torch.zeros(n, dtype=torch.long)),
    ]:
        u = uniforms(s, t)
        assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
        counts = torch.bincount((u * bins).long(), minlength=bins).double()
        chi2 = float(((counts - n / bins) ** 2 / (n / bins)).sum())
        assert chi2 < _chi2_limit(bins - 1)


# ---------------------------------------------------------------------------------------------- greedy

IMPLS = ["torch", "native"]


def _need(impl: str, request: pytest.FixtureRequest) -> None:
    """Native variants need the built extension (skip/fail through the `native_op` fixture)."""
    if impl == "native":
        request.getfixturevalue("native_op")


@pytest.mark.parametrize("impl", IMPLS)
def test_greedy_rows_mixed_with_sampled_rows(impl: str, request: pytest.FixtureRequest) -> None:
    _need(impl, request)
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(16, 123, generator=gen)
    logits[2, 5] = logits[2, 9] = logits[2].max() + 1  # tie: the first maximum wins, like torch.argmax
    temperature = torch.tensor([0.0, 1.0] * 8)
    tok = sample(
        logits, temperature=temperature, top_k=0, top_p=1.0, seeds=torch.arange(16), steps=3, impl=impl
    )
    assert tok.dtype == torch.int64 and tok.shape == (16,)
    assert torch.equal(tok[::2], logits.argmax(-1)[::2])
    assert int(tok[2]) == 5
    # Sampled rows really sample: over many steps, row 1 draws more than one token.
    many = torch.stack([sample(logits[1:2], temperature=1.0, seeds=1, steps=s, impl=impl) for s in range(20)])
    assert many.unique().numel() > 1


@pytest.mark.parametrize("impl", IMPLS)
def test_top_k_1_equals_greedy(impl: str, request: pytest.FixtureRequest) -> None:
    _need(impl, request)
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 4096, generator=gen) * 2
    tok = sample(
        logits,
        temperature=torch.rand(64, generator=gen) + 0.2,
        top_k=1,
        top_p=torch.rand(64, generator=gen),
        seeds=torch.arange(64),
        steps=torch.arange(64),
        impl=impl,
    )
    assert torch.equal(tok, logits.argmax(-1))


@pytest.mark.parametrize("impl", IMPLS)
def test_low_precision_logits(impl: str, request: pytest.FixtureRequest) -> None:
    _need(impl, request)
    gen = torch.Generator().manual_seed(4)
    case = _random_case(8, 300, gen)
    for dtype in (torch.float16, torch.bfloat16):
        lg = case["logits"].to(dtype)
        args = {k: v for k, v in case.items() if k != "logits"}
        got = sample(lg, **args, impl=impl)
        want = sample_torch(lg.float(), **args)
        assert torch.equal(got, want)


# ---------------------------------------------------------------------------------- native == torch


@pytest.mark.parametrize(
    ("b", "v", "ties"),
    [(1, 1, False), (3, 2, False), (37, 123, False), (37, 123, True), (16, 4096, False), (4, 32000, True)],
)
def test_native_matches_torch_exactly(native_op, b: int, v: int, ties: bool) -> None:
    gen = torch.Generator().manual_seed(1000 * b + v + ties)
    case = _random_case(b, v, gen, ties=ties and v > 1)
    got = sample(**case, impl="native")
    want = sample(**case, impl="torch")
    _assert_same_tokens(got, want, case)


def test_native_matches_torch_large_k_and_flat_distribution(native_op) -> None:
    # Flat logits make top-p keep most of the vocabulary: exercises the grow-the-head loop to its end.
    gen = torch.Generator().manual_seed(5)
    b, v = 12, 4096
    case = _random_case(b, v, gen)
    case["logits"] = torch.randn(b, v, generator=gen) * 0.01
    case["temperature"] = torch.full((b,), 1.0)
    case["top_k"] = torch.tensor([0, 4000, 4095, 4096, 5000, 1, 2, 0, 0, 3000, 0, 100])
    case["top_p"] = torch.tensor([0.99, 0.999, 0.5, 0.9, 1.0, 0.3, 0.0, -1.0, 0.9999999, 0.95, 1.5, 0.7])
    _assert_same_tokens(sample(**case, impl="native"), sample(**case, impl="torch"), case)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_native_matches_torch_exactly_flat_large_vocab(native_op, top_p: float) -> None:
    # Flat rows at V=32000 send top-p past the sorted head of 64 into the histogram search (kept set of
    # thousands of tokens); constant and coarsely tied rows hit its exact-crossing fallback. Exact equality.
    gen = torch.Generator().manual_seed(int(top_p * 100))
    b, v = 12, 32000
    logits = torch.randn(b, v, generator=gen)
    logits[0:4] *= 0.01  # nearly uniform
    logits[4:8] *= 2.5  # the benchmark's N(0, 2.5^2) at T = 0.7
    logits[8] = 0.25  # all equal: p * Z lands exactly on a prefix sum
    logits[9] = torch.round(logits[9] * 4) / 4  # many exact ties
    logits[10, ::3] = float("-inf")  # masked tokens
    case = dict(
        logits=logits,
        temperature=torch.tensor([1.0, 0.7, 1.3, 0.7, 0.7, 1.0, 0.7, 0.5, 1.0, 0.7, 0.7, 2.0]),
        top_k=torch.tensor([0, 0, 20000, 31999, 0, 0, 5000, 0, 0, 0, 0, 30000]),
        top_p=torch.full((b,), top_p),
        seeds=torch.randint(-(2**62), 2**62, (b,), generator=gen),
        steps=torch.randint(0, 10_000, (b,), generator=gen),
    )
    for step in range(4):
        case["steps"] = case["steps"] + step
        got = sample(**case, impl="native")
        want = sample(**case, impl="torch")
        assert torch.equal(got, want), (step, (got != want).nonzero().flatten().tolist())


# ------------------------------------------------------------------------------------------ statistics

CONFIGS = [  # (temperature, top_k, top_p)
    (1.0, 0, 1.0),
    (0.8, 7, 1.0),
    (0.7, 0, 0.8),
    (1.3, 12, 0.6),
]


@pytest.mark.parametrize("impl", ["torch", "sorted", "native"])
@pytest.mark.parametrize(("t", "k", "p"), CONFIGS)
def test_distribution_matches_exact(
    impl: str, t: float, k: int, p: float, request: pytest.FixtureRequest
) -> None:
    """Empirical frequencies over many (seed, step) counters follow the exact filtered distribution."""
    _need(impl, request)
    v, n = 40, 30_000
    gen = torch.Generator().manual_seed(6)
    row = torch.randn(v, generator=gen) * 1.5
    probs = torch.tensor(_exact_probs(row.tolist(), t, k, p), dtype=torch.float64)
    seeds = torch.randint(-(2**62), 2**62, (n,), generator=gen)
    steps = torch.randint(0, 1_000_000, (n,), generator=gen)
    kwargs = dict(temperature=t, top_k=k, top_p=p, seeds=seeds, steps=steps)
    logits = row.expand(n, v)
    tok = sample_sorted(logits, **kwargs) if impl == "sorted" else sample(logits, **kwargs, impl=impl)
    counts = torch.bincount(tok, minlength=v).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0, "sampled a token the filters remove"
    expected = probs[kept] * n
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    df = int(kept.sum()) - 1
    assert chi2 < _chi2_limit(df), f"chi2 {chi2:.1f} over {df} dof"
    # The library's own exact distribution agrees with the independent one.
    lib = sampling.filtered_probs(row[None], temperature=t, top_k=k, top_p=p)[0]
    assert torch.allclose(lib, probs, atol=1e-12)


# ------------------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("impl", IMPLS)
def test_same_counter_same_token_regardless_of_batch(impl: str, request: pytest.FixtureRequest) -> None:
    _need(impl, request)
    gen = torch.Generator().manual_seed(7)
    case = _random_case(24, 777, gen)
    full = sample(**case, impl=impl)
    perm = torch.randperm(24, generator=gen)
    permuted = sample(**{k: v[perm] for k, v in case.items()}, impl=impl)
    assert torch.equal(permuted, full[perm])
    for r in (0, 5, 23):  # each row alone
        alone = sample(**{k: v[r : r + 1] for k, v in case.items()}, impl=impl)
        assert int(alone) == int(full[r])
    # Embedded among other requests' rows.
    other = _random_case(10, 777, gen)
    mixed = sample(**{k: torch.cat([other[k][:4], case[k][:6], other[k][4:]]) for k in case}, impl=impl)
    assert torch.equal(mixed[4:10], full[:6])
    # A different step draws anew: over many rows, not all tokens repeat.
    again = sample(**{**case, "steps": case["steps"] + 1}, impl=impl)
    assert not torch.equal(again[case["temperature"] > 0.5], full[case["temperature"] > 0.5])


def test_global_rng_untouched() -> None:
    gen = torch.Generator().manual_seed(8)
    case = _random_case(8, 100, gen)
    state = torch.get_rng_state()
    sample(**case)
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------------------------------------------- fallback and API


def test_fallback_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRLM_NATIVE", "0")
    gen = torch.Generator().manual_seed(9)
    case = _random_case(8, 123, gen)
    assert not native.available()
    assert torch.equal(sample(**case), sample_torch(**case))
    with pytest.raises(RuntimeError, match="disabled"):
        sample(**case, impl="native")


def test_fallback_when_build_fails(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken_build():
        raise RuntimeError("simulated: no compiler")

    monkeypatch.setenv("SRLM_NATIVE", "1")
    monkeypatch.setattr(native, "_build", broken_build)
    native.reset()
    try:
        gen = torch.Generator().manual_seed(10)
        case = _random_case(8, 123, gen)
        with caplog.at_level(logging.WARNING, logger="srlm_fast.engine.native"):
            for _ in range(3):
                assert torch.equal(sample(**case), sample_torch(**case))
        warnings = [r for r in caplog.records if r.name == "srlm_fast.engine.native"]
        assert len(warnings) == 1 and "simulated: no compiler" in warnings[0].getMessage()
        with pytest.raises(RuntimeError, match="unavailable"):
            sample(**case, impl="native")
    finally:
        native.reset()  # the next caller builds (or loads from cache) for real


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        sample(torch.zeros(5), temperature=1.0, seeds=0, steps=0)
    with pytest.raises(ValueError, match="shape"):
        sample(torch.zeros(2, 5), temperature=torch.ones(3), seeds=0, steps=0)
    with pytest.raises(ValueError, match="impl"):
        sample(torch.zeros(2, 5), temperature=1.0, seeds=0, steps=0, impl="fast")


def test_logprobs() -> None:
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(6, 50, generator=gen)
    tok = sample(logits, temperature=0.7, top_p=0.9, seeds=torch.arange(6), steps=0)
    lp = sampling.token_logprobs(logits, tok)
    assert torch.allclose(lp, torch.log_softmax(logits, -1)[torch.arange(6), tok])
    vals, ids = sampling.top_logprobs(logits, 3)
    assert torch.equal(ids[:, 0], logits.argmax(-1)) and vals.shape == (6, 3)
    plp = sampling.processed_logprobs(logits, tok, temperature=0.7, top_p=0.9)
    probs = sampling.filtered_probs(logits, temperature=0.7, top_p=0.9)
    assert torch.allclose(plp.exp(), probs[torch.arange(6), tok]) and torch.all(torch.isfinite(plp))
    greedy = sampling.processed_logprobs(logits, logits.argmax(-1), temperature=0.0)
    assert torch.equal(greedy, torch.zeros(6, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
def test_cuda_native_matches_torch(native_op) -> None:
    if not native.has_cuda_kernel():
        pytest.fail(f"CUDA available but the extension has no CUDA kernel: {native.build_info()}")
    gen = torch.Generator().manual_seed(12)
    for b, v, ties in [
        (1, 1, False),
        (37, 123, True),
        (64, 4096, False),
        (8, 128256, False),
        (3, 32000, True),
    ]:
        case = _random_case(b, v, gen, ties=ties)
        cuda_case = {k: t.cuda() for k, t in case.items()}
        for dtype in (torch.float32, torch.bfloat16):
            cuda_case["logits"] = case["logits"].to(dtype).cuda()
            got = sample(**cuda_case, impl="native").cpu()
            want = sample(**{**case, "logits": case["logits"].to(dtype).float()}, impl="torch")
            _assert_same_tokens(got, want, {**case, "logits": case["logits"].to(dtype).float()})


@pytest.mark.cuda
@pytest.mark.parametrize(("t", "k", "p"), CONFIGS)
def test_cuda_distribution(native_op, t: float, k: int, p: float) -> None:
    v, n = 40, 30_000
    gen = torch.Generator().manual_seed(6)
    row = torch.randn(v, generator=gen) * 1.5
    probs = torch.tensor(_exact_probs(row.tolist(), t, k, p), dtype=torch.float64)
    seeds = torch.randint(-(2**62), 2**62, (n,), generator=gen)
    steps = torch.randint(0, 1_000_000, (n,), generator=gen)
    tok = sample(
        row.expand(n, v).cuda(),
        temperature=t,
        top_k=k,
        top_p=p,
        seeds=seeds.cuda(),
        steps=steps.cuda(),
        impl="native",
    )
    counts = torch.bincount(tok.cpu(), minlength=v).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0
    expected = probs[kept] * n
    assert float(((counts[kept] - expected) ** 2 / expected).sum()) < _chi2_limit(int(kept.sum()) - 1)
