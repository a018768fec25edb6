"""DPO losses: on summed log-probs (`dpo_loss`) and fused with the LM head (`fused_linear_dpo_loss`).

With policy π, reference π_ref and per-sequence summed log-probs, the implicit rewards are
r_c = β (log π(y_c) − log π_ref(y_c)) and r_r likewise, and u = (r_c − r_r) / β:

    sigmoid (DPO, Rafailov et al. 2023):   −(1 − ε) log σ(β u) − ε log σ(−β u)   (ε: conservative DPO)
    ipo     (Azar et al. 2023):             (u − 1 / (2β))²  on length-normalised (per-token mean) log-probs
    hinge   (SLiC, Zhao et al. 2023):       max(0, 1 − β u)

optionally plus nll_weight · NLL(chosen) (Iterative Reasoning Preference Optimization, Pang et al. 2024),
the NLL being each chosen sequence's mean per-token negative log-likelihood, averaged over pairs.

The fused version never materialises the (2P · T, V) logits of the policy: it calls
`fused_linear_logprobs` (Triton tiles on CUDA, row chunks on CPU), so its extra memory is O(P · T) floats
plus dh and dW, against four (tokens × vocabulary) tensors for a naive log-softmax-and-gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fused_linear_cross_entropy import fused_linear_logprobs

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


@dataclass
class DPOOutput:
    """loss is differentiable; every other field is detached (metrics for logging)."""

    loss: torch.Tensor  # () fp32
    chosen_rewards: torch.Tensor  # (P,) β (log π − log π_ref) of the chosen responses
    rejected_rewards: torch.Tensor  # (P,)
    margins: torch.Tensor  # (P,) chosen_rewards − rejected_rewards
    reward_accuracy: torch.Tensor  # () fraction of pairs with chosen_rewards > rejected_rewards
    policy_chosen_logps: torch.Tensor  # (P,) summed log-probs of the chosen responses
    policy_rejected_logps: torch.Tensor  # (P,)
    nll: torch.Tensor  # () chosen NLL (mean per token, averaged over pairs); 0 when nll_weight == 0


def _check_dpo_options(beta: float, loss_type: str, label_smoothing: float) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if not float(beta) > 0.0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= float(label_smoothing) < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(
            f"label_smoothing (conservative DPO) is defined for loss_type='sigmoid' only, not {loss_type!r}"
        )


def _pair_losses(
    pc: torch.Tensor,
    pr: torch.Tensor,
    rc: torch.Tensor,
    rr: torch.Tensor,
    beta: float,
    loss_type: str,
    eps: float,
) -> torch.Tensor:
    """Per-pair loss (P,) from (possibly length-normalised) policy and reference log-probs."""
    u = (pc - rc) - (pr - rr)  # (P,)
    if loss_type == "sigmoid":
        return -(1.0 - eps) * F.logsigmoid(beta * u) - eps * F.logsigmoid(-beta * u)
    if loss_type == "ipo":
        return (u - 1.0 / (2.0 * beta)).square()
    return torch.relu(1.0 - beta * u)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> DPOOutput:
    """DPO-family loss on per-sequence summed log-probs (each (P,)); the loss is the mean over pairs.

    loss_type "ipo" length-normalises all four log-probs and needs chosen_lengths and rejected_lengths
    (response token counts, (P,)); rewards are then reported on the normalised log-probs too.
    """
    _check_dpo_options(beta, loss_type, label_smoothing)
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    shape = tuple(policy_chosen_logps.shape)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"policy_chosen_logps must be a non-empty (P,) tensor, got shape {shape}")
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    for name, t in zip(names, logps):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    pc, pr, rc, rr = (t.float() for t in logps)
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError(
                "loss_type='ipo' needs chosen_lengths and rejected_lengths for length normalisation"
            )
        lc = chosen_lengths.to(pc.device).float().clamp(min=1)
        lr = rejected_lengths.to(pc.device).float().clamp(min=1)
        if tuple(lc.shape) != shape or tuple(lr.shape) != shape:
            raise ValueError(f"chosen_lengths and rejected_lengths must have shape {shape}")
        pc, rc, pr, rr = pc / lc, rc / lc, pr / lr, rr / lr
    loss = _pair_losses(pc, pr, rc, rr, float(beta), loss_type, float(label_smoothing)).mean()
    with torch.no_grad():
        chosen_rewards = beta * (pc - rc)
        rejected_rewards = beta * (pr - rr)
        return DPOOutput(
            loss=loss,
            chosen_rewards=chosen_rewards,
            rejected_rewards=rejected_rewards,
            margins=chosen_rewards - rejected_rewards,
            reward_accuracy=(chosen_rewards > rejected_rewards).float().mean(),
            policy_chosen_logps=policy_chosen_logps.detach().float(),
            policy_rejected_logps=policy_rejected_logps.detach().float(),
            nll=loss.new_zeros(()),
        )


def fused_linear_dpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    nll_weight: float = 0.0,
    ignore_index: int = -100,
    impl: str = "auto",
    low_memory: bool = False,
) -> DPOOutput:
    """DPO loss straight from the policy's final hidden states, fused with the LM head.

    hidden (2P, T, D) and targets (2P, T): rows [0:P] are the chosen sequences and rows [P:2P] the rejected
    ones, targets already shifted (targets[:, t] is the token after position t), ignore_index on prompt
    and padding. ref_chosen_logps, ref_rejected_logps (P,): the reference model's summed response log-probs.
    nll_weight > 0 adds nll_weight · NLL(chosen) (IRPO). low_memory: as in `fused_linear_cross_entropy` (Triton
    only). Returns a `DPOOutput`.
    """
    _check_dpo_options(beta, loss_type, label_smoothing)
    if not float(nll_weight) >= 0.0:
        raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
    if hidden.dim() != 3 or hidden.shape[0] % 2 or hidden.shape[0] == 0:
        raise ValueError(f"hidden must be (2P, T, D) with chosen rows first, got shape {tuple(hidden.shape)}")
    if tuple(targets.shape) != tuple(hidden.shape[:2]):
        raise ValueError(f"targets shape {tuple(targets.shape)} must be (2P, T) = {tuple(hidden.shape[:2])}")
    p = hidden.shape[0] // 2
    for name, t in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        if tuple(t.shape) != (p,):
            raise ValueError(f"{name} must have shape (P,) = ({p},), got {tuple(t.shape)}")
    token_logps = fused_linear_logprobs(
        hidden, weight, targets, ignore_index=ignore_index, impl=impl, low_memory=low_memory
    )  # (2P, T)
    seq_logps = token_logps.sum(dim=1)  # (2P,)
    lengths = (targets != ignore_index).sum(dim=1)  # (2P,)
    out = dpo_loss(
        seq_logps[:p],
        seq_logps[p:],
        ref_chosen_logps.to(seq_logps.device),
        ref_rejected_logps.to(seq_logps.device),
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        chosen_lengths=lengths[:p],
        rejected_lengths=lengths[p:],
    )
    if nll_weight:
        nll = (-seq_logps[:p] / lengths[:p].clamp(min=1)).mean()  # per-token mean per sequence, then pairs
        out.loss = out.loss + float(nll_weight) * nll
        out.nll = nll.detach()
    return out
