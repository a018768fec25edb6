"""torchrun modes of the sampler (2 CPU processes, gloo) give the single-process results, in request order."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_generate_dist_worker.py")


@pytest.mark.slow
def test_torchrun_modes_equal_single_process(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    ref = res["ref"]
    assert [len(r) for r in ref] == [1, 2, 1, 1, 3]  # n samples per request
    assert res["dp"] == ref
    assert res["lockstep"] == ref
    assert res["dp_gathered"] == ref
    assert res["lockstep_one"] == ref[:1]
    assert res["order"] == list(range(5))
