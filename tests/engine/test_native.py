"""The native operator's build survives a builder that was killed mid-build."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from srlm_fast.engine import native


def _load_in_child(queue) -> None:
    native.reset()
    queue.put(native.get_op() is not None)


@pytest.mark.skipif(not native.enabled(), reason="native sampling disabled by SRLM_NATIVE")
def test_a_killed_builders_lock_file_does_not_block_later_processes() -> None:
    if native.get_op() is None:
        pytest.skip(f"native sampling extension did not build: {native.build_info()['error']}")
    name = "srlm_sampling_cuda" if native.has_cuda_kernel() else "srlm_sampling_cpu"
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    # What torch's builder leaves behind when it is killed before it can delete its lock file.
    (build_dir / "lock").touch()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_load_in_child, args=(queue,))
    child.start()
    child.join(timeout=180)
    stuck = child.is_alive()
    if stuck:
        child.kill()
    (build_dir / "lock").unlink(missing_ok=True)
    assert not stuck, "a fresh process waited on the stale torch build lock"
    assert queue.get(timeout=5) is True
