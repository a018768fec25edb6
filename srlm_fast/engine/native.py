"""Lazy build and loading of the native sampling operator (`csrc/sampling.cpp`, `csrc/sampling_cuda.cu`).

The extension is compiled on first use with `torch.utils.cpp_extension.load` into torch's default
extensions directory (``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``), which caches the build
keyed by a hash of the sources and flags: later processes only load the shared library. The CPU source is
always built; the CUDA source is added only when CUDA is available (and the library gets another name, so
CPU-only and CUDA builds do not evict each other from the cache). The op registers through the
dispatcher (``torch.ops.srlm_sampling.sample``) rather than pybind11, which keeps the build small.

When the build cannot happen (no compiler, no ninja, a compile error) the caller gets ``None`` and the
pure-torch path is used; a single warning is logged per process. ``SRLM_NATIVE=0`` disables the
extension without trying to build it.

Global state: ``_STATE`` caches the outcome of the one build attempt per process (the loaded op or the
failure), so that the sampler, called once per decode step, never retries a failing build. It is the only
mutable module state; `reset()` clears it (tests use it to simulate failures).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_ENV_SWITCH = "SRLM_NATIVE"
_ENV_CSRC = "SRLM_CSRC_DIR"


@dataclass
class _State:
    """Outcome of this process's build attempt: `op` when it loaded, `error` when it failed."""

    tried: bool = False
    op: Any = None
    error: str | None = None
    build_seconds: float | None = None
    with_cuda: bool = False


_STATE = _State()
_LOCK = threading.Lock()


def enabled() -> bool:
    """False when the environment switches the native path off (``SRLM_NATIVE=0``/``false``/``off``)."""
    return os.environ.get(_ENV_SWITCH, "1").strip().lower() not in {"0", "false", "off", "no"}


def csrc_dir() -> Path:
    """Where the C++/CUDA sources live.

    Looked up in order: ``$SRLM_CSRC_DIR``; ``csrc/`` inside the installed package (for when packaging
    ships the sources as package data); ``csrc/`` at the repository root (a source checkout or an editable
    install).
    """
    package = Path(__file__).resolve().parents[1]  # srlm_fast/
    candidates = []
    if os.environ.get(_ENV_CSRC):
        candidates.append(Path(os.environ[_ENV_CSRC]))
    candidates += [package / "csrc", package.parent / "csrc"]
    for c in candidates:
        if (c / "sampling.cpp").is_file():
            return c
    raise FileNotFoundError(
        "sampling.cpp not found in any of: " + ", ".join(str(c) for c in candidates) + f" (set ${_ENV_CSRC})"
    )


def _build() -> tuple[Any, bool]:
    """Compile (or load from cache) the extension; returns ``(torch.ops.srlm_sampling, has_cuda_kernel)``."""
    from torch.utils import cpp_extension

    src = csrc_dir()
    sources = [str(src / "sampling.cpp")]
    with_cuda = torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None
    if with_cuda:
        sources.append(str(src / "sampling_cuda.cu"))
    name = "srlm_sampling_cuda" if with_cuda else "srlm_sampling_cpu"
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    with _exclusive(build_dir / ".srlm-build.flock"):
        # torch's own lock is a plain file that its builder deletes when done, so a builder killed mid-build
        # (Ctrl-C, OOM, a test timeout) leaves it behind and every later process waits on it forever. Every
        # live builder of this extension holds the flock above, which the OS releases when its holder dies:
        # a torch lock file seen while holding it belongs to a dead process.
        (build_dir / "lock").unlink(missing_ok=True)
        cpp_extension.load(
            name=name,
            sources=sources,
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3"],
            is_python_module=False,  # the op registers itself with the dispatcher on load
            verbose=False,
            build_directory=str(build_dir),
        )
    _register_fake()
    return torch.ops.srlm_sampling, with_cuda


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An advisory lock on `path` for the duration of the block (blocks while another process holds it)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _register_fake() -> None:
    """Shape-only implementation so `torch.compile` can trace a decode step that calls the op."""
    try:
        torch.library.register_fake("srlm_sampling::sample")(
            lambda logits, temperature, top_k, top_p, seeds, steps: logits.new_empty(
                (logits.shape[0],), dtype=torch.long
            )
        )
    except RuntimeError as e:  # already registered in this process (a rebuild after reset())
        log.debug("srlm_fast.engine.native: fake kernel not registered again: %s", e)


def get_op(*, strict: bool = False) -> Any:
    """The loaded ``torch.ops.srlm_sampling`` namespace, or ``None`` if disabled or the build failed.

    With ``strict=True`` a disabled or failed extension raises `RuntimeError` instead (``impl="native"``).
    """
    if not enabled():
        if strict:
            raise RuntimeError(f"native sampling is disabled by ${_ENV_SWITCH}")
        return None
    with _LOCK:
        if not _STATE.tried:
            import time

            _STATE.tried = True
            t0 = time.perf_counter()
            try:
                _STATE.op, _STATE.with_cuda = _build()
                _STATE.build_seconds = time.perf_counter() - t0
            except Exception as e:  # any build/load failure: fall back, never crash the caller
                _STATE.error = f"{type(e).__name__}: {e}".strip()
                log.warning(
                    "srlm_fast.engine.native: could not build the native sampling extension, using the pure-torch "
                    "sampler (set %s=0 to silence). Cause: %s",
                    _ENV_SWITCH,
                    _STATE.error.splitlines()[0][:500],
                )
    if _STATE.op is None and strict:
        raise RuntimeError(f"native sampling extension unavailable: {_STATE.error}")
    return _STATE.op


def has_cuda_kernel() -> bool:
    """True when the loaded extension includes the CUDA kernel (built on a machine with CUDA)."""
    return _STATE.op is not None and _STATE.with_cuda


def available() -> bool:
    """True when the native op is enabled and built (builds it on first call)."""
    return get_op() is not None


def build_info() -> dict[str, Any]:
    """What happened to this process's build attempt (for benchmarks and bug reports)."""
    return {
        "enabled": enabled(),
        "tried": _STATE.tried,
        "loaded": _STATE.op is not None,
        "error": _STATE.error,
        "build_seconds": _STATE.build_seconds,
        "cuda_kernel": _STATE.with_cuda,
    }


def reset() -> None:
    """Forget the cached build outcome (for tests; the loaded library itself stays loaded)."""
    with _LOCK:
        _STATE.tried = False
        _STATE.op = None
        _STATE.error = None
        _STATE.build_seconds = None
        _STATE.with_cuda = False
