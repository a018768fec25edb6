"""One training loop for SFT and DPO: a plain process or `torchrun` (any number of processes and nodes).

    from srlm_fast.train.trainer import train
    from srlm_fast.train.config import TrainConfig
    final_dir = train(cfg)          # an HF checkpoint directory (weights + config.json + tokenizer.json)

The model is built on the meta device and sharded from outside with FSDP2 (see distributed.py and
losses.py). Losses come from the fused kernels of `srlm_kernels`, so (tokens × vocabulary) logits never
exist:

* SFT: cross-entropy summed over assistant tokens and divided by the GLOBAL number of target tokens of
  the optimizer step (all micro-batches, all ranks; counted and all-reduced before the first forward).
  Every token weighs the same however the batch is split, so 1 process and N processes, or 8
  micro-batches of 1 and 1 of 8, take the same step. FSDP2 sums (not averages) gradients over ranks.
* DPO: chosen and rejected in one forward; reference log-probs precomputed (reference.py), so no
  reference model is held. Each micro-batch's mean-over-pairs loss is weighted by its share of the
  step's pairs.

Checkpoints (run_dir/checkpoints/step-NNNNNN/): `state/` (model + optimizer + RNG states as safetensors
per rank with a JSON index, sharded as trained: see state.py; nothing on a load path is unpickled),
`train_state.json` (step, data position, schedule) and `model/` (HF layout). Each is written to a temporary
directory and renamed; the `latest` file names the newest good one, and older ones are deleted only after a
newer one is complete. A run killed at any moment resumes from `latest`: the data position is the step (data
order is a pure function of the seed), the LR is a function of the step, the optimizer and RNG states are
restored, and `metrics.jsonl` is cut back to the checkpoint's step (no line is ever duplicated).

The run directory belongs to one process at a time (a lock file; a second process refuses). A resume must use
the same config as the one saved in `run_dir/config.toml` (a refusal names the keys that differ; logging and
checkpoint-keeping keys may change); `checkpoint.overwrite` (`--overwrite`) starts the run over instead.
Nothing the trainer did not create is replaced: a `run_dir` that is not a training run directory and a
`final_dir` that is not a checkpoint are refused, and neither may be one of the run's inputs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import torch

from srlm_fast import distributed as D
from srlm_fast.config import ConfigError, changed_keys, from_dict, read_toml, to_dict, to_toml
from srlm_fast.device import resolve_dtype
from srlm_fast.io import (
    DataError,
    OutputError,
    RunLock,
    check_output,
    check_writable_location,
    file_sha256,
    iter_lines,
    looks_like_jsonl,
    read_json,
    write_json_atomic,
    write_text_atomic,
)
from srlm_fast.model.checkpoint import (
    CheckpointError,
    check_checkpoint_output,
    read_model_config,
    save_pretrained,
)
from srlm_fast.model.config import ModelConfig, get_preset
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.data import (
    BatchPlan,
    DataStats,
    collate_dpo,
    collate_sft,
    dpo_stream,
    load_dpo,
    load_sft,
    sft_stream,
)
from srlm_fast.train.losses import LMWithLoss, build_lm
from srlm_fast.train.metrics import MetricsLogger, peak_tflops
from srlm_fast.train.reference import (
    attach_and_write,
    model_fingerprint,
    provenance_mismatch,
    provenance_path,
    reference_provenance,
    rows_mismatch,
    score_pairs,
)
from srlm_fast.train.state import is_old_format, load_state, save_state, valid_step_name

CHECKPOINTS = "checkpoints"
LATEST = "latest"
CONFIG = "config.toml"
METRICS = "metrics.jsonl"
INPUTS = "inputs.json"  # fingerprints of the data, initial weights and tokenizer the run was started with
# Keys a resumed run may change: they do not change what is trained (how often it logs and keeps checkpoints,
# and where the run directory is: a moved run resumes).
RESUMABLE_CHANGES = (
    "logging.",
    "checkpoint.run_dir",
    "checkpoint.keep_last",
    "checkpoint.save_every",
    "checkpoint.kill_after_step",
    "checkpoint.resume",
    "checkpoint.overwrite",
)


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm: the run stopped, its last good checkpoint is intact."""


# ---- schedule ------------------------------------------------------------------------------------


def lr_at(step: int, total_steps: int, lr: float, min_lr: float, warmup_steps: int) -> float:
    """Linear warmup to `lr`, then cosine decay to the floor `min_lr` at the last step (step is 0-based)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---- checkpoints ---------------------------------------------------------------------------------


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None. The `latest` pointer must name a `step-NNNNNN`
    directory of this run (a planted `../..` is refused)."""
    ckpts = Path(run_dir) / CHECKPOINTS
    pointer = ckpts / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_bytes().decode("utf-8", errors="replace").strip()
    if not valid_step_name(name):
        raise CheckpointError(f"{pointer}: names {name[:40]!r}, not a checkpoint of this run (step-NNNNNN)")
    path = ckpts / name
    return path if (path / "train_state.json").is_file() else None


def read_train_state(path: Path) -> dict:
    """`train_state.json` of a checkpoint, with its fields checked (it is only JSON, but it steers the resume)."""
    where = path / "train_state.json"
    state = read_json(where)
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected a JSON object")
    for key in ("step", "consumed_rows", "global_rows", "world_size"):
        v = state.get(key)
        if (
            isinstance(v, bool)
            or not isinstance(v, int)
            or v < (1 if key in ("global_rows", "world_size") else 0)
        ):
            raise CheckpointError(f"{where}: field {key!r} must be a non-negative integer, got {v!r}")
    return state


def _is_training_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file() or (path / CHECKPOINTS).is_dir() or (path / METRICS).is_file()


def cut_metrics(run_dir: Path, last_step: int) -> int:
    """Drop the lines of `metrics.jsonl` past `last_step` (a resumed run logs those steps again), and a torn last
    line; atomically. Returns the number of lines dropped."""
    path = run_dir / METRICS
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for _, line, _problem in iter_lines(path):
        try:
            rec = json.loads(line) if line else None
        except json.JSONDecodeError:
            rec = None
        step = rec.get("step") if isinstance(rec, dict) else None
        if isinstance(step, int) and not isinstance(step, bool) and step <= last_step:
            kept.append(line)
        elif line:
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(f"{x}\n" for x in kept))
    return dropped


class Trainer:
    """One training run (use `train(cfg)`)."""

    def __init__(self, cfg: TrainConfig, info: D.DistInfo, log_stream=None) -> None:
        self.cfg = cfg
        self.info = info
        self.run_dir = Path(cfg.checkpoint.run_dir)
        self.final_dir = Path(cfg.checkpoint.final_dir or self.run_dir / "final")
        self.log = MetricsLogger(self.run_dir, enabled=False, total_steps=0)  # replaced in run()
        self.log_stream = log_stream
        self._final_overwrite = False
        self._notes: list[str] = []  # said once the log is open

    # ---- setup -----------------------------------------------------------------------------------
    def _model_config(self, tokenizer: Tokenizer) -> ModelConfig:
        cfg = self.cfg.model
        if cfg.init is not None:
            mc = read_model_config(cfg.init)
        else:
            mc = get_preset(cfg.preset)
        if tokenizer.vocab_size > mc.vocab_size:
            raise ConfigError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is {mc.vocab_size}"
            )
        if self.cfg.data.max_seq_len > mc.max_seq_len:
            raise ConfigError(
                f"data.max_seq_len={self.cfg.data.max_seq_len} exceeds the model's max_seq_len={mc.max_seq_len}"
            )
        return mc

    def _reference_settings(self) -> dict:
        d = self.cfg.data
        return {"max_seq_len": d.max_seq_len, "overlong": d.overlong, "template": self.tokenizer.template.name,
                "dtype": str(resolve_dtype(self.cfg.model.param_dtype, self.info.device)).removeprefix("torch.")}  # fmt: skip

    def _load_data(self, tokenizer: Tokenizer, *, resumed: bool) -> tuple[list, DataStats, Path | None]:
        d = self.cfg.data
        info = self.info
        kw = dict(
            max_seq_len=d.max_seq_len,
            overlong=d.overlong,
            on_bad_row=d.on_bad_row,
            shard=(info.rank, info.world_size),  # each rank tokenises its share; the results are exchanged
            gather=lambda obj: D.all_gather_objects(obj, info),
        )
        if self.cfg.task == "sft":
            docs, stats = load_sft(d.train, tokenizer, **kw)
            return docs, stats, None
        pairs, stats = load_dpo(d.train, tokenizer, **kw)
        settings = self._reference_settings()
        init = self.cfg.model.init
        if all(p.ref_chosen_logp is not None for p in pairs):
            # The training file carries reference log-probs: when it has a provenance record, they must be this
            # model's, for these settings, and the file unchanged since.
            why = self._agree(lambda: provenance_mismatch(Path(d.train), source=None, checkpoint_dir=init,
                                                          settings=settings))  # fmt: skip
            if why:
                raise DataError(
                    f"{d.train}: its reference log-probs do not fit this run: {why}; recompute them"
                )
            return pairs, stats, None
        ref_path = Path(self.cfg.dpo.reference_out or self.run_dir / "pairs.ref.jsonl")
        if ref_path.is_file():  # computed by an earlier (possibly killed) attempt of this run?
            why = self._agree(lambda: self._reference_mismatch(ref_path, settings))
            if why is None:
                pairs, stats = load_dpo(ref_path, tokenizer, **kw)
                return pairs, stats, None
            if resumed or self.cfg.dpo.reference_out is not None:
                raise DataError(
                    f"{ref_path}: these reference log-probs do not belong to this run: {why}. "
                    + ("The run has trained already, so they cannot be recomputed from the initial model: restore "
                       "the file or start a new run_dir" if resumed else
                       "Remove the file (or set dpo.reference_out elsewhere) to compute them again")
                )  # fmt: skip
            self._notes.append(f"[dpo] {ref_path}: {why}; computing them again")
        if self.cfg.dpo.missing_reference == "error":
            raise DataError(
                f"{d.train}: pairs lack ref_chosen_logp/ref_rejected_logp (dpo.missing_reference=error)"
            )
        if resumed:
            raise DataError(
                f"{ref_path}: reference log-probs are missing but the run has trained already; they must come "
                "from the initial model (restore the file or start a new run_dir)"
            )
        if self.cfg.dpo.reference_out is not None:
            self._agree(lambda: check_output(ref_path, kind="JSONL file", overwrite=True, inputs=[d.train],
                                             is_kind=looks_like_jsonl))  # fmt: skip
        return pairs, stats, ref_path

    def _reference_mismatch(self, ref_path: Path, settings: dict) -> str | None:
        d = self.cfg.data
        if provenance_path(ref_path).is_file():
            return provenance_mismatch(ref_path, source=Path(d.train), checkpoint_dir=self.cfg.model.init,
                                       settings=settings)  # fmt: skip
        return rows_mismatch(ref_path, Path(d.train))  # an older version's file: the rows must be these pairs

    def _optimizer(self, lm: LMWithLoss) -> torch.optim.Optimizer:
        o = self.cfg.optim
        decay = [p for p in lm.parameters() if p.ndim >= 2]
        no_decay = [p for p in lm.parameters() if p.ndim < 2]  # norms: decaying a gain towards 0 is harmful
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = self.info.device.type == "cuda"
        return torch.optim.AdamW(
            groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused, foreach=None if fused else True
        )

    def _total_steps(self, stream, plan: BatchPlan) -> int:
        s = self.cfg.schedule
        if s.max_steps > 0:
            return s.max_steps
        return max(1, math.ceil(s.epochs * stream.rows_per_epoch() / plan.global_rows))

    # ---- checkpointing ---------------------------------------------------------------------------
    def _state_dict(self, lm: LMWithLoss, opt: torch.optim.Optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(lm, opt)
        return {"model": model_sd, "optim": optim_sd}

    def _hf_state(self, lm: LMWithLoss) -> dict:
        full = D.full_state_dict(lm, self.info)
        return {k.removeprefix("model."): v for k, v in full.items()}

    def _save_dtype(self) -> torch.dtype:
        name = self.cfg.model.save_dtype
        if name == "auto":
            name = self.cfg.model.param_dtype
        return resolve_dtype(name, self.info.device)

    def _save_hf(self, lm: LMWithLoss, tokenizer: Tokenizer, dirs: list[Path]) -> None:
        full = self._hf_state(lm)  # collective under FSDP; only rank 0 holds the result
        if self.info.is_main:
            for d in dirs:
                save_pretrained(lm.model, d, tokenizer=tokenizer, state_dict=full, dtype=self._save_dtype(),
                                overwrite=d == self.final_dir and self._final_overwrite)  # fmt: skip

    def save_checkpoint(
        self, lm: LMWithLoss, opt, tokenizer: Tokenizer, step: int, plan: BatchPlan, extra_hf=()
    ):
        """Write checkpoint `step-NNNNNN` atomically, point `latest` at it, prune old ones."""
        ckpts = self.run_dir / CHECKPOINTS
        name = f"step-{step:06d}"
        tmp = ckpts / f".tmp-{name}"
        if self.info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        D.barrier(self.info)
        save_state(self._state_dict(lm, opt), tmp / "state", self.info)
        self._save_hf(lm, tokenizer, [tmp / "model", *extra_hf])
        D.barrier(self.info)
        if self.info.is_main:
            state = {
                "step": step,
                "consumed_rows": step * plan.global_rows,
                "global_rows": plan.global_rows,
                "world_size": self.info.world_size,
                "lr": lr_at(
                    step - 1,
                    self.total_steps,
                    self.cfg.optim.lr,
                    self.cfg.optim.min_lr,
                    self.cfg.optim.warmup_steps,
                ),
            }
            write_json_atomic(tmp / "train_state.json", state)  # last file: marks the checkpoint complete
            final = ckpts / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            write_text_atomic(ckpts / LATEST, name + "\n")
            kept = sorted(p for p in ckpts.glob("step-*") if p.is_dir() and valid_step_name(p.name))
            for old in kept[: -self.cfg.checkpoint.keep_last]:
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        D.barrier(self.info)

    def load_checkpoint(self, path: Path, lm: LMWithLoss, opt, plan: BatchPlan) -> int:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        self._check_resumable(path, plan)
        sd = self._state_dict(lm, opt)
        load_state(sd, path / "state", self.info)
        set_state_dict(lm, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        return int(read_train_state(path)["step"])

    def _check_resumable(self, path: Path, plan: BatchPlan) -> None:
        """Before the model is built: a checkpoint this version can resume, with this batch layout."""
        if is_old_format(path):
            raise CheckpointError(
                f"{path}: a training checkpoint in the older format of srlm-fast (torch.distributed.checkpoint with "
                "pickled metadata, RNG states as .pt files), which is no longer loaded because unpickling a file can "
                f"run code. To train this stage again from its initial weights, move {path.parent} aside; to keep "
                "the old run, resume it with the srlm-fast version that wrote it"
            )
        state = read_train_state(path)
        if state["global_rows"] != plan.global_rows:
            raise ConfigError(
                f"{path}: saved with a global batch of {state['global_rows']} rows, this config gives "
                f"{plan.global_rows} (world x grad_accum x micro_batch_size must stay the same to resume)"
            )
        if not (path / "state" / "index.json").is_file():
            raise CheckpointError(f"{path}: incomplete checkpoint (no state/index.json)")

    # ---- the run directory -----------------------------------------------------------------------
    def _saved_config_difference(self) -> list[str] | None:
        """Keys in which this config differs from the one saved in run_dir (None: no saved config). Keys a
        newer version added take their defaults in the saved one; `RESUMABLE_CHANGES` do not count."""
        path = self.run_dir / CONFIG
        if not path.is_file():
            return None
        try:
            saved = to_dict(from_dict(TrainConfig, read_toml(path)))
        except ConfigError as e:
            raise ConfigError(f"{path}: cannot read the saved config of this run ({e})") from None
        changed = changed_keys(saved, to_dict(self.cfg))
        return [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]

    def _check_outputs(self) -> tuple[bool, bool]:
        """Before any work: may this run write its run_dir and final_dir? Returns (fresh, final_is_ours):
        fresh = start over (no resume), final_is_ours = an existing final_dir belongs to this run."""
        cfg = self.cfg
        ck = cfg.checkpoint
        inputs = [Path(p) for p in (cfg.model.init, cfg.model.tokenizer, cfg.data.train) if p]
        # What the trainer writes, replaces or (with overwrite) removes inside run_dir may not be an input.
        ours = [self.run_dir, self.run_dir / CONFIG, self.run_dir / METRICS, self.run_dir / CHECKPOINTS]
        if cfg.dpo.reference_out is None:
            ours.append(self.run_dir / "pairs.ref.jsonl")
        for inp in inputs:
            src = inp.resolve()
            for out in ours:
                if src == out.resolve() or (out.name == CHECKPOINTS and out.resolve() in src.parents):
                    raise OutputError(
                        f"checkpoint.run_dir: the trainer writes {out}, which is an input of this run ({inp})"
                    )
        if self.run_dir.exists():
            if not self.run_dir.is_dir():
                raise OutputError(f"checkpoint.run_dir: {self.run_dir} is a file, not a directory")
            entries = [p for p in self.run_dir.iterdir() if p.name != ".lock"]
            if entries and not _is_training_run_dir(self.run_dir):
                raise OutputError(
                    f"checkpoint.run_dir: {self.run_dir} exists and is not a training run directory (no "
                    f"{CONFIG}, {CHECKPOINTS}/ or {METRICS}); refusing to write into it: choose another run_dir"
                )
        check_writable_location(self.run_dir / CONFIG)
        changed = self._saved_config_difference()
        has_ckpt = latest_checkpoint(self.run_dir) is not None or any(
            valid_step_name(p.name) for p in (self.run_dir / CHECKPOINTS).glob("step-*")
        )
        if not ck.overwrite and has_ckpt and changed is None:
            raise ConfigError(
                f"checkpoint.run_dir: {self.run_dir} has checkpoints but no {CONFIG} to tell which config they "
                "belong to; choose another run_dir, or pass --overwrite (checkpoint.overwrite=true) to start over"
            )
        if not ck.overwrite and has_ckpt and changed:
            raise ConfigError(
                f"{self.run_dir / CONFIG}: this training run was started with a different config (differs in "
                f"{', '.join(changed[:6])}{', …' if len(changed) > 6 else ''}); resume it with the same config, "
                "choose another checkpoint.run_dir, or pass --overwrite (checkpoint.overwrite=true) to start over"
            )
        if not ck.overwrite and has_ckpt and not ck.resume:
            raise OutputError(
                f"checkpoint.run_dir: {self.run_dir} has checkpoints of an earlier run and checkpoint.resume is "
                "false; pass --overwrite (checkpoint.overwrite=true) to start over, or choose another run_dir"
            )
        # The same config as the saved one: this run continues (from its checkpoint, or from step 0 when it was
        # killed before its first one), and an existing final_dir is its own. Anything else starts over.
        same = changed == [] and not ck.overwrite
        if not same:
            check_checkpoint_output(
                self.final_dir,
                overwrite=ck.overwrite,
                inputs=inputs,
                flag="--overwrite (checkpoint.overwrite=true)",
            )
        elif self.final_dir.exists() and not self.final_dir.is_dir():
            raise OutputError(f"checkpoint.final_dir: {self.final_dir} is a file, not a directory")
        if same and has_ckpt:
            self._check_inputs_unchanged()
        return not same, same

    def _input_fingerprints(self) -> dict[str, str]:
        """What a resume must find unchanged: the training data (same path is not same data), the initial
        weights and the tokenizer."""
        m, d = self.cfg.model, self.cfg.data
        out = {"data.train": file_sha256(d.train)}
        if m.init:
            out["model.init"] = model_fingerprint(m.init)
        tok = Path(m.tokenizer or m.init) / "tokenizer.json"
        out["tokenizer"] = file_sha256(tok)
        return out

    def _check_inputs_unchanged(self) -> None:
        path = self.run_dir / INPUTS
        if not path.is_file():
            return  # a run started by an older version: its inputs are recorded when it continues
        saved = read_json(path)
        now = self._input_fingerprints()
        changed = [k for k in now if not isinstance(saved, dict) or saved.get(k) != now[k]]
        if changed:
            raise DataError(
                f"{path}: this training run was started on other inputs ({', '.join(changed)} changed since: the "
                "same path, other contents); a resume would mix them. Restore them, choose another "
                "checkpoint.run_dir, or pass --overwrite (checkpoint.overwrite=true) to start over"
            )

    def _start_over(self) -> None:
        """checkpoint.overwrite: remove what an earlier run of this run_dir left (checkpoints, metrics). Its
        reference log-probs stay: their provenance decides whether they are reused. The old final weights stay
        until the new ones replace them."""
        shutil.rmtree(self.run_dir / CHECKPOINTS, ignore_errors=True)
        (self.run_dir / METRICS).unlink(missing_ok=True)

    def _lock(self) -> RunLock | None:
        """Rank 0 locks run_dir; every rank learns whether it could (and all fail together if not)."""
        lock, error = None, None
        if self.info.is_main:
            try:
                lock = RunLock(self.run_dir, what="training run directory").acquire()
            except OutputError as e:
                error = str(e)
        errors = [e for e in D.all_gather_objects(error, self.info) if e]
        if errors:
            if lock is not None:
                lock.release()
            raise OutputError(errors[0])
        return lock

    # ---- the steps ---------------------------------------------------------------------------------
    def _sft_step(self, lm: LMWithLoss, micro: list[list]) -> dict:
        dev, pad = self.info.device, self.tokenizer.pad_id
        batches = [collate_sft(rows, pad) for rows in micro]
        counts = torch.tensor(
            [sum(b.n_targets for b in batches), sum(b.n_tokens for b in batches)], dtype=torch.float64
        )
        n_targets, n_tokens = D.all_reduce_sum(counts, self.info).tolist()
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for b in batches:
            doc_ids = b.doc_ids.to(dev) if b.doc_ids is not None else None
            out = lm(b.input_ids.to(dev), b.targets.to(dev), mode="sft", doc_ids=doc_ids)
            (out["loss_sum"] / n_targets).backward()
            total += out["loss_sum"].detach().double()
        loss = D.all_reduce_sum(total, self.info).item() / n_targets
        return {
            "loss": loss,
            "tokens": n_tokens,
            "target_tokens": n_targets,
            "seq_len": batches[0].input_ids.shape[1],
        }

    def _dpo_step(self, lm: LMWithLoss, micro: list[list], plan: BatchPlan) -> dict:
        dev, pad = self.info.device, self.tokenizer.pad_id
        d = self.cfg.dpo
        opts = dict(
            beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing, nll_weight=d.nll_weight
        )
        n_pairs = plan.global_rows
        # Metric sums stay on the device (no host sync per micro-batch); one all-reduce per step.
        sums = torch.zeros(7, dtype=torch.float64, device=dev)
        seq_len = 0
        for pairs in micro:
            b = collate_dpo(pairs, pad)
            seq_len = max(seq_len, b.input_ids.shape[1])
            out = lm(
                b.input_ids.to(dev), b.targets.to(dev), mode="dpo", ref_chosen=b.ref_chosen.to(dev),
                ref_rejected=b.ref_rejected.to(dev), dpo_options=opts,
            )  # fmt: skip
            share = b.n_pairs / n_pairs  # the kernel's loss is a mean over this micro-batch's pairs
            (out["loss"] * share).backward()
            p = b.n_pairs
            parts = [
                out["loss"].detach() * p,
                out["reward_accuracy"] * p,
                out["margins"].sum(),
                out["chosen_rewards"].sum(),
                out["rejected_rewards"].sum(),
                out["nll"] * p,
                torch.tensor(float(b.n_tokens), device=dev),
            ]
            sums += torch.stack([x.to(dev, torch.float64) for x in parts])
        s = D.all_reduce_sum(sums, self.info).tolist()
        return {
            "loss": s[0] / n_pairs,
            "reward_accuracy": s[1] / n_pairs,
            "margin": s[2] / n_pairs,
            "chosen_reward": s[3] / n_pairs,
            "rejected_reward": s[4] / n_pairs,
            "nll": s[5] / n_pairs,
            "tokens": s[6],
            "seq_len": seq_len,
        }

    # ---- main ------------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.schedule.seed)
        # Everything that can be refused is checked, and the data read, before anything is written.
        checked = self._agree(self._check_outputs)
        fresh, final_is_ours = checked
        self._final_overwrite = final_is_ours or cfg.checkpoint.overwrite
        tok_dir = cfg.model.tokenizer or cfg.model.init
        self.tokenizer = tokenizer = Tokenizer.from_dir(tok_dir, cfg.data.template)
        model_config = self._model_config(tokenizer)
        plan = BatchPlan(cfg.schedule.micro_batch_size, cfg.schedule.grad_accum, info.world_size, info.rank)
        latest = None if fresh or not cfg.checkpoint.resume else latest_checkpoint(self.run_dir)
        if latest is not None:
            self._agree(lambda: self._check_resumable(latest, plan))
        items, stats, ref_out = self._load_data(tokenizer, resumed=latest is not None)
        stream = (
            sft_stream(items, cfg.data.max_seq_len, cfg.data.pack, cfg.schedule.seed)
            if cfg.task == "sft"
            else dpo_stream(items, cfg.schedule.seed)
        )
        self.total_steps = total = self._total_steps(stream, plan)
        lock = self._lock()
        try:
            # Under the lock the run directory cannot change under us: it must still be as checked.
            again = self._agree(self._check_outputs)
            if (
                again != checked
                or (latest_checkpoint(self.run_dir) if latest is not None else None) != latest
            ):
                raise OutputError(f"{self.run_dir}: changed while this run was starting; start it again")
            if info.is_main:
                if cfg.checkpoint.overwrite:
                    self._start_over()
                if fresh:  # a continuing run rewrites it once its checkpoint has loaded (see _run)
                    write_text_atomic(self.run_dir / CONFIG, to_toml(cfg))
                if fresh or not (self.run_dir / INPUTS).is_file():
                    write_json_atomic(self.run_dir / INPUTS, self._input_fingerprints())
                cut_metrics(self.run_dir, read_train_state(latest)["step"] if latest is not None else 0)
            D.barrier(info)
            return self._run(model_config, items, stats, ref_out, stream, plan, total, latest)
        finally:
            if lock is not None:
                lock.release()

    def _agree(self, fn):
        """`fn()` on rank 0, its result (or its error) on every rank: they fail together, never half of them."""
        result, error = None, None
        if self.info.is_main:
            try:
                result = fn()
            except (ValueError, OSError) as e:
                error = e
        result, error = D.broadcast_object((result, error), self.info)
        if error is not None:
            raise error
        return result

    def _run(self, model_config, items, stats, ref_out, stream, plan, total, latest) -> Path:
        cfg, info, tokenizer = self.cfg, self.info, self.tokenizer
        self.log = log = MetricsLogger(
            self.run_dir, enabled=info.is_main, total_steps=total, config=to_dict(cfg), wandb=cfg.logging.wandb,
            wandb_project=cfg.logging.wandb_project, wandb_run_name=cfg.logging.wandb_run_name,
            wandb_mode=cfg.logging.wandb_mode, stream=self.log_stream,
        )  # fmt: skip
        try:
            for note in self._notes:
                log.info(note)
            log.info(f"[{cfg.task}] {stats.summary()}")
            for err in stats.errors[:5]:
                log.info(f"  skipped: {err}")
            log.info(
                f"[{cfg.task}] {model_config.num_params() / 1e6:.2f}M params, world {info.world_size} on "
                f"{info.device.type}, {plan.global_rows} {'rows' if cfg.task == 'sft' else 'pairs'}/step, "
                f"{total} steps"
            )
            lm = build_lm(
                model_config, info, init_dir=cfg.model.init, init_seed=cfg.model.init_seed,
                attn_backend=cfg.model.attn_backend, activation_checkpointing=cfg.model.activation_checkpointing,
                compile=cfg.model.compile, param_dtype=cfg.model.param_dtype,
                lm_head_low_memory=cfg.model.lm_head_low_memory,
            )  # fmt: skip
            lm.train()
            opt = self._optimizer(lm)  # before any no-grad forward (see distributed.reshard)
            if ref_out is not None:
                log.info(f"[dpo] computing reference log-probs of {len(items)} pairs with the initial model")
                scores = score_pairs(
                    lm, items, info, batch_size=cfg.schedule.micro_batch_size, pad_id=tokenizer.pad_id
                )
                for p, (c, r) in zip(items, scores):
                    p.ref_chosen_logp, p.ref_rejected_logp = c, r
                if info.is_main:
                    record = reference_provenance(cfg.data.train, cfg.model.init, self._reference_settings())
                    attach_and_write(items, scores, cfg.data.train, ref_out, provenance=record)
                    log.info(f"[dpo] reference log-probs written to {ref_out}")
                D.barrier(info)
            start = 0
            if latest is not None:
                start = self.load_checkpoint(latest, lm, opt, plan)
                log.info(f"resumed from {latest} at step {start}")
            # A continuing run records this attempt's settings (only the resumable keys can differ).
            text = to_toml(cfg)
            config = self.run_dir / CONFIG
            if info.is_main and (not config.is_file() or config.read_bytes() != text.encode()):
                write_text_atomic(config, text)
            return self._loop(lm, opt, stream, plan, start, total)
        finally:
            log.close()

    def _loop(self, lm: LMWithLoss, opt, stream, plan: BatchPlan, start: int, total: int) -> Path:
        cfg, info, log = self.cfg, self.info, self.log
        o = cfg.optim
        peak = peak_tflops(info.device, cfg.logging.peak_tflops)
        params = [p for p in lm.parameters()]
        last_saved = start
        for step in range(start, total):
            t0 = time.perf_counter()
            lr = lr_at(step, total, o.lr, o.min_lr, o.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            micro = plan.micro_batches(stream, step)
            m = self._sft_step(lm, micro) if cfg.task == "sft" else self._dpo_step(lm, micro, plan)
            max_norm = o.grad_clip if o.grad_clip > 0 else float("inf")
            grad_norm = D.full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)).item()
            if not (math.isfinite(m["loss"]) and math.isfinite(grad_norm)):
                opt.zero_grad(set_to_none=True)
                good = latest_checkpoint(self.run_dir)
                raise TrainingDiverged(
                    f"non-finite {'loss' if not math.isfinite(m['loss']) else 'gradient norm'} at step {step + 1} "
                    f"(loss {m['loss']}, grad norm {grad_norm}); stopped without updating the weights. "
                    f"Last good checkpoint: {good if good is not None else 'none (no checkpoint saved yet)'}, left intact."
                )
            opt.step()
            opt.zero_grad(set_to_none=True)
            if info.device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            done = step + 1
            tps = m["tokens"] / dt
            record = {**m, "lr": lr, "grad_norm": grad_norm, "step_time": dt, "tokens_per_s": tps}
            if peak is not None:
                flops = self._model_flops_per_token(lm, m["seq_len"])
                record["mfu"] = flops * tps / (peak * 1e12 * info.world_size)
            if done % cfg.logging.log_every == 0 or done == total:
                log.log(done, record)
            every = cfg.checkpoint.save_every
            if every > 0 and done % every == 0 and done < total:
                self.save_checkpoint(lm, opt, self.tokenizer, done, plan)
                last_saved = done
            if cfg.checkpoint.kill_after_step == done:
                log.close()
                os.kill(os.getpid(), signal.SIGKILL)  # tests: a crash at an arbitrary point after a save
        if last_saved < total or not (self.final_dir / "config.json").is_file():
            self.save_checkpoint(lm, opt, self.tokenizer, total, plan, extra_hf=[self.final_dir])
        log.info(f"done: {total} steps; weights in {self.final_dir}")
        return self.final_dir

    def _model_flops_per_token(self, lm: LMWithLoss, seq_len: int) -> float:
        return float(lm.model.config.flops_per_token(seq_len))


def train(cfg: TrainConfig, *, log_stream=None) -> Path:
    """Run SFT or DPO as configured; returns the final HF checkpoint directory.

    Call it on every rank under torchrun (or in a plain process). A process group that already exists is
    used and left open; one created here is destroyed on return.
    """
    cfg.validate()
    info = D.init_distributed(cfg.device)
    try:
        return Trainer(cfg, info, log_stream=log_stream).run()
    finally:
        D.shutdown(info)
