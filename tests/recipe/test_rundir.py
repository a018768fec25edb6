"""`stage`: run unless the artifact exists, insist that the computation wrote it; the changed-keys report."""

from __future__ import annotations

import pytest

from srlm_fast.config import load_job_config
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.rundir import KILL_ENV, RunDir, changed_keys, crash_point, stage


def make_run(tmp_path) -> RunDir:
    run = RunDir(load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=run"]))
    run.root.mkdir(parents=True)
    return run


def test_stage_runs_once_with_its_arguments_then_skips(tmp_path, capsys):
    run = make_run(tmp_path)
    artifact = run.root / "a.txt"
    calls = []

    def compute(text: str, *, suffix: str = "") -> None:
        calls.append(text)
        artifact.write_text(text + suffix)

    assert stage(run, "write a", artifact, compute, "hello") is True
    assert stage(run, "write a", artifact, compute, "again") is False
    assert calls == ["hello"] and artifact.read_text() == "hello"
    out = capsys.readouterr().out
    assert "  ▶ write a" in out and "  ✓ write a" in out and "(done: a.txt)" in out


def test_main_only_stages_run_on_rank_0(tmp_path):
    run = make_run(tmp_path)
    assert run.is_main  # one process is rank 0
    stage(run, "main", run.root / "m", lambda p: p.write_text("x"), run.root / "m", main_only=True)
    assert (run.root / "m").read_text() == "x"


def test_a_stage_that_writes_no_artifact_is_an_error(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(RuntimeError, match="stage lazy finished without writing .*missing"):
        stage(run, "lazy", run.root / "missing", lambda: None)


def test_crash_point_is_inert_unless_asked(monkeypatch):
    monkeypatch.setenv(KILL_ENV, "another-stage")
    crash_point("pairs")  # still alive


def test_changed_keys_are_dotted_and_sorted():
    a = {"seed": 0, "judge": {"k": 3, "mode": "sample"}, "sft": {}}
    b = {"seed": 1, "judge": {"k": 3, "mode": "expected"}, "sft": {"optim": {"lr": 1e-3}}, "new": True}
    assert changed_keys(a, b) == ["judge.mode", "new", "seed", "sft.optim"]
    assert changed_keys(a, a) == []


def test_a_done_stage_whose_inputs_changed_is_not_reused(tmp_path):
    from srlm_fast.io import DataError

    run = make_run(tmp_path)
    source, artifact = run.root / "in.jsonl", run.root / "out.jsonl"
    source.write_text('{"a": 1}\n')

    def compute() -> None:
        artifact.write_text(source.read_text().upper())

    assert stage(run, "upper", artifact, compute, inputs=[source]) is True
    assert stage(run, "upper", artifact, compute, inputs=[source]) is False  # same inputs: done
    source.write_text('{"a": 2}\n')
    with pytest.raises(DataError, match=r"out\.jsonl: stage 'upper' made it from inputs that have changed since "
                                         r"\(in\.jsonl\)"):  # fmt: skip
        stage(run, "upper", artifact, compute, inputs=[source])
    assert artifact.read_text() == '{"A": 1}\n'  # left as it was
    # An artifact made before records existed (an older version's run) is adopted with today's inputs.
    legacy = run.root / "legacy.txt"
    legacy.write_text("old")
    assert stage(run, "legacy", legacy, compute, inputs=[source]) is False
    source.write_text("changed again")
    with pytest.raises(DataError, match="legacy.txt"):
        stage(run, "legacy", legacy, compute, inputs=[source])


def test_claim_refuses_a_directory_that_is_no_run_and_a_run_in_use(tmp_path):
    from srlm_fast.io import LockedError, OutputError, RunLock

    other = RunDir(load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=photos"]))
    other.root.mkdir()
    (other.root / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match="is not a run directory of srlm run"):
        other.claim()
    run = make_run(tmp_path)
    with RunLock(run.root), pytest.raises(LockedError, match="this run directory is in use by process"):
        run.claim()
    run.claim()
    run.release()
    assert not (run.root / ".lock").exists()
