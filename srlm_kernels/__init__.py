"""Triton kernels for srlm-fast (standalone: never imports srlm_fast).

Public API (see srlm_kernels/README.md):
- `fused_linear_cross_entropy`: LM-head cross-entropy without materialising the logits.
- `fused_linear_logprobs`: per-token log p(target) from hidden states, the same way.
- `fused_linear_dpo_loss`, `dpo_loss`, `DPOOutput`: DPO / IPO / hinge losses (+ IRPO NLL term).
- `linear_cross_entropy_reference`, `linear_logprobs_reference`: materialising pure-torch references.
"""

from .cross_entropy_reference import linear_cross_entropy_reference, linear_logprobs_reference
from .fused_linear_cross_entropy import fused_linear_cross_entropy, fused_linear_logprobs
from .fused_linear_dpo import DPOOutput, dpo_loss, fused_linear_dpo_loss

__all__ = [
    "DPOOutput",
    "dpo_loss",
    "fused_linear_cross_entropy",
    "fused_linear_dpo_loss",
    "fused_linear_logprobs",
    "linear_cross_entropy_reference",
    "linear_logprobs_reference",
]
