"""`srlm run` under a real 2-process torchrun (gloo on CPU), on the seconds-scale settings of test_loop.py.

* From scratch: every artifact of a one-process run, a report, every stage run once, and rank 1 commits no file.
* Resumed at M1 from a one-process run's directory: the generation stages (M1's evaluation, self-instruct,
  candidates, expected-mode judge), pairs and reference log-probs on 2 ranks are byte-identical to one process's,
  with data-parallel replicas and with an FSDP-sharded model in lockstep.
  (Training is not: `schedule.micro_batch_size` is per rank, so 2 ranks train with twice the global batch.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from srlm_fast.config import load_job_config
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.loop import run_loop
from tests.helpers import torchrun
from tests.recipe.test_loop import ARTIFACTS, SMOKE

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("_loop_dist_worker.py")
# Produced by M1 and the stages before DPO: the same whatever the world size.
SAME_ON_TWO_RANKS = [
    "eval/m1.json", "iter1/prompts.jsonl", "iter1/candidates.jsonl", "iter1/judgments.jsonl",
    "iter1/pairs.jsonl", "iter1/pairs.ref.jsonl", "iter1/stats.json",
]  # fmt: skip


def torchrun_run(runs: Path, name: str, writes: Path, *extra: str) -> subprocess.CompletedProcess:
    writes.mkdir(parents=True, exist_ok=True)
    proc = torchrun(str(WORKER), str(writes), "run", f"--name={name}", f"--runs_dir={runs}", *SMOKE, *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def run_files(root: Path) -> set[str]:
    """The run's files, without the trainer's checkpoint internals (one DCP shard and RNG state per rank)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "checkpoints" not in p.parts}


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("one")
    return run_loop(load_job_config(LoopConfig, None, [f"--runs_dir={runs}", "--name=run", *SMOKE]))


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[Path, str, Path]:
    base = tmp_path_factory.mktemp("two")
    proc = torchrun_run(base / "runs", "run", base / "writes")
    return base / "runs" / "run", proc.stdout, base / "writes"


def test_two_ranks_write_every_artifact_once_from_rank_0(one, two):
    root, stdout, writes = two
    for rel in ARTIFACTS:
        assert (root / rel).is_file(), rel
    assert run_files(root) == run_files(one)
    assert "M1" in (root / "report.md").read_text() and "M2" in (root / "report.md").read_text()
    # Seed data, tokenizer and M0 come from rank 0 alone: byte-identical to one process's.
    for rel in ARTIFACTS[1:7]:
        assert (root / rel).read_bytes() == (one / rel).read_bytes(), rel
    # One copy of the story: every stage started once, in a log that only rank 0 writes.
    started = re.findall(r"^  ▶ (.+)$", stdout, re.M)
    assert len(started) == len(set(started)) == 12, started
    assert stdout.count("new run ") == 1 and "2 ranks on cpu: data_parallel generation" in stdout
    # Every file is committed by a rename (atomic writes); rank 1 made none, rank 0 each artifact once.
    assert not (writes / "rank1.txt").exists()
    renames = (writes / "rank0.txt").read_text().splitlines()
    repeated = {p for p in renames if renames.count(p) > 1}
    assert {Path(p).name for p in repeated} <= {
        "stats.json",
        "latest",
        "provenance.json",
    }  # in place, by design
    assert str(root / "iter1" / "candidates.jsonl") in renames


@pytest.mark.parametrize("mode", ["data_parallel", "lockstep"])
def test_resumed_on_two_ranks_at_m1_equals_one_process(one, tmp_path, mode):
    # The one-process run's directory up to M1, moved to another runs_dir (the saved config names it, and the
    # generation mode: it changes how the ranks share the work, not the results).
    runs = tmp_path / "runs"
    drop = shutil.ignore_patterns("iter1", "eval", "m2", "report.*", "*.svg")  # "m2" drops train/m2 too
    shutil.copytree(one, runs / "run", ignore=drop)
    config = runs / "run" / "config.toml"
    text = config.read_text().replace(str(one.parent), str(runs))
    config.write_text(text.replace('mode = "data_parallel"', f'mode = "{mode}"'))
    proc = torchrun_run(runs, "run", tmp_path / "writes", f"--generation.mode={mode}")
    assert f"2 ranks on cpu: {mode} generation" in proc.stdout
    assert "resuming run" in proc.stdout and "✓ SFT → M1" in proc.stdout
    for rel in SAME_ON_TWO_RANKS:
        assert (runs / "run" / rel).read_bytes() == (one / rel).read_bytes(), rel
    assert (runs / "run" / "report.md").is_file()
