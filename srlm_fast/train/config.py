"""Job configuration of `srlm sft` and `srlm dpo` (and of `train()` called as a library).

Loaded from TOML with `--section.key=value` overrides by `srlm_fast.config.load_job_config(TrainConfig, ...)`;
unknown keys are errors. Every field has a default that runs the debug model on CPU, so a config file
only says what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from srlm_fast.config import ConfigError


@dataclass
class ModelSection:
    init: str | None = None  # HF checkpoint directory to start from (DPO: also the reference model)
    preset: str | None = None  # random init from a named preset when `init` is not given (SFT only)
    tokenizer: str | None = None  # directory with tokenizer.json; default: `init`
    attn_backend: str = "sdpa"
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each block
    # LM-head loss backward with dh in row slices (srlm_kernels' low_memory): no fp32 (tokens × dim) buffer, for
    # one more pass over the vocabulary. CUDA only (it chooses the Triton backward's strategy); no effect with
    # float32 compute, whose dh accumulates in the gradient itself.
    lm_head_low_memory: bool = False
    param_dtype: Literal["auto", "float32", "bfloat16"] = (
        "auto"  # compute dtype; auto: bf16 on GPU, fp32 on CPU
    )
    save_dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # HF weights; auto: the compute dtype
    init_seed: int = 0


@dataclass
class DataSection:
    train: str = ""  # JSONL: SFT {"messages"} / {"prompt","response"}; DPO {"prompt","chosen","rejected"}
    max_seq_len: int = 1024  # tokens per packed row (SFT) or per sequence (DPO)
    pack: bool = True  # SFT: several documents per row (attention never crosses documents)
    overlong: Literal["truncate", "drop"] = "truncate"
    on_bad_row: Literal["error", "skip"] = "error"  # skip: bad rows are counted and logged with file:line
    template: str | None = None  # chat template name; default: detected from the tokenizer


@dataclass
class OptimSection:
    lr: float = 5.5e-6
    min_lr: float = 1.1e-6  # the cosine floor
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # <= 0: no clipping (the norm is still logged)


@dataclass
class ScheduleSection:
    micro_batch_size: int = 4  # rows per rank per forward (SFT: packed rows; DPO: pairs)
    grad_accum: int = 1  # micro-batches per rank per optimizer step
    max_steps: int = 0  # > 0: exactly this many optimizer steps
    epochs: float = 1.0  # used when max_steps == 0
    seed: int = 0  # data order


@dataclass
class DPOSection:
    beta: float = 0.1
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = 0.0
    nll_weight: float = 0.0  # IRPO: + nll_weight * NLL(chosen)
    # Pairs without ref_chosen_logp / ref_rejected_logp: "compute" them with the initial model before the
    # first step (written to reference_out) or "error".
    missing_reference: Literal["compute", "error"] = "compute"
    reference_out: str | None = None  # default: <run_dir>/pairs.ref.jsonl


@dataclass
class CheckpointSection:
    run_dir: str = "runs/train"
    save_every: int = 0  # steps between periodic checkpoints (0: only the final one)
    keep_last: int = 1  # training-state checkpoints kept (older ones are deleted after a good save)
    final_dir: str | None = None  # HF checkpoint written at the end; default: <run_dir>/final
    resume: bool = True  # continue from the latest checkpoint in run_dir if there is one
    kill_after_step: int = 0  # tests only: SIGKILL this process after that step (simulates a crash)


@dataclass
class LoggingSection:
    log_every: int = 1
    wandb: bool = False
    wandb_project: str = "srlm-fast"
    wandb_run_name: str | None = None
    wandb_mode: Literal["online", "offline", "disabled"] = "online"
    peak_tflops: float = 0.0  # per device for MFU; 0: looked up from the GPU name (no MFU on CPU)


@dataclass
class TrainConfig:
    task: Literal["sft", "dpo"] = "sft"
    device: str = "auto"  # auto / cpu / cuda
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    dpo: DPOSection = field(default_factory=DPOSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def validate(self) -> None:
        """Cross-field checks, with messages naming the key."""
        if not self.data.train:
            raise ConfigError("data.train: path of the training JSONL is required")
        if self.model.init is None and self.model.preset is None:
            raise ConfigError("model.init (a checkpoint directory) or model.preset is required")
        if self.task == "dpo" and self.model.init is None:
            raise ConfigError("model.init: DPO starts from a checkpoint (it is also the reference model)")
        if self.model.init is None and self.model.tokenizer is None:
            raise ConfigError("model.tokenizer is required when training from a preset (no init checkpoint)")
        for key in ("micro_batch_size", "grad_accum"):
            if getattr(self.schedule, key) < 1:
                raise ConfigError(f"schedule.{key} must be >= 1")
        if self.schedule.max_steps < 0 or not (self.schedule.max_steps or self.schedule.epochs > 0):
            raise ConfigError("schedule: set max_steps > 0 or epochs > 0")
        if self.data.max_seq_len < 2:
            raise ConfigError("data.max_seq_len must be >= 2")
        if not (self.optim.lr > 0 and 0 <= self.optim.min_lr <= self.optim.lr):
            raise ConfigError("optim: need lr > 0 and 0 <= min_lr <= lr")
        if self.optim.warmup_steps < 0:
            raise ConfigError("optim.warmup_steps must be >= 0")
        if self.checkpoint.keep_last < 1:
            raise ConfigError("checkpoint.keep_last must be >= 1")
        if not math.isfinite(self.dpo.beta) or self.dpo.beta <= 0:
            raise ConfigError("dpo.beta must be > 0")
