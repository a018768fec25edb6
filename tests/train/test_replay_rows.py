"""A DPO row whose chosen and rejected responses are the same (the loop's `pairs.replay` rows) contributes no DPO
gradient to the model, only its NLL term: it is an SFT example inside a DPO batch."""

import torch

from srlm_fast.model.config import get_preset
from srlm_fast.model.llama import build_model
from srlm_fast.train.data import IGNORE_INDEX
from srlm_fast.train.losses import LMWithLoss


def _grads(lm: LMWithLoss, ids, targets, nll_weight: float) -> list[torch.Tensor]:
    lm.zero_grad()
    zero = torch.zeros(ids.shape[0] // 2)
    options = {"beta": 0.1, "nll_weight": nll_weight}
    lm(ids, targets, mode="dpo", ref_chosen=zero, ref_rejected=zero, dpo_options=options)["loss"].backward()
    return [p.grad.clone() for p in lm.parameters()]


def _sft_grads(lm: LMWithLoss, ids, targets) -> list[torch.Tensor]:
    """Gradients of the mean per-token NLL of the rows (what the DPO loss's NLL term is for one pair)."""
    lm.zero_grad()
    n = (targets != IGNORE_INDEX).sum()
    (lm(ids, targets, mode="sft")["loss_sum"] / n).backward()
    return [p.grad.clone() for p in lm.parameters()]


def test_identical_chosen_and_rejected_give_no_dpo_gradient_only_the_nll_one():
    torch.manual_seed(0)
    lm = LMWithLoss(build_model(get_preset("tiny"), seed=0)).float()
    ids = torch.randint(0, 512, (1, 12))
    targets = ids.roll(-1, dims=1)
    targets[:, :6] = IGNORE_INDEX  # the prompt
    targets[:, -1] = IGNORE_INDEX
    pair = torch.cat([ids, ids]), torch.cat([targets, targets])  # row 0 chosen, row 1 rejected: the same
    for g in _grads(lm, *pair, nll_weight=0.0):
        assert g.abs().max() < 1e-6
    with_nll, nll_only = _grads(lm, *pair, nll_weight=1.0), _sft_grads(lm, ids, targets)
    assert any(g.abs().max() > 1e-4 for g in nll_only)
    for a, b in zip(with_nll, nll_only):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    # A real pair does get a DPO gradient (the test can fail).
    other = ids.clone()
    other[:, 7:] = (other[:, 7:] + 1) % 512
    other_t = other.roll(-1, dims=1)
    other_t[:, :6] = IGNORE_INDEX
    other_t[:, -1] = IGNORE_INDEX
    real = torch.cat([ids, other]), torch.cat([targets, other_t])
    assert any(g.abs().max() > 1e-4 for g in _grads(lm, *real, nll_weight=0.0))
