"""Two processes on one run directory: the second refuses clearly while the first trains, undisturbed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests._train_fixtures import make_workspace, read_metrics, sft_overrides
from tests.helpers import REPO

pytestmark = pytest.mark.slow


# `srlm` whose first training step waits for a file: the test decides when the first process may go on, so it is
# certainly mid-run (holding the lock) while the second one starts.
HELD = """
import sys, time
from pathlib import Path
from srlm_fast import cli
from srlm_fast.train.trainer import Trainer

go, step = Path(sys.argv[1]), Trainer._sft_step
def held(self, lm, micro):
    deadline = time.monotonic() + 300
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return step(self, lm, micro)
Trainer._sft_step = held
sys.exit(cli.main(sys.argv[2:]))
"""


def _srlm(*args: str, held_until=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    pre = ["-c", HELD, str(held_until)] if held_until is not None else ["-m", "srlm_fast.cli"]
    cmd = [sys.executable, *pre, *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_process_refuses_a_run_dir_in_use(tmp_path):
    ws = make_workspace(tmp_path, n_sft=24, n_pairs=4)
    run_dir = tmp_path / "run"
    args = ["sft", *sft_overrides(ws, run_dir, schedule__max_steps=20, schedule__micro_batch_size=2)]
    go = tmp_path / "go"
    first = _srlm(*args, held_until=go)
    lock = run_dir / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first process never took the lock"
        time.sleep(0.1)
    owner = json.loads(lock.read_text())["pid"]
    assert owner == first.pid
    second = _srlm(*args)
    _, err = second.communicate(timeout=120)
    still_training = first.poll() is None
    go.touch()
    assert second.returncode == 1
    assert err.strip().splitlines() == [
        f"srlm sft: error: {run_dir}: this training run directory is in use by process {first.pid} on "
        f"{os.uname().nodename} (lock file {lock}); wait for it to finish, or use another directory. If that "
        f"process is gone, remove {lock}"
    ]
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert still_training
    # The first run is complete and undisturbed: every step logged once, the lock released.
    assert sorted(read_metrics(run_dir)) == list(range(1, 21))
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 20
    assert (run_dir / "final" / "model.safetensors").is_file() and not lock.exists()
