"""The run directory of `srlm run` and the machinery every stage shares.

RunDir                paths of one run, and this process's place in the job (rank 0 alone writes files); its lock
stage                 run a computation unless its artifact exists (made from the same inputs); a barrier after it
crash_point           the tests' kill switch: die after a stage's work, before its artifact is committed
save_or_check_config  the resolved config saved beside the artifacts; a resumed run must match it
copy_checkpoint       an atomic copy of a checkpoint directory
log, progress         the run's story, printed once (rank 0), and a policy's progress scope
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from srlm_fast import distributed as D
from srlm_fast.config import ConfigError, changed_keys, from_dict, read_toml, to_dict, to_toml
from srlm_fast.io import (
    DataError,
    OutputError,
    RunLock,
    check_writable_location,
    directory_fingerprint,
    file_fingerprint,
    read_json,
    write_json_atomic,
    write_text_atomic,
)
from srlm_fast.recipe.config import LoopConfig

__all__ = ["KILL_ENV", "RunDir", "changed_keys", "copy_checkpoint", "crash_point", "log", "progress", "stage"]

# Tests set this to a stage name: the process SIGKILLs itself after that stage's work, before its artifact is
# committed — the worst moment for a crash.
KILL_ENV = "SRLM_TEST_KILL_IN_STAGE"


class RunDir:
    """Paths of one run, and where this process sits in the job (rank 0 alone writes the run's files)."""

    def __init__(self, cfg: LoopConfig, info: D.DistInfo | None = None) -> None:
        self.info = info or D.DistInfo()
        self.root = Path(cfg.runs_dir) / cfg.name
        self.config = self.root / "config.toml"
        self.seed = self.root / "seed"
        self.tokenizer = self.root / "tokenizer"
        self.eval = self.root / "eval"
        self.provenance = self.root / PROVENANCE
        self._lock: RunLock | None = None

    def model(self, k: int) -> Path:
        return self.root / f"m{k}"

    def iteration(self, t: int) -> Path:
        return self.root / f"iter{t}"

    def train_dir(self, k: int) -> Path:
        return self.root / "train" / f"m{k}"

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def barrier(self) -> None:
        D.barrier(self.info)

    def agree(self, value):
        """Rank 0's `value` on every rank: decisions that read the filesystem must not diverge between ranks."""
        return D.broadcast_object(value, self.info)

    def exists(self, path: Path) -> bool:
        """Whether `path` exists, as rank 0 sees it."""
        return self.agree(path.exists() if self.is_main else None)

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """`fn()` on rank 0; its result, or its error, on every rank (they fail together, none waits alone)."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except (ValueError, OSError) as e:
                error = e
        result, error = self.agree((result, error))
        if error is not None:
            raise error
        return result

    def claim(self) -> None:
        """Before anything is written: the run directory is new, empty or a run's own (never another directory
        turned into one), its location writable, and no other process is running it (rank 0 takes the lock)."""

        def check_and_lock() -> None:
            root = self.root
            if root.exists() and not root.is_dir():
                raise OutputError(f"{root}: runs_dir/name is a file, not a run directory")
            if root.is_dir() and not self.config.is_file() and any(p.name != ".lock" for p in root.iterdir()):
                raise OutputError(
                    f"{root}: exists and is not a run directory of srlm run (no config.toml); refusing to write "
                    "into it: choose another --name or runs_dir"
                )
            check_writable_location(self.config)
            self._lock = RunLock(root, what="run directory").acquire()

        self.on_main(check_and_lock)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def rel(self, path: Path) -> str:
        """`path` relative to the run directory when inside it (the key of its provenance record), else as given."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)


def log(msg: str) -> None:
    # Every rank runs the loop; one copy of its story is enough.
    grouped = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not grouped or torch.distributed.get_rank() == 0:
        print(msg, flush=True)


def stage(
    run: RunDir,
    name: str,
    artifact: Path,
    compute: Callable[..., None],
    *args: Any,
    main_only: bool = False,
    inputs: Sequence[str | Path | None] = (),
) -> bool:
    """Run `compute(*args)` unless `artifact` exists (as rank 0 sees it); returns whether it ran.

    `compute` runs on every rank (collective stages), or on rank 0 alone with `main_only` (cheap CPU work that
    only writes files). It must create `artifact` atomically, last, on rank 0.

    Provenance: the files and directories in `inputs` (the artifacts of earlier stages, models, data files the
    config names) are fingerprinted into the run's `provenance.json` beside the artifact's name when it is made.
    An existing artifact whose inputs have changed since is not reused: the run stops and says which input
    changed (an artifact without a record, e.g. from an older version, is adopted with today's inputs).
    """
    inputs = [Path(p) for p in inputs if p]
    if run.exists(artifact):
        run.on_main(lambda: _check_provenance(run, name, artifact, inputs))
        log(f"  ✓ {name:<28} (done: {artifact.name})")
        return False
    log(f"  ▶ {name}")
    t0 = time.perf_counter()
    if run.is_main or not main_only:
        compute(*args)
    run.barrier()  # rank 0 has committed the artifact before any rank reads it in the next stage
    if not run.exists(artifact):
        raise RuntimeError(f"stage {name} finished without writing {artifact}")
    cost = {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": peak_rss_mb()}
    run.on_main(lambda: _record_provenance(run, name, artifact, inputs, cost))
    log(f"    {name} took {cost['seconds']:.1f}s")
    return True


PROVENANCE = "provenance.json"


def fingerprint(path: Path) -> str:
    """A file's content fingerprint, or a directory's (every file in it, by name and content)."""
    if path.is_dir():
        return directory_fingerprint(path, ["*"])
    if path.is_file():
        return file_fingerprint(path)
    return "missing"


def _records(run: RunDir) -> dict:
    if not run.provenance.is_file():
        return {}
    data = read_json(run.provenance)
    if not isinstance(data, dict):
        raise DataError(f"{run.provenance}: expected a JSON object")
    return data


def _record_provenance(
    run: RunDir, name: str, artifact: Path, inputs: list[Path], cost: dict | None = None
) -> None:
    records = _records(run)
    record: dict[str, Any] = {"stage": name, "inputs": {run.rel(p): fingerprint(p) for p in inputs}}
    records[run.rel(artifact)] = {**record, **(cost or {})}
    write_json_atomic(run.provenance, records)


def peak_rss_mb() -> int:
    """The largest resident set this process (or a finished child of it) has had so far, in MB (Linux: KB units)."""
    return (
        max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        // 1024
    )


def stage_costs(run: RunDir | Path) -> list[dict]:
    """{stage, seconds, peak_rss_mb} of every stage a run (a RunDir or a run directory's path) computed, in the
    order they were made (a stage adopted or shared from elsewhere has none and is left out). `peak_rss_mb` is the
    process's peak so far when the stage ended, so the stage where it jumps is the one that needed the memory. A
    resumed run keeps each stage's first numbers; the peak restarts with the process."""
    if isinstance(run, RunDir):
        records = _records(run)
    else:
        path = Path(run) / PROVENANCE
        records = read_json(path) if path.is_file() else {}
    return [{"stage": r["stage"], "seconds": r["seconds"], "peak_rss_mb": r.get("peak_rss_mb")}
            for r in records.values()
            if isinstance(r, dict) and isinstance(r.get("seconds"), int | float)]  # fmt: skip


def _check_provenance(run: RunDir, name: str, artifact: Path, inputs: list[Path]) -> None:
    record = _records(run).get(run.rel(artifact))
    if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict):
        _record_provenance(run, name, artifact, inputs)  # made before records existed: adopted as it is
        return
    saved = record["inputs"]
    changed = [run.rel(p) for p in inputs if saved.get(run.rel(p)) != fingerprint(p)]
    if changed:
        raise DataError(
            f"{artifact}: stage {name!r} made it from inputs that have changed since ({', '.join(changed)}); "
            f"it is not reused. Restore them, or remove {run.rel(artifact)} and the artifacts made after it to "
            "compute them again"
        )


def kill_requested(name: str) -> bool:
    """Whether the tests asked this process to die inside stage `name` (see KILL_ENV)."""
    return os.environ.get(KILL_ENV) == name


def crash_point(name: str) -> None:
    """SIGKILL this process here if the tests asked for a crash inside stage `name`."""
    if kill_requested(name):
        log(f"    [test] killing the process inside stage {name}")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def progress(policy, desc: str):
    """The policy's progress scope (a bar or periodic lines on rank 0); nothing for a policy without one."""
    return policy.progress(desc) if hasattr(policy, "progress") else contextlib.nullcontext()


def copy_checkpoint(source: str | Path, target: Path) -> None:
    """Copy a checkpoint directory to `target`, atomically (a killed copy leaves no half checkpoint behind)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, target)


# ---- the config of a run ----------------------------------------------------------------------------------


def save_or_check_config(cfg: LoopConfig, run: RunDir) -> None:
    """Save the resolved config; a resumed run must have the same one (else its artifacts would mix), except
    for `RESUMABLE_KEYS`."""
    status = _save_or_check_config(cfg, run) if run.is_main else None
    status = run.agree(status)
    if status.startswith("error:"):
        raise ConfigError(status.removeprefix("error:"))
    log(status)
    run.barrier()
    # Every rank reads the artifacts rank 0 writes: they must share the run directory's filesystem.
    blind = [r for r, seen in enumerate(D.all_gather_objects(run.config.is_file(), run.info)) if not seen]
    if blind:
        raise ConfigError(
            f"runs_dir: rank(s) {blind} cannot see {run.config}, written by rank 0; under torchrun on several "
            "nodes runs_dir must be on a filesystem every node shares"
        )


# Keys a resumed run may change. No artifact depends on how many iterations follow it, so a finished run is
# extended by resuming it with more (`--iterations=4` after 3), and stops early with fewer.
RESUMABLE_KEYS = ("iterations",)


def _save_or_check_config(cfg: LoopConfig, run: RunDir) -> str:
    """The line to log ("new run ...", "resuming run ..."), or "error:<message>"."""
    text = to_toml(cfg)
    if run.config.exists():
        saved = run.config.read_bytes()
        if saved == text.encode():
            return f"resuming run {run.root}"
        # A run saved by an older version lacks the keys added since; with their defaults filled in (defaults
        # of new keys keep the old behaviour) it may still be the same config.
        try:
            before = to_dict(from_dict(LoopConfig, read_toml(run.config)))
        except ConfigError as e:
            return f"error:{run.config}: cannot read the saved config of this run ({e})"
        changed = [k for k in changed_keys(before, to_dict(cfg)) if k not in RESUMABLE_KEYS]
        if changed:
            return (
                f"error:{run.config}: this run was started with a different config (differs in "
                f"{', '.join(changed[:6])}{', …' if len(changed) > 6 else ''}); resume it with the same options "
                f"(`srlm run --config {run.config}`) or choose another --name"
            )
        # The same config, now spelled out with every key of this version (and the iteration count asked now).
        write_text_atomic(run.config, text)
        if before["iterations"] != cfg.iterations:
            return f"resuming run {run.root} (with {cfg.iterations} iterations, was {before['iterations']})"
        return f"resuming run {run.root}"
    run.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config, text)
    return f"new run {run.root}"
