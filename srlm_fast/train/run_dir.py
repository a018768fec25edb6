"""A training run's directory: its layout, the checks before a run may write it, the lock, and the metrics cut.

The run directory belongs to one process at a time (a lock file; a second process refuses). A resume must use
the same config as the one saved in `run_dir/config.toml` (a refusal names the keys that differ; logging and
checkpoint-keeping keys may change) and the same inputs (data, initial weights, tokenizer: fingerprinted in
`inputs.json`); `checkpoint.overwrite` (`--overwrite`) starts the run over instead. Nothing the trainer did not
create is replaced: a `run_dir` that is not a training run directory and a `final_dir` that is not a checkpoint
are refused, and neither may be one of the run's inputs. The checkpoints inside are `train.checkpointing`'s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from srlm_fast import distributed as D
from srlm_fast.config import ConfigError, changed_keys, from_dict, read_toml, to_dict
from srlm_fast.io import (
    DataError,
    OutputError,
    RunLock,
    check_writable_location,
    file_sha256,
    iter_lines,
    read_json,
    write_text_atomic,
)
from srlm_fast.model.checkpoint import check_checkpoint_output
from srlm_fast.train.checkpointing import CHECKPOINTS, latest_checkpoint
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.reference import model_fingerprint
from srlm_fast.train.state import valid_step_name

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


def saved_config_difference(cfg: TrainConfig, run_dir: Path) -> list[str] | None:
    """Keys in which `cfg` differs from the config saved in run_dir (None: no saved config). Keys a newer
    version added take their defaults in the saved one; `RESUMABLE_CHANGES` do not count."""
    path = run_dir / CONFIG
    if not path.is_file():
        return None
    try:
        saved = to_dict(from_dict(TrainConfig, read_toml(path)))
    except ConfigError as e:
        raise ConfigError(f"{path}: cannot read the saved config of this run ({e})") from None
    changed = changed_keys(saved, to_dict(cfg))
    return [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]


def check_outputs(cfg: TrainConfig, run_dir: Path, final_dir: Path) -> tuple[bool, bool]:
    """Before any work: may this run write its run_dir and final_dir? Returns (fresh, final_is_ours):
    fresh = start over (no resume), final_is_ours = an existing final_dir belongs to this run."""
    ck = cfg.checkpoint
    inputs = [Path(p) for p in (cfg.model.init, cfg.model.tokenizer, cfg.data.train) if p]
    # What the trainer writes, replaces or (with overwrite) removes inside run_dir may not be an input.
    ours = [run_dir, run_dir / CONFIG, run_dir / METRICS, run_dir / CHECKPOINTS]
    if cfg.dpo.reference_out is None:
        ours.append(run_dir / "pairs.ref.jsonl")
    for inp in inputs:
        src = inp.resolve()
        for out in ours:
            if src == out.resolve() or (out.name == CHECKPOINTS and out.resolve() in src.parents):
                raise OutputError(
                    f"checkpoint.run_dir: the trainer writes {out}, which is an input of this run ({inp})"
                )
    if run_dir.exists():
        if not run_dir.is_dir():
            raise OutputError(f"checkpoint.run_dir: {run_dir} is a file, not a directory")
        entries = [p for p in run_dir.iterdir() if p.name != ".lock"]
        if entries and not _is_training_run_dir(run_dir):
            raise OutputError(
                f"checkpoint.run_dir: {run_dir} exists and is not a training run directory (no "
                f"{CONFIG}, {CHECKPOINTS}/ or {METRICS}); refusing to write into it: choose another run_dir"
            )
    check_writable_location(run_dir / CONFIG)
    changed = saved_config_difference(cfg, run_dir)
    has_ckpt = latest_checkpoint(run_dir) is not None or any(
        valid_step_name(p.name) for p in (run_dir / CHECKPOINTS).glob("step-*")
    )
    if not ck.overwrite and has_ckpt and changed is None:
        raise ConfigError(
            f"checkpoint.run_dir: {run_dir} has checkpoints but no {CONFIG} to tell which config they "
            "belong to; choose another run_dir, or pass --overwrite (checkpoint.overwrite=true) to start over"
        )
    if not ck.overwrite and has_ckpt and changed:
        raise ConfigError(
            f"{run_dir / CONFIG}: this training run was started with a different config (differs in "
            f"{', '.join(changed[:6])}{', …' if len(changed) > 6 else ''}); resume it with the same config, "
            "choose another checkpoint.run_dir, or pass --overwrite (checkpoint.overwrite=true) to start over"
        )
    if not ck.overwrite and has_ckpt and not ck.resume:
        raise OutputError(
            f"checkpoint.run_dir: {run_dir} has checkpoints of an earlier run and checkpoint.resume is "
            "false; pass --overwrite (checkpoint.overwrite=true) to start over, or choose another run_dir"
        )
    # The same config as the saved one: this run continues (from its checkpoint, or from step 0 when it was
    # killed before its first one), and an existing final_dir is its own. Anything else starts over.
    same = changed == [] and not ck.overwrite
    if not same:
        check_checkpoint_output(
            final_dir,
            overwrite=ck.overwrite,
            inputs=inputs,
            flag="--overwrite (checkpoint.overwrite=true)",
        )
    elif final_dir.exists() and not final_dir.is_dir():
        raise OutputError(f"checkpoint.final_dir: {final_dir} is a file, not a directory")
    if same and has_ckpt:
        check_inputs_unchanged(cfg, run_dir)
    return not same, same


def input_fingerprints(cfg: TrainConfig) -> dict[str, str]:
    """What a resume must find unchanged: the training data (same path is not same data), the initial
    weights and the tokenizer."""
    m, d = cfg.model, cfg.data
    out = {"data.train": file_sha256(d.train)}
    if m.init:
        out["model.init"] = model_fingerprint(m.init)
    tok = Path(m.tokenizer or m.init) / "tokenizer.json"
    out["tokenizer"] = file_sha256(tok)
    return out


def check_inputs_unchanged(cfg: TrainConfig, run_dir: Path) -> None:
    """A continuing run's inputs must be those it was started with (`inputs.json`)."""
    path = run_dir / INPUTS
    if not path.is_file():
        return  # a run started by an older version: its inputs are recorded when it continues
    saved = read_json(path)
    now = input_fingerprints(cfg)
    changed = [k for k in now if not isinstance(saved, dict) or saved.get(k) != now[k]]
    if changed:
        raise DataError(
            f"{path}: this training run was started on other inputs ({', '.join(changed)} changed since: the "
            "same path, other contents); a resume would mix them. Restore them, choose another "
            "checkpoint.run_dir, or pass --overwrite (checkpoint.overwrite=true) to start over"
        )


def start_over(run_dir: Path) -> None:
    """checkpoint.overwrite: remove what an earlier run of this run_dir left (checkpoints, metrics). Its
    reference log-probs stay: their provenance decides whether they are reused. The old final weights stay
    until the new ones replace them."""
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    (run_dir / METRICS).unlink(missing_ok=True)


def lock_run_dir(run_dir: Path, info: D.DistInfo) -> RunLock | None:
    """Rank 0 locks run_dir; every rank learns whether it could (and all fail together if not)."""
    lock, error = None, None
    if info.is_main:
        try:
            lock = RunLock(run_dir, what="training run directory").acquire()
        except OutputError as e:
            error = str(e)
    errors = [e for e in D.all_gather_objects(error, info) if e]
    if errors:
        if lock is not None:
            lock.release()
        raise OutputError(errors[0])
    return lock
