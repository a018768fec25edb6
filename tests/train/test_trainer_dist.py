"""The trainer under real `torchrun` processes (gloo on CPU, FSDP2 with 2 ranks).

Three launches in all (torchrun startup is the slow part): one runs several jobs in-process (SFT curves,
accumulation, DPO with distributed reference scoring); one is killed after a checkpoint; one resumes it.
Each is compared against single-process runs made in the test process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from srlm_fast.config import load_job_config
from srlm_fast.train.checkpointing import latest_checkpoint
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.reference import compute_reference_logprobs
from srlm_fast.train.trainer import train
from tests._train_fixtures import dpo_overrides, make_workspace, one_thread, read_metrics, sft_overrides
from tests.helpers import torchrun

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("_train_worker.py")

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def curve(run_dir: Path) -> list[float]:
    m = read_metrics(run_dir)
    return [m[s]["loss"] for s in sorted(m)]


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=1e-4, msg=k)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def multi(ws):
    """Launch A: four jobs in one 2-process torchrun."""
    root = ws["root"]
    jobs = [
        sft_overrides(ws, root / "p2_g4", schedule__micro_batch_size=2, checkpoint__save_every=4),
        sft_overrides(ws, root / "p2_1x8", schedule__micro_batch_size=1, schedule__grad_accum=4),
        sft_overrides(ws, root / "p2_ac", schedule__micro_batch_size=2, model__activation_checkpointing=True),
        dpo_overrides(ws, root / "p2_g4" / "final", root / "p2_dpo", schedule__micro_batch_size=2),
    ]
    spec = root / "spec.json"
    spec.write_text(json.dumps({"jobs": jobs}))
    proc = torchrun(str(WORKER), str(spec))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root


def test_two_processes_match_one_process_and_the_loss_goes_down(ws, multi):
    one = ws["root"] / "p1_g4"
    train(load_job_config(TrainConfig, None, sft_overrides(ws, one, schedule__micro_batch_size=4)))
    two = multi / "p2_g4"
    assert curve(two)[-1] < curve(two)[0] - 0.5
    assert curve(two) == pytest.approx(curve(one), abs=1e-5)
    assert_same_weights(two / "final", one / "final")  # also checks FSDP's sharded load and full gather
    # Activation checkpointing (recomputation inside FSDP's backward) changes nothing either.
    assert curve(multi / "p2_ac") == pytest.approx(curve(one), abs=1e-5)
    assert_same_weights(multi / "p2_ac" / "final", one / "final")


def test_eight_micro_batches_of_one_over_two_ranks_equal_one_batch_of_eight(ws, multi):
    one = ws["root"] / "p1_g8"
    train(load_job_config(TrainConfig, None, sft_overrides(ws, one, schedule__micro_batch_size=8)))
    assert curve(multi / "p2_1x8") == pytest.approx(curve(one), abs=1e-5)
    assert_same_weights(multi / "p2_1x8" / "final", one / "final")


def test_dpo_with_two_processes_raises_reward_accuracy(ws, multi, tmp_path):
    m = read_metrics(multi / "p2_dpo")
    assert m[1]["reward_accuracy"] <= 0.5
    assert min(m[s]["reward_accuracy"] for s in (6, 7, 8)) >= 0.9 and m[8]["margin"] > m[2]["margin"]
    # Reference log-probs scored on 2 ranks (split pairs, lockstep forwards) equal one process's.
    dist_rows = [json.loads(x) for x in (multi / "p2_dpo" / "pairs.ref.jsonl").read_text().splitlines()]
    ref = compute_reference_logprobs(
        multi / "p2_g4" / "final", ws["pairs"], tmp_path / "r.jsonl", max_seq_len=96, device="cpu"
    )
    one_rows = [json.loads(x) for x in ref.read_text().splitlines()]
    assert [r["prompt"] for r in dist_rows] == [r["prompt"] for r in one_rows]
    for a, b in zip(dist_rows, one_rows):
        assert a["ref_chosen_logp"] == pytest.approx(b["ref_chosen_logp"], abs=1e-4)
        assert a["ref_rejected_logp"] == pytest.approx(b["ref_rejected_logp"], abs=1e-4)


def test_killed_run_resumes_exactly_through_the_cli(ws, multi):
    """2N steps == N steps, SIGKILL (after step N+1, unsaved), resume, N steps; via `srlm sft` under torchrun."""
    run_dir = ws["root"] / "p2_kill"
    args = [
        "-m",
        "srlm_fast.cli",
        "sft",
        *sft_overrides(ws, run_dir, schedule__micro_batch_size=2, checkpoint__save_every=4),
    ]
    killed = torchrun(*args, "--checkpoint.kill_after_step=5")
    assert killed.returncode != 0
    assert latest_checkpoint(run_dir).name == "step-000004" and not (run_dir / "final").exists()
    assert max(read_metrics(run_dir)) == 5
    resumed = torchrun(*args)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert "resumed from" in resumed.stdout and "step-000004" in resumed.stdout
    assert curve(run_dir) == pytest.approx(curve(multi / "p2_g4"), abs=1e-6)
    assert_same_weights(run_dir / "final", multi / "p2_g4" / "final", atol=1e-6)
