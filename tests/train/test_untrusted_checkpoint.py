"""A resume trusts only data formats: a pickle payload planted in any file of a training checkpoint runs nothing.

The payload, if unpickled, writes a marker file. It is planted (as a raw pickle, and as a `torch.save` zip whose
`data.pkl` is the payload) in every file a resume could read, one file per run, and beside them under the names
the older format used (`state/.metadata`, `rng-rank0.pt`). Each resume must either refuse with a one-line error
or carry on with the intact state; the marker must never appear. Finally a resume of an intact checkpoint with
`pickle` and `torch.load` disabled outright shows that no load path unpickles anything.
"""

from __future__ import annotations

import io
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from srlm_fast import cli
from srlm_fast.config import load_job_config
from srlm_fast.train.checkpointing import latest_checkpoint
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.trainer import Trainer, train
from tests._train_fixtures import make_workspace, one_thread, read_metrics, sft_overrides

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def raw_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker), protocol=2)


def torch_zip(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"state": Payload(marker)}, buf)
    return buf.getvalue()


OVERRIDES = dict(schedule__max_steps=4, checkpoint__save_every=2, schedule__micro_batch_size=8)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A run that crashed in step 3: checkpoint step-000002 is its latest, no final weights yet."""
    ws = make_workspace(tmp_path_factory.mktemp("untrusted"), n_sft=24, n_pairs=4)
    run_dir = ws["root"] / "run"
    original = Trainer._sft_step
    calls = {"n": 0}

    def crashing(self, lm, micro):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return original(self, lm, micro)

    Trainer._sft_step = crashing
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(load_job_config(TrainConfig, None, sft_overrides(ws, run_dir, **OVERRIDES)))
    finally:
        Trainer._sft_step = original
    assert latest_checkpoint(run_dir).name == "step-000002"
    return ws, run_dir


def _files(run_dir: Path) -> list[str]:
    """Every file a resume could read: the checkpoint's, the pointer, the run's config and metrics."""
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    return sorted(str(p.relative_to(run_dir)) for p in files)


def _resume(ws, run_dir: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["sft", *sft_overrides(ws, run_dir, **OVERRIDES)])
    return code, capsys.readouterr().err


# Every file a resume could read: the checkpoint's, the pointer to it, the run's config and metrics.
RUN_FILES = [
    "checkpoints/latest",
    "checkpoints/step-000002/train_state.json",
    "checkpoints/step-000002/state/index.json",
    "checkpoints/step-000002/state/rank-00000-of-00001.safetensors",
    "checkpoints/step-000002/model/config.json",
    "checkpoints/step-000002/model/model.safetensors",
    "checkpoints/step-000002/model/tokenizer.json",
    "checkpoints/step-000002/model/tokenizer_config.json",
    "config.toml",
    "inputs.json",
    "metrics.jsonl",
]
# The older format's names, planted beside an intact checkpoint of the new one.
OLD_FORMAT_FILES = [
    "checkpoints/step-000002/state/.metadata",
    "checkpoints/step-000002/state/__0_0.distcp",
    "checkpoints/step-000002/rng-rank0.pt",
]
CASES = [(f, "pickle") for f in RUN_FILES + OLD_FORMAT_FILES] + [
    (f, "torch-zip") for f in RUN_FILES if f.endswith(".safetensors")
]


def test_the_planted_files_are_all_the_files_of_the_run(crashed):
    assert sorted(str(p.relative_to(crashed[1])) for p in crashed[1].rglob("*") if p.is_file()) == sorted(
        RUN_FILES
    )


@pytest.mark.parametrize("target, kind", CASES, ids=lambda x: str(x).replace("/", "|"))
def test_a_planted_payload_runs_nothing_on_resume(crashed, tmp_path, capsys, target, kind):
    ws, base = crashed
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir)
    marker = tmp_path / "PWNED"
    (run_dir / target).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / target).write_bytes(raw_pickle(marker) if kind == "pickle" else torch_zip(marker))
    code, err = _resume(ws, run_dir, capsys)
    assert not marker.exists(), f"the payload in {target} ran"
    assert "Traceback" not in err
    if code != 0:  # refused: one line naming what is wrong
        lines = [x for x in err.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("srlm sft: error:"), err
    else:  # the file is not read on resume (e.g. the HF copy of the weights): training carried on
        assert (run_dir / "final" / "model.safetensors").is_file()


def test_resume_never_unpickles(crashed, tmp_path, monkeypatch, capsys):
    """With pickle and torch.load disabled, an intact checkpoint resumes and finishes like an uninterrupted run."""
    ws, base = crashed
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling on a load path")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    code, err = _resume(ws, run_dir, capsys)
    assert code == 0, err
    monkeypatch.undo()
    assert sorted(read_metrics(run_dir)) == [1, 2, 3, 4]
    whole = tmp_path / "whole"
    train(load_job_config(TrainConfig, None, sft_overrides(ws, whole, **OVERRIDES)))
    for step in (3, 4):
        assert read_metrics(run_dir)[step]["loss"] == pytest.approx(
            read_metrics(whole)[step]["loss"], abs=1e-6
        )
