"""Job configuration of `srlm sft` and `srlm dpo` (and of `train()` called as a library).

Loaded from TOML with `--section.key=value` overrides by `srlm_fast.config.load_job_config(TrainConfig, ...)`;
unknown keys are errors. Every field has a default that runs the debug model on CPU, so a config file
only says what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from srlm_fast.config import ConfigError, finite, require
from srlm_fast.device import resolve_device
from srlm_fast.model.attention import BACKENDS
from srlm_fast.model.checkpoint import is_checkpoint_dir
from srlm_fast.model.config import PRESETS
from srlm_fast.model.tokenizer import TEMPLATES


def _require_nonnegative(value: float, key: str) -> None:
    require(finite(value) and value >= 0, key, "must be >= 0", value)


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
    # Start over in a run_dir that holds an earlier training run (its checkpoints and metrics are removed) and
    # replace an existing final_dir checkpoint. Without it such outputs are refused (`srlm sft --overwrite`).
    overwrite: bool = False
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

    def validate(self, *, check_paths: bool = True) -> None:
        """Every value checked before any work, with messages naming the key: required keys, counts, sizes,
        intervals, rates, names (device, attention backend, preset, chat template) and, with `check_paths`,
        that the input files and directories exist."""
        m, d, o, s, p, c, lg = (
            self.model,
            self.data,
            self.optim,
            self.schedule,
            self.dpo,
            self.checkpoint,
            self.logging,
        )
        if not d.train:
            raise ConfigError("data.train: path of the training JSONL is required")
        if m.init is None and m.preset is None:
            raise ConfigError("model.init (a checkpoint directory) or model.preset is required")
        if self.task == "dpo" and m.init is None:
            raise ConfigError("model.init: DPO starts from a checkpoint (it is also the reference model)")
        if m.init is None and m.tokenizer is None:
            raise ConfigError("model.tokenizer is required when training from a preset (no init checkpoint)")
        try:
            resolve_device(self.device)
        except ValueError as e:
            raise ConfigError(f"device: {e}") from None
        require(
            m.attn_backend in BACKENDS,
            "model.attn_backend",
            f"must be one of {', '.join(BACKENDS)}",
            m.attn_backend,
        )
        if m.init is None:
            require(m.preset in PRESETS, "model.preset", f"must be one of {', '.join(PRESETS)}", m.preset)
        require(d.template is None or d.template in TEMPLATES, "data.template",
                f"must be one of {', '.join(TEMPLATES)}", d.template)  # fmt: skip
        require(d.max_seq_len >= 2, "data.max_seq_len", "must be >= 2", d.max_seq_len)
        require(s.micro_batch_size >= 1, "schedule.micro_batch_size", "must be >= 1", s.micro_batch_size)
        require(s.grad_accum >= 1, "schedule.grad_accum", "must be >= 1", s.grad_accum)
        require(s.max_steps >= 0, "schedule.max_steps", "must be >= 0 (0: use epochs)", s.max_steps)
        if s.max_steps == 0:
            require(
                finite(s.epochs) and s.epochs > 0,
                "schedule.epochs",
                "must be > 0 when max_steps is 0",
                s.epochs,
            )
        if not (finite(o.lr) and o.lr > 0 and finite(o.min_lr) and 0 <= o.min_lr <= o.lr):
            raise ConfigError(f"optim: need lr > 0 and 0 <= min_lr <= lr, got lr={o.lr}, min_lr={o.min_lr}")
        require(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0", o.warmup_steps)
        _require_nonnegative(o.weight_decay, "optim.weight_decay")
        for key in ("beta1", "beta2"):
            v = getattr(o, key)
            require(finite(v) and 0 <= v < 1, f"optim.{key}", "must be in [0, 1)", v)
        require(finite(o.eps) and o.eps > 0, "optim.eps", "must be > 0", o.eps)
        require(
            not math.isnan(o.grad_clip),
            "optim.grad_clip",
            "must be a number (<= 0: no clipping)",
            o.grad_clip,
        )
        require(finite(p.beta) and p.beta > 0, "dpo.beta", "must be > 0", p.beta)
        require(finite(p.label_smoothing) and 0 <= p.label_smoothing < 0.5, "dpo.label_smoothing",
                "must be in [0, 0.5)", p.label_smoothing)  # fmt: skip
        require(finite(p.nll_weight) and p.nll_weight >= 0, "dpo.nll_weight", "must be >= 0", p.nll_weight)
        require(bool(c.run_dir), "checkpoint.run_dir", "must be a directory path", c.run_dir)
        require(
            c.final_dir is None or bool(c.final_dir),
            "checkpoint.final_dir",
            "must be a directory path",
            c.final_dir,
        )
        require(
            c.save_every >= 0,
            "checkpoint.save_every",
            "must be >= 0 (0: only the final checkpoint)",
            c.save_every,
        )
        require(c.keep_last >= 1, "checkpoint.keep_last", "must be >= 1", c.keep_last)
        require(c.kill_after_step >= 0, "checkpoint.kill_after_step", "must be >= 0", c.kill_after_step)
        require(lg.log_every >= 1, "logging.log_every", "must be >= 1", lg.log_every)
        _require_nonnegative(lg.peak_tflops, "logging.peak_tflops")
        if check_paths:
            self._check_paths()

    def _check_paths(self) -> None:
        m, d = self.model, self.data
        train = Path(d.train)
        if train.is_dir():
            raise ConfigError(f"data.train: {train} is a directory, expected a JSONL file")
        if not train.is_file():
            raise ConfigError(f"data.train: {train}: no such file")
        if m.init is not None and not is_checkpoint_dir(m.init):
            what = (
                "no such directory"
                if not Path(m.init).exists()
                else "not a checkpoint (config.json + weights)"
            )
            raise ConfigError(f"model.init: {m.init}: {what}")
        tok = m.tokenizer or m.init
        if tok is not None and not (Path(tok) / "tokenizer.json").is_file():
            raise ConfigError(
                f"model.{'tokenizer' if m.tokenizer else 'init'}: {tok}: no tokenizer.json there"
            )
