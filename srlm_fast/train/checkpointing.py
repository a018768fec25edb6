"""Training checkpoints: `run_dir/checkpoints/step-NNNNNN/`, the `latest` pointer, writing, loading, resuming.

A checkpoint holds `state/` (model + optimizer + RNG states as safetensors per rank with a JSON index, sharded as
trained: see state.py; nothing on a load path is unpickled), `train_state.json` (step, data position, schedule)
and `model/` (HF layout). Each is written to a temporary directory and renamed; the `latest` file names the newest
good one, and older ones are deleted only after a newer one is complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from srlm_fast import distributed as D
from srlm_fast.config import ConfigError
from srlm_fast.io import read_json, write_json_atomic, write_text_atomic
from srlm_fast.model.checkpoint import CheckpointError
from srlm_fast.train.data import BatchPlan
from srlm_fast.train.losses import LMWithLoss
from srlm_fast.train.state import is_old_format, load_state, save_state, valid_step_name

CHECKPOINTS = "checkpoints"
LATEST = "latest"


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


def _state_dict(lm: LMWithLoss, opt: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(lm, opt)
    return {"model": model_sd, "optim": optim_sd}


def write_checkpoint(
    run_dir: Path,
    lm: LMWithLoss,
    opt: torch.optim.Optimizer,
    step: int,
    plan: BatchPlan,
    info: D.DistInfo,
    *,
    lr: float,
    keep_last: int,
    save_hf: Callable[[Sequence[Path]], None],
    extra_hf: Sequence[Path] = (),
) -> None:
    """Write checkpoint `step-NNNNNN` atomically, point `latest` at it, prune old ones (all but `keep_last`).

    `save_hf(dirs)` writes the HF-layout weights into each of `dirs` (a collective under FSDP): the checkpoint's
    `model/` and any `extra_hf` (the final directory)."""
    ckpts = run_dir / CHECKPOINTS
    name = f"step-{step:06d}"
    tmp = ckpts / f".tmp-{name}"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    D.barrier(info)
    save_state(_state_dict(lm, opt), tmp / "state", info)
    save_hf([tmp / "model", *extra_hf])
    D.barrier(info)
    if info.is_main:
        state = {
            "step": step,
            "consumed_rows": step * plan.global_rows,
            "global_rows": plan.global_rows,
            "world_size": info.world_size,
            "lr": lr,
        }
        write_json_atomic(tmp / "train_state.json", state)  # last file: marks the checkpoint complete
        final = ckpts / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_text_atomic(ckpts / LATEST, name + "\n")
        kept = sorted(p for p in ckpts.glob("step-*") if p.is_dir() and valid_step_name(p.name))
        for old in kept[:-keep_last]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    D.barrier(info)


def load_checkpoint(
    path: Path, lm: LMWithLoss, opt: torch.optim.Optimizer, plan: BatchPlan, info: D.DistInfo
) -> int:
    """Restore model, optimizer and RNG states from checkpoint `path`; returns its step."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    check_resumable(path, plan)
    sd = _state_dict(lm, opt)
    load_state(sd, path / "state", info)
    set_state_dict(lm, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    return int(read_train_state(path)["step"])


def check_resumable(path: Path, plan: BatchPlan) -> None:
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
