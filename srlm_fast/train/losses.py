"""The model and its loss as one module, and how the trainer builds, shards and fills it.

`LMWithLoss` wraps a `Llama` so the LM-head loss runs *inside* the root module's forward. Under FSDP2 the
root's parameters (embeddings, final norm, LM head) are unsharded only during the root's forward and
backward; computing the fused loss there means the kernels always see the full (V, D) head weight and the
head's gradient is reduce-scattered like any other, with no reliance on what stays gathered afterwards.

Outputs are plain dicts of tensors (pytrees), so FSDP2's hooks see every tensor that needs a backward.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

import srlm_kernels as K
from srlm_fast import distributed as D
from srlm_fast.device import resolve_dtype
from srlm_fast.model.checkpoint import load_weights
from srlm_fast.model.config import ModelConfig
from srlm_fast.model.llama import Llama, build_model, materialize
from srlm_fast.train.data import IGNORE_INDEX


class LMWithLoss(nn.Module):
    """`Llama` + fused LM-head losses: SFT cross-entropy, per-sequence log-probs, DPO."""

    def __init__(self, model: Llama, *, lm_head_low_memory: bool = False) -> None:
        super().__init__()
        self.model = model
        # Passed to every fused LM-head loss; only the Triton (CUDA) backward accepts it (see `build_lm`).
        self.head_options = {"low_memory": True} if lm_head_low_memory else {}

    def forward(
        self,
        input_ids: Tensor,  # (B, T)
        targets: Tensor,  # (B, T), shifted, IGNORE_INDEX where there is no target
        *,
        mode: str,
        doc_ids: Tensor | None = None,
        ref_chosen: Tensor | None = None,
        ref_rejected: Tensor | None = None,
        dpo_options: dict | None = None,
    ) -> dict[str, Tensor]:
        """mode "sft": {"loss_sum"} summed token CE; "logprobs": {"logps"} (B,) summed target log-probs;
        "dpo": the fields of `DPOOutput` (rows [0:P] chosen, [P:2P] rejected)."""
        hidden = self.model(input_ids, doc_ids=doc_ids)  # (B, T, D)
        weight = self.model.lm_head_weight  # (V, D), unsharded inside this forward
        if mode == "sft":
            loss = K.fused_linear_cross_entropy(
                hidden.reshape(-1, hidden.shape[-1]),
                weight,
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
                **self.head_options,
            )
            return {"loss_sum": loss}
        if mode == "logprobs":
            logps = K.fused_linear_logprobs(
                hidden, weight, targets, ignore_index=IGNORE_INDEX, **self.head_options
            )  # (B, T)
            return {"logps": logps.sum(dim=1)}
        if mode == "dpo":
            out = K.fused_linear_dpo_loss(
                hidden,
                weight,
                targets,
                ref_chosen,
                ref_rejected,
                ignore_index=IGNORE_INDEX,
                **self.head_options,
                **(dpo_options or {}),
            )
            return dict(vars(out))
        raise ValueError(f"unknown mode {mode!r}")


def build_lm(
    config: ModelConfig,
    info: D.DistInfo,
    *,
    init_dir: str | os.PathLike | None = None,
    init_seed: int = 0,
    attn_backend: str = "sdpa",
    activation_checkpointing: bool = False,
    compile: bool = False,
    param_dtype: str = "auto",
    lm_head_low_memory: bool = False,
) -> LMWithLoss:
    """Build on meta, (shard), materialise and fill: from `init_dir` (HF checkpoint) or a seeded random init.

    Sharded: the master weights stay fp32 and FSDP2 computes in `param_dtype`. Unsharded (one CPU process):
    the weights are simply in `param_dtype`. A random init is the same for every world size: rank 0 draws
    the full model exactly as a single process would and the shards are scattered from it.
    """

    if lm_head_low_memory and info.device.type != "cuda":
        raise ValueError(
            "model.lm_head_low_memory selects the Triton (CUDA) backward of the LM-head loss; on "
            f"{info.device.type} the chunked path's memory is bounded already: set it to false"
        )
    compute_dtype = resolve_dtype(param_dtype, info.device)

    def prepare(lm: LMWithLoss) -> None:
        if activation_checkpointing:
            D.apply_activation_checkpointing(lm.model.layers)
        if compile:
            D.compile_blocks(lm.model.layers)
        if info.sharded:
            D.shard_model(lm, lm.model.layers, info, param_dtype=compute_dtype)

    lm = materialize(
        lambda: LMWithLoss(Llama(config, attn_backend=attn_backend), lm_head_low_memory=lm_head_low_memory),
        device=info.device,
        prepare=prepare,
    )
    with torch.no_grad():
        if init_dir is not None:
            load_weights(lm.model, init_dir)
        elif info.sharded:
            full = {}
            if info.is_main:
                full = {f"model.{k}": v for k, v in build_model(config, seed=init_seed).state_dict().items()}
            D.load_full_state(lm, full, info)
        else:
            lm.model.load_state_dict(build_model(config, seed=init_seed).state_dict())
    if not info.sharded and compute_dtype != torch.float32:
        lm.to(compute_dtype)
    return lm
