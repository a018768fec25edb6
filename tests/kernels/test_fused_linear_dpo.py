"""dpo_loss and fused_linear_dpo_loss against a naive fp64 path (materialised logits, log-softmax, gather),
with the loss formulas written out independently of the library."""

from __future__ import annotations

import math

import pytest
import torch

from srlm_kernels import DPOOutput, dpo_loss, fused_linear_dpo_loss

IGNORE = -100
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # on a CUDA machine the Triton kernels run for real


def naive_seq_logps(hidden, weight, targets):
    """(2P, T, D), (V, D), (2P, T) → summed response log-probs (2P,) and response lengths (2P,), fp64."""
    logp = torch.log_softmax((hidden.double() @ weight.double().T), dim=-1)  # (2P, T, V)
    mask = targets != IGNORE
    tok = logp.gather(-1, torch.where(mask, targets, 0)[..., None]).squeeze(-1) * mask
    return tok.sum(-1), mask.sum(-1)


def naive_loss(pc, pr, rc, rr, beta, loss_type, eps, lc=None, lr=None):
    if loss_type == "ipo":
        pc, rc, pr, rr = pc / lc, rc / lc, pr / lr, rr / lr
    u = (pc - rc) - (pr - rr)
    if loss_type == "sigmoid":
        sig = lambda x: 1 / (1 + torch.exp(-x))
        per = -(1 - eps) * torch.log(sig(beta * u)) - eps * torch.log(sig(-beta * u))
    elif loss_type == "ipo":
        per = (u - 1 / (2 * beta)) ** 2
    else:
        per = torch.clamp(1 - beta * u, min=0)
    return per.mean(), beta * (pc - rc), beta * (pr - rr)


def make_batch(p=3, t=11, d=32, v=123, seed=0, device=DEVICE):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2 * p, t, d, generator=gen)
    weight = torch.randn(v, d, generator=gen) / d**0.5 * 2
    targets = torch.randint(0, v, (2 * p, t), generator=gen)
    for i in range(2 * p):  # prompt of varying length, then response, then padding
        prompt = 2 + i % 3
        pad = (i * 2) % 4
        targets[i, :prompt] = IGNORE
        if pad:
            targets[i, t - pad :] = IGNORE
    ref_c = -torch.rand(p, generator=gen, dtype=torch.float64) * 20 - 15
    ref_r = -torch.rand(p, generator=gen, dtype=torch.float64) * 20 - 15
    return tuple(x.to(device) for x in (hidden, weight, targets, ref_c.float(), ref_r.float()))


# --- dpo_loss on summed log-probs ---


@pytest.mark.parametrize(
    ("loss_type", "eps"), [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0), ("hinge", 0.0)]
)
def test_dpo_loss_formulas_and_metrics(loss_type, eps):
    gen = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (-torch.rand(5, generator=gen, dtype=torch.float64) * 30 for _ in range(4))
    lc, lr = torch.tensor([3, 5, 7, 1, 9]), torch.tensor([4, 4, 2, 8, 6])
    pc_leaf = pc.clone().requires_grad_()
    out = dpo_loss(
        pc_leaf,
        pr,
        rc,
        rr,
        beta=0.3,
        loss_type=loss_type,
        label_smoothing=eps,
        chosen_lengths=lc,
        rejected_lengths=lr,
    )
    want, wc, wr = naive_loss(pc, pr, rc, rr, 0.3, loss_type, eps, lc.double(), lr.double())
    assert isinstance(out, DPOOutput)
    torch.testing.assert_close(out.loss.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.chosen_rewards.double(), wc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.rejected_rewards.double(), wr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.margins, out.chosen_rewards - out.rejected_rewards)
    assert out.reward_accuracy.item() == pytest.approx((wc > wr).double().mean().item())
    assert out.policy_chosen_logps.shape == (5,) and out.nll.item() == 0.0
    assert out.loss.requires_grad
    assert not any(t.requires_grad for t in (out.chosen_rewards, out.margins, out.policy_chosen_logps))


def test_dpo_loss_sigmoid_at_equal_policy_and_reference_is_log2():
    z = torch.zeros(4)
    out = dpo_loss(z, z, z, z)
    assert out.loss.item() == pytest.approx(math.log(2))
    assert out.reward_accuracy.item() == 0.0


def test_dpo_loss_bad_input():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(z, z, z, z, loss_type="kto")
    with pytest.raises(ValueError, match="lengths"):
        dpo_loss(z, z, z, z, loss_type="ipo")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(z, z, z, z, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(z, z, z, torch.zeros(2))


# --- fused_linear_dpo_loss ---


@pytest.mark.parametrize("impl", ["reference", "chunked", "triton"])
@pytest.mark.parametrize(
    ("loss_type", "eps", "nll_weight"),
    [("sigmoid", 0.0, 0.0), ("sigmoid", 0.1, 0.5), ("ipo", 0.0, 0.0), ("hinge", 0.0, 1.0)],
)
def test_fused_dpo_matches_naive(impl, loss_type, eps, nll_weight):
    hidden, weight, targets, ref_c, ref_r = make_batch()
    p = ref_c.shape[0]
    beta = 0.2
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    out = fused_linear_dpo_loss(
        h,
        w,
        targets,
        ref_c,
        ref_r,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=eps,
        nll_weight=nll_weight,
        impl=impl,
    )
    out.loss.backward()

    h64 = hidden.double().requires_grad_()
    w64 = weight.double().requires_grad_()
    seq, lens = naive_seq_logps(h64, w64, targets)
    want, wc, wr = naive_loss(
        seq[:p], seq[p:], ref_c.double(), ref_r.double(), beta, loss_type, eps, lens[:p], lens[p:]
    )
    nll = (-seq[:p] / lens[:p]).mean()
    (want + nll_weight * nll).backward()

    tol = {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(out.loss.double(), want + nll_weight * nll, **tol)
    torch.testing.assert_close(out.chosen_rewards.double(), wc.detach(), **tol)
    torch.testing.assert_close(out.rejected_rewards.double(), wr.detach(), **tol)
    torch.testing.assert_close(out.policy_chosen_logps.double(), seq[:p].detach(), **tol)
    torch.testing.assert_close(out.policy_rejected_logps.double(), seq[p:].detach(), **tol)
    assert out.reward_accuracy.item() == pytest.approx((wc > wr).double().mean().item())
    assert out.nll.item() == pytest.approx(nll.item() if nll_weight else 0.0, rel=1e-5)
    torch.testing.assert_close(h.grad.double(), h64.grad, **tol)
    torch.testing.assert_close(w.grad.double(), w64.grad, **tol)


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_fused_dpo_realistic_vocab(impl):
    hidden, weight, targets, ref_c, ref_r = make_batch(p=2, t=16, d=128, v=4096, seed=2)
    h = hidden.clone().requires_grad_()
    out = fused_linear_dpo_loss(h, weight, targets, ref_c, ref_r, nll_weight=0.2, impl=impl)
    out.loss.backward()
    h64 = hidden.double().requires_grad_()
    seq, lens = naive_seq_logps(h64, weight, targets)
    want, _, _ = naive_loss(seq[:2], seq[2:], ref_c.double(), ref_r.double(), 0.1, "sigmoid", 0.0)
    want = want + 0.2 * (-seq[:2] / lens[:2]).mean()
    want.backward()
    torch.testing.assert_close(out.loss.double(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-4, atol=1e-5)


def test_fused_dpo_low_memory_backward(monkeypatch):
    """`low_memory` reaches the Triton backward through the DPO loss: fp32 forced into the two-pass backward
    (dh a row block at a time) gives the gradients of the one-pass backward."""
    import srlm_kernels.cross_entropy_triton as tri

    calls = []
    monkeypatch.setattr(
        tri, "_dh_in_row_slices", lambda opts, dtype: calls.append(opts.low_memory) or opts.low_memory
    )
    monkeypatch.setattr(tri, "_dh_slice_rows", lambda n, d, block_n: block_n)
    hidden, weight, targets, ref_c, ref_r = make_batch(p=2, t=40, seed=4)
    grads = []
    for low in (False, True):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        out = fused_linear_dpo_loss(h, w, targets, ref_c, ref_r, impl="triton", low_memory=low)
        out.loss.backward()
        grads.append((out.loss.detach(), h.grad, w.grad))
    assert calls == [False, True]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_fused_dpo_empty_response_is_finite(impl):
    hidden, weight, targets, ref_c, ref_r = make_batch()
    targets[0] = IGNORE  # a chosen response with no tokens: log-prob 0, length clamped to 1 for ipo/nll
    h = hidden.clone().requires_grad_()
    out = fused_linear_dpo_loss(h, weight, targets, ref_c, ref_r, loss_type="ipo", nll_weight=1.0, impl=impl)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(h.grad).all()
    assert out.policy_chosen_logps[0].item() == 0.0
    assert torch.equal(h.grad[0], torch.zeros_like(h.grad[0]))


def test_fused_dpo_bad_shapes():
    hidden, weight, targets, ref_c, ref_r = make_batch()
    with pytest.raises(ValueError, match=r"\(2P, T, D\)"):
        fused_linear_dpo_loss(hidden[:5], weight, targets[:5], ref_c, ref_r)
    with pytest.raises(ValueError, match="targets shape"):
        fused_linear_dpo_loss(hidden, weight, targets[:, :-1], ref_c, ref_r)
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        fused_linear_dpo_loss(hidden, weight, targets, ref_c[:2], ref_r)
    with pytest.raises(ValueError, match="nll_weight"):
        fused_linear_dpo_loss(hidden, weight, targets, ref_c, ref_r, nll_weight=-1.0)
