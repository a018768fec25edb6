"""torchrun modes of the sampler (2 CPU processes, gloo) give the single-process results, in request order."""

import json
from pathlib import Path

import pytest

from tests.helpers import torchrun

WORKER = Path(__file__).with_name("_generate_dist_worker.py")


@pytest.mark.slow
def test_torchrun_modes_equal_single_process(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = torchrun(str(WORKER), str(out), timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    ref = res["ref"]
    assert [len(r) for r in ref] == [1, 2, 1, 1, 3]  # n samples per request
    assert res["dp"] == ref
    assert res["lockstep"] == ref
    assert res["lockstep_one"] == ref[:1]
    assert res["order"] == list(range(5))
