"""fused_linear_cross_entropy / fused_linear_logprobs: chunked and Triton paths against autograd on the
materialising fp64 reference. Without CUDA the Triton path runs under TRITON_INTERPRET=1 (fp32/fp16; bf16 is
CUDA-only) and interpreter time grows with programs × loop iterations, so shapes are small and blocks large.
On a CUDA machine the same tests run every path on the GPU, with the Triton kernels compiled for real."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import srlm_kernels.cross_entropy_chunked as chunked_mod
from srlm_kernels import (
    fused_linear_cross_entropy,
    fused_linear_logprobs,
    linear_cross_entropy_reference,
    linear_logprobs_reference,
)

IMPLS = ["chunked", "triton"]
ODD = (47, 32, 123)  # N, D, V: nothing a power of two
MULTI = (150, 300, 123)  # several row blocks and D chunks in the kernels
REAL = (64, 128, 4096)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_case(
    n: int, d: int, v: int, ignore: str = "none", bias: bool = False, seed: int = 0, device: str = DEVICE
):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen)
    weight = torch.randn(v, d, generator=gen) / d**0.5 * 2.0  # logits with a few units of spread
    targets = torch.randint(0, v, (n,), generator=gen)
    if ignore == "half":
        targets[torch.randperm(n, generator=gen)[: n // 2]] = -100
    elif ignore == "all":
        targets[:] = -100
    b = torch.randn(v, generator=gen) if bias else None
    return tuple(None if t is None else t.to(device) for t in (hidden, weight, targets, b))


def run(fn, hidden, weight, targets, bias, upstream_seed: int | None = None, **kw):
    """Loss and gradients of (loss · u).sum(), u non-uniform for reduction='none' (a loss that is not last)."""
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    b = None if bias is None else bias.clone().requires_grad_()
    extra = {} if b is None else {"bias": b}
    out = fn(h, w, targets, **extra, **kw)
    u = torch.ones_like(out)
    if out.dim():
        gen = torch.Generator().manual_seed(upstream_seed or 1)
        u = (torch.rand(out.shape, generator=gen) * 2 - 0.5).to(
            out.device, out.dtype
        )  # same u in fp32 and fp64
    (out * u).sum().backward()
    grads = [h.grad, w.grad] + ([] if b is None else [b.grad])
    return out.detach(), grads


def assert_matches(fn, ref, hidden, weight, targets, bias, atol=2e-5, rtol=2e-4, **kw):
    out, grads = run(fn, hidden, weight, targets, bias, **kw)
    d64 = lambda t: None if t is None else t.double()
    ref_out, ref_grads = run(ref, d64(hidden), d64(weight), targets, d64(bias), **kw)
    assert out.dtype == torch.float32 and out.shape == ref_out.shape
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref_out, atol=atol, rtol=rtol)
    for name, g, rg in zip(("hidden", "weight", "bias"), grads, ref_grads):
        assert g is not None, name
        assert g.dtype == torch.float32, name
        torch.testing.assert_close(
            g.double(), rg, atol=atol, rtol=rtol, msg=lambda m, n=name: f"grad {n}: {m}"
        )


def ce(impl: str):
    return lambda h, w, y, **kw: fused_linear_cross_entropy(h, w, y, impl=impl, **kw)


# --- the reference itself against torch's cross_entropy (guards against a shared math mistake) ---


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_reference_matches_torch(reduction, label_smoothing):
    hidden, weight, targets, bias = make_case(*ODD, ignore="half", bias=True, device="cpu")
    got = linear_cross_entropy_reference(
        hidden, weight, targets, bias=bias, reduction=reduction, label_smoothing=label_smoothing
    )
    want = F.cross_entropy(
        hidden @ weight.T + bias, targets, reduction=reduction, label_smoothing=label_smoothing
    )
    torch.testing.assert_close(got, want)


def test_reference_options_by_hand():
    hidden, weight, targets, _ = make_case(*ODD, device="cpu")
    logits = (hidden @ weight.T).double()
    capped = 3.0 * torch.tanh(logits / 3.0)
    lse = torch.logsumexp(capped, -1)
    want = (lse - capped.gather(1, targets[:, None]).squeeze(1) + 1e-3 * lse**2).mean()
    got = linear_cross_entropy_reference(
        hidden.double(), weight.double(), targets, z_loss=1e-3, logit_softcap=3.0
    )
    torch.testing.assert_close(got, want)


# --- chunked and Triton against autograd on the fp64 reference ---


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [ODD, MULTI, REAL], ids=["odd", "multiblock", "v4096"])
@pytest.mark.parametrize("ignore", ["none", "half", "all"])
def test_matches_reference(impl, shape, ignore):
    case = make_case(*shape, ignore=ignore)
    assert_matches(ce(impl), linear_cross_entropy_reference, *case)


OPTIONS = {
    "bias": ({}, True),
    "label_smoothing": ({"label_smoothing": 0.1}, False),
    "z_loss": ({"z_loss": 1e-3}, False),
    "softcap": ({"logit_softcap": 4.0}, False),
    "everything": ({"label_smoothing": 0.05, "z_loss": 1e-4, "logit_softcap": 6.0}, True),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_options(impl, option, reduction):
    kw, bias = OPTIONS[option]
    hidden, weight, targets, b = make_case(*ODD, ignore="half", bias=bias)
    assert_matches(
        ce(impl), linear_cross_entropy_reference, hidden, weight, targets, b, reduction=reduction, **kw
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_everything_realistic_shape(impl):
    kw, _ = OPTIONS["everything"]
    case = make_case(*REAL, ignore="half", bias=True)
    assert_matches(ce(impl), linear_cross_entropy_reference, *case, reduction="none", **kw)


def test_chunked_with_many_chunks(monkeypatch):
    # 123 · 7 elements per chunk → 7 rows per chunk: exercises chunk boundaries in both chunked modes.
    monkeypatch.setattr(chunked_mod, "CHUNK_ELEMENTS", 123 * 7)
    for reduction in ("mean", "none"):
        case = make_case(*ODD, ignore="half", bias=True)
        assert_matches(
            ce("chunked"), linear_cross_entropy_reference, *case, reduction=reduction, label_smoothing=0.1
        )


def test_triton_vocab_split(monkeypatch):
    # On a GPU the forward splits V over programs; the interpreter uses one split unless forced.
    import srlm_kernels.cross_entropy_triton as tri

    monkeypatch.setattr(tri, "_num_splits", lambda n_blocks, v_blocks, device: 3)
    case = make_case(*REAL, ignore="half", bias=True)
    assert_matches(ce("triton"), linear_cross_entropy_reference, *case, label_smoothing=0.1, z_loss=1e-4)


@pytest.mark.parametrize("impl", ["reference", *IMPLS])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_is_zero_not_nan(impl, reduction):
    hidden, weight, targets, bias = make_case(*ODD, ignore="all", bias=True)
    out, grads = run(ce(impl), hidden, weight, targets, bias, reduction=reduction)
    assert torch.equal(out, torch.zeros_like(out))
    for g in grads:
        assert g is not None and torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("impl", ["reference", *IMPLS])
def test_leading_dims_and_frozen_weight(impl):
    hidden, weight, targets, _ = make_case(*ODD, ignore="half")
    h = hidden[:45].reshape(5, 9, -1).clone().requires_grad_()  # (B, T, D)
    y = targets[:45].reshape(5, 9)
    out = fused_linear_cross_entropy(h, weight, y, reduction="none", impl=impl)  # weight needs no grad
    assert out.shape == (5, 9)
    out.sum().backward()
    want = linear_cross_entropy_reference(hidden[:45], weight, targets[:45], reduction="none")
    torch.testing.assert_close(out.reshape(-1), want, atol=2e-5, rtol=2e-4)
    assert h.grad.shape == h.shape


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_forward_without_gradients(impl, reduction):
    hidden, weight, targets, _ = make_case(*ODD, ignore="half")
    want = linear_cross_entropy_reference(hidden, weight, targets, reduction=reduction)
    tol = {"atol": 2e-5, "rtol": 2e-4}
    with torch.no_grad():
        got = fused_linear_cross_entropy(hidden, weight, targets, impl=impl, reduction=reduction)
    torch.testing.assert_close(got, want, **tol)
    got = fused_linear_cross_entropy(
        hidden, weight, targets, impl=impl, reduction=reduction
    )  # grad mode, no leaves
    assert got.shape == want.shape and not got.requires_grad
    torch.testing.assert_close(got, want, **tol)


# --- log-probs ---


def lp(impl: str):
    return lambda h, w, y, **kw: fused_linear_logprobs(h, w, y, impl=impl, **kw)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [ODD, REAL], ids=["odd", "v4096"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs(impl, shape, temperature):
    case = make_case(*shape, ignore="half")
    assert_matches(lp(impl), linear_logprobs_reference, *case, temperature=temperature)


@pytest.mark.parametrize("impl", IMPLS)
def test_logprobs_zero_at_ignored(impl):
    hidden, weight, targets, _ = make_case(*ODD, ignore="half")
    out = fused_linear_logprobs(hidden, weight, targets, impl=impl)
    assert torch.equal(out[targets == -100], torch.zeros_like(out[targets == -100]))
    assert (out[targets != -100] < 0).all()


# --- bad input ---


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"reduction": "avg"}, "reduction"),
        ({"impl": "cuda"}, "impl"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"z_loss": -1.0}, "z_loss"),
        ({"logit_softcap": 0.0}, "logit_softcap"),
    ],
)
def test_bad_options(kw, match):
    hidden, weight, targets, _ = make_case(*ODD)
    with pytest.raises(ValueError, match=match):
        fused_linear_cross_entropy(hidden, weight, targets, **kw)


def test_bad_inputs():
    hidden, weight, targets, _ = make_case(*ODD)
    with pytest.raises(ValueError, match="disagree on D"):
        fused_linear_cross_entropy(hidden[:, :-1], weight, targets)
    with pytest.raises(ValueError, match="dtype"):
        fused_linear_cross_entropy(hidden.double(), weight, targets)
    with pytest.raises(ValueError, match="targets shape"):
        fused_linear_cross_entropy(hidden, weight, targets[:-1])
    with pytest.raises(TypeError, match="integer"):
        fused_linear_cross_entropy(hidden, weight, targets.float())
    bad = targets.clone()
    bad[3] = 123
    with pytest.raises(ValueError, match="outside"):
        fused_linear_cross_entropy(hidden, weight, bad)
    with pytest.raises(ValueError, match="bias"):
        fused_linear_cross_entropy(hidden, weight, targets, bias=torch.zeros(5))
    with pytest.raises(ValueError, match="temperature"):
        fused_linear_logprobs(hidden, weight, targets, temperature=0.0)


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    hidden, weight, targets, _ = make_case(*ODD, device="cpu")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        fused_linear_cross_entropy(hidden, weight, targets, impl="triton")


# --- the backward's vocabulary slices (bounded fp32 scratch for dW) ---


def test_triton_backward_in_vocab_slices_fp32(monkeypatch):
    # A 16/32-bit weight's dW is computed one vocabulary slice per launch; force one block per slice (8 here).
    import srlm_kernels.cross_entropy_triton as tri

    monkeypatch.setattr(tri, "_dw_slice_rows", lambda v, d, block_v, weight_dtype: block_v)
    case = make_case(*REAL, ignore="half", bias=True)
    assert_matches(ce("triton"), linear_cross_entropy_reference, *case, label_smoothing=0.1, z_loss=1e-4)


def test_triton_backward_fp16_weight_through_fp32_slices(monkeypatch):
    """A half-precision weight accumulates each dW slice in fp32 scratch and is rounded once: the result is the
    exact gradient rounded to fp16 (the interpreter runs fp16, not bf16: its bf16 arithmetic is garbage)."""
    import srlm_kernels.cross_entropy_triton as tri

    monkeypatch.setattr(tri, "_dw_slice_rows", lambda v, d, block_v, weight_dtype: block_v)
    hidden, weight, targets, _ = make_case(*REAL, ignore="half")
    h16, w16 = hidden.half(), weight.half()
    out, (gh, gw) = run(ce("triton"), h16, w16, targets, None, reduction="none")
    ref, (rh, rw) = run(
        linear_cross_entropy_reference, h16.double(), w16.double(), targets, None, reduction="none"
    )
    assert gh.dtype == gw.dtype == torch.float16
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-4)
    # The kernel's dots take fp16 operands (softmax gradients rounded to fp16, as on tensor cores), so each
    # gradient is within a few fp16 roundings of the exact one; bf16 or fp16 accumulation would be far worse.
    err = lambda a, b: ((a.double() - b).abs() / b.abs().max()).max().item()
    assert err(gh, rh) < 2e-3 and err(gw, rw) < 2e-3  # fp16 eps ≈ 1e-3; measured ≈ 5e-4


def test_dw_slices_fit_the_scratch_budget():
    import srlm_kernels.cross_entropy_triton as tri

    v, d, block_v = 128256, 4096, 128  # the Llama-3-8B head
    rows = tri._dw_slice_rows(v, d, block_v, torch.bfloat16)
    assert rows % block_v == 0 and 0 < rows * 4 * d <= tri.DW_SCRATCH_BYTES
    assert tri._dw_slice_rows(v, d, block_v, torch.float32) == v  # fp32 accumulates in place: one launch
    assert tri._dw_slice_rows(100, d, block_v, torch.bfloat16) == block_v  # never more than the vocabulary


# --- low_memory: dh in a second pass, a slice of rows at a time (bounded fp32 scratch) ---


def test_triton_low_memory_backward_fp32_all_options(monkeypatch):
    """The two-pass backward through every option, in row slices of one block (fp32 is forced into it here:
    for fp32 inputs `low_memory` normally changes nothing, since dh accumulates in the output)."""
    import srlm_kernels.cross_entropy_triton as tri

    monkeypatch.setattr(tri, "_dh_in_row_slices", lambda opts, dtype: opts.low_memory)
    monkeypatch.setattr(tri, "_dh_slice_rows", lambda n, d, block_n: block_n)
    monkeypatch.setattr(tri, "_dw_slice_rows", lambda v, d, block_v, weight_dtype: block_v)
    case = make_case(*MULTI, ignore="half", bias=True)
    kw = {"label_smoothing": 0.1, "z_loss": 1e-4, "logit_softcap": 5.0, "reduction": "none"}
    low = lambda h, w, y, **k: fused_linear_cross_entropy(h, w, y, impl="triton", low_memory=True, **k)
    assert_matches(low, linear_cross_entropy_reference, *case, **kw)


def _fp32_allocations_of_backward(monkeypatch, n: int, d: int, **kw) -> list[int]:
    """numel of every fp32 tensor of at least n·d elements created while the Triton backward runs (fp16)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import srlm_kernels.cross_entropy_triton as tri

    big: list[int] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel() >= n * d:
                    big.append(t.numel())
            return out

    backward = tri._backward

    def recorded(*args, **kwargs):
        with Record():
            return backward(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(tri, "_backward", recorded)
        hidden, weight, targets, _ = make_case(n, d, n // 2)  # V < N: dW's fp32 scratch is not flagged
        run(ce("triton"), hidden.half(), weight.half(), targets, None, **kw)
    return big


def test_triton_low_memory_holds_no_fp32_dh(monkeypatch):
    """Without low_memory a 16-bit backward sums dh in an fp32 (N, D) buffer; with it, only a slice."""
    import srlm_kernels.cross_entropy_triton as tri

    n, d = 256, 64
    monkeypatch.setattr(tri, "DH_SCRATCH_BYTES", 4 * d * n // 4)  # four row slices
    assert n * d in _fp32_allocations_of_backward(monkeypatch, n, d)  # the recorder sees the one-pass dh
    assert _fp32_allocations_of_backward(monkeypatch, n, d, low_memory=True) == []


def test_triton_low_memory_fp16_row_slices(monkeypatch):
    """fp16 through both passes in several row slices: the same gradients as the one-pass backward."""
    import srlm_kernels.cross_entropy_triton as tri

    calls = []
    row_pass = tri._row_pass
    monkeypatch.setattr(tri, "_row_pass", lambda *a: calls.append(a[0][0].shape[0]) or row_pass(*a))
    monkeypatch.setattr(tri, "_dh_slice_rows", lambda n, d, block_n: 16)  # 48 rows → 3 slices
    hidden, weight, targets, _ = make_case(96, 128, 4096, ignore="half", seed=2)
    h16, w16 = hidden.half(), weight.half()
    out, (gh, gw) = run(ce("triton"), h16, w16, targets, None, reduction="none", low_memory=True)
    out1, (gh1, gw1) = run(ce("triton"), h16, w16, targets, None, reduction="none")
    _, (rh, rw) = run(
        linear_cross_entropy_reference, h16.double(), w16.double(), targets, None, reduction="none"
    )
    assert gh.dtype == gw.dtype == torch.float16
    torch.testing.assert_close(out, out1, atol=0, rtol=0)  # the forward is untouched
    err = lambda a, b: ((a.double() - b).abs() / b.abs().max()).max().item()
    assert err(gh, rh) < 2e-3 and err(gw, rw) < 2e-3
    assert err(gh, gh1.double()) < 2e-3 and torch.equal(gw, gw1)  # dW comes from the same first pass
    assert calls == [48]  # the row pass ran (once per backward, over the 48 non-ignored rows)


def test_dh_slices_fit_the_scratch_budget():
    import srlm_kernels.cross_entropy_triton as tri

    n, d, block_n = 32768, 4096, 128  # 32k tokens of the Llama-3-8B head
    rows = tri._dh_slice_rows(n, d, block_n)
    assert rows % block_n == 0 and 0 < rows * 4 * d <= tri.DH_SCRATCH_BYTES
    assert tri._dh_slice_rows(100, d, block_n) == block_n  # never more than the rows there are


def test_low_memory_is_a_triton_option():
    hidden, weight, targets, _ = make_case(*ODD, device="cpu")
    with pytest.raises(ValueError, match="low_memory"):
        fused_linear_cross_entropy(hidden, weight, targets, impl="chunked", low_memory=True)
    with pytest.raises(TypeError, match="low_memory"):
        fused_linear_cross_entropy(hidden, weight, targets, impl="triton", low_memory="yes")


# --- gradient filtering (Triton backward only) ---


def test_triton_grad_filter_skips_exactly_the_small_tiles():
    """With grad_filter_eps, a (row block × vocabulary block) tile contributes to dh and dW iff some
    |∂loss/∂logit| in it reaches eps; the loss is exact. Checked against fp64 gradients with those tiles zeroed."""
    import srlm_kernels.cross_entropy_triton as tri

    n, d, v = 16, 32, 4096
    hidden, weight, targets, _ = make_case(n, d, v, seed=5)
    weight = weight * 3.0  # a peaked softmax: far-off vocabulary tiles hold only tiny probabilities
    targets = targets % 512  # every target in the first vocabulary block, so the others can be skipped
    block_n, block_v, _, _ = tri._blocks(n, v, d, hidden.dtype)
    logits = hidden.double() @ weight.double().T
    dloss = logits.softmax(-1) - torch.nn.functional.one_hot(targets, v).double()  # (N, V)
    tiles = dloss.abs().reshape(-1, block_n, v // block_v, block_v).amax(dim=(1, 3))  # (N/bn, V/bv)
    # eps in the widest gap between tile maxima, so fp32 rounding cannot flip a tile's fate
    m = tiles.flatten().sort().values
    gap = int((m[1:] / m[:-1]).argmax())
    eps = float((m[gap] * m[gap + 1]).sqrt())
    kept = tiles >= eps
    assert 0 < int(kept.sum()) < kept.numel(), "the case must skip some tiles and keep others"
    mask = kept.repeat_interleave(block_n, 0).repeat_interleave(block_v, 1)  # (N, V)
    grad_logits = torch.where(mask, dloss, 0.0) / n  # reduction "mean"
    out, (gh, gw) = run(
        lambda h, w, y: fused_linear_cross_entropy(h, w, y, impl="triton", grad_filter_eps=eps),
        hidden, weight, targets, None,
    )  # fmt: skip
    torch.testing.assert_close(out.double(), linear_cross_entropy_reference(
        hidden.double(), weight.double(), targets), atol=2e-5, rtol=2e-4)  # fmt: skip
    torch.testing.assert_close(gh.double(), grad_logits @ weight.double(), atol=2e-6, rtol=2e-4)
    torch.testing.assert_close(gw.double(), grad_logits.T @ hidden.double(), atol=2e-6, rtol=2e-4)
    # ... and it differs from the exact gradient, so the skipped tiles were really skipped
    _, (gh_exact, _) = run(ce("triton"), hidden, weight, targets, None)
    assert not torch.allclose(gh, gh_exact, atol=1e-9, rtol=0)


def test_grad_filter_is_a_triton_option():
    hidden, weight, targets, _ = make_case(*ODD, device="cpu")
    with pytest.raises(ValueError, match="grad_filter_eps"):
        fused_linear_cross_entropy(hidden, weight, targets, impl="chunked", grad_filter_eps=1e-4)
    with pytest.raises(ValueError, match="grad_filter_eps"):
        fused_linear_cross_entropy(hidden, weight, targets, impl="triton", grad_filter_eps=-1.0)


# --- bf16 on a GPU: the kernel's error against fp32 at most ~2× that of same-precision torch ---


@pytest.mark.cuda
@pytest.mark.parametrize("impl", ["triton", "triton-low_memory", "chunked"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bf16_error_within_twice_torch(impl, reduction, monkeypatch):
    import srlm_kernels.cross_entropy_triton as tri

    monkeypatch.setattr(
        tri, "DH_SCRATCH_BYTES", 1 << 18
    )  # 64 fp32 rows of D = 1024: 2 slices of BLOCK_N = 128
    hidden, weight, targets, _ = make_case(512, 1024, 32000, ignore="half", seed=3)
    hidden, weight, targets = hidden.cuda(), weight.cuda(), targets.cuda()
    kw = {"reduction": reduction}
    out32, g32 = run(ce("reference"), hidden, weight, targets, None, **kw)
    bf = (hidden.bfloat16(), weight.bfloat16())
    out_t, g_t = run(ce("reference"), *bf, targets, None, **kw)
    impl, _, option = impl.partition("-")
    out_k, g_k = run(ce(impl), *bf, targets, None, **kw, **({option: True} if option else {}))

    def err(a, b):
        return (a.float() - b.float()).abs().max().item()

    assert err(out_k, out32) <= 2 * err(out_t, out32) + 1e-6
    for gk, gt, g in zip(g_k, g_t, g32):
        assert err(gk, g) <= 2 * err(gt, g) + 1e-6


@pytest.mark.cuda
# fp32 tiles that fit (checked ahead of time with sm_90's ptxas: no spills, ≤ 43 KiB of shared memory)
@pytest.mark.parametrize("tiles", [(32, 64, 32, 4, 2), (16, 128, 16, 4, 4)])
def test_gpu_tile_override_gives_the_same_result(tiles, monkeypatch):
    """The tile sweep's override (bench/tune_lce_tiles.py) changes speed only: fp32 against the fp64 reference."""
    import srlm_kernels.cross_entropy_triton as tri

    monkeypatch.setattr(tri, "GPU_TILES_OVERRIDE", tiles)
    case = make_case(*MULTI, ignore="half", bias=True)
    assert_matches(ce("triton"), linear_cross_entropy_reference, *case, label_smoothing=0.1)


@pytest.mark.cuda
def test_gpu_low_memory_backward_peak_is_the_bound_plus_one_scratch():
    """Measured peak of the bf16 backward (gradients included) against the computed one: low_memory stays within
    2·V·D + 2·N·D (dh and dW themselves) plus one fp32 scratch; the default holds an fp32 (N, D) dh on top."""
    import srlm_kernels.cross_entropy_triton as tri

    n, d, v = 16384, 1024, 32000
    gen = torch.Generator(device="cuda").manual_seed(0)
    peaks = {}
    for low in (False, True):
        h = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
        w = (torch.randn(v, d, device="cuda", dtype=torch.bfloat16, generator=gen) / d**0.5).requires_grad_()
        y = torch.randint(0, v, (n,), device="cuda", generator=gen)
        loss = fused_linear_cross_entropy(h, w, y, impl="triton", low_memory=low)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss.backward()
        torch.cuda.synchronize()
        peaks[low] = torch.cuda.max_memory_allocated() - base
        del h, w, y, loss
    grads = 2 * v * d + 2 * n * d
    slack = 8 << 20  # the loss's O(N) buffers and the allocator's rounding
    assert peaks[True] <= grads + max(tri.DW_SCRATCH_BYTES, tri.DH_SCRATCH_BYTES) + slack, peaks
    assert peaks[False] >= grads + 2 * n * d, (
        peaks
    )  # the one-pass fp32 dh (4·N·D bytes) really is the difference
