"""`srlm run` end to end at seconds scale, and a run SIGKILLed inside every stage that resumes to the same end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from srlm_fast.config import ConfigError, load_job_config
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.loop import run_loop
from srlm_fast.recipe.rundir import KILL_ENV

pytestmark = pytest.mark.slow

# A seconds-scale run: the tiny architecture, a few dozen examples, one iteration.
SMOKE = [
    "--iterations=1", "--model.preset=tiny", "--model.vocab_size=400", "--model.max_seq_len=256",
    "--seed_data.n_ift=160", "--seed_data.n_eft=60", "--seed_data.n_meft=20", "--seed_data.n_selfinstruct=30",
    "--seed_data.n_seed_prompts=30",
    "--selfinstruct.n_prompts=6", "--selfinstruct.batch_size=8", "--selfinstruct.max_new_tokens=12",
    "--candidates.max_new_tokens=8", "--judge.k=2", "--judge.max_new_tokens=20",
    "--eval.n_task_prompts=6", "--eval.n_judge_items=6", "--eval.max_new_tokens=8",
    # 8 rows a step: the seconds-scale SFT of before the default became 2 rows (same steps, same checkpoints).
    "--sft.schedule.epochs=1.0", "--sft.schedule.micro_batch_size=8", "--sft.checkpoint.save_every=2",
    "--sft.logging.log_every=100",
    "--dpo.schedule.epochs=1.0", "--dpo.checkpoint.save_every=1", "--dpo.schedule.micro_batch_size=2",
    # An untrained model writes no parsable "Score:"; the expected-score judge always scores, so pairs exist and
    # the DPO stage really trains.
    "--judge.mode=expected",
]  # fmt: skip
# The evaluations a config can list, on the real shared files (a few records each) when they are present.
_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
if (_SHARED / "eval" / "mt_bench_questions.jsonl").is_file():
    SMOKE += [f"--eval.prompts={_SHARED / 'eval' / 'mt_bench_questions.jsonl'}",
              f"--eval.rankings={_SHARED / 'prefs' / 'oasst_en_100_trees.jsonl'}", "--eval.limit=3"]  # fmt: skip

# Every stage of a run, in order, with the artifact that marks it done.
STAGES = ["seed", "tokenizer", "sft-m1", "eval-m1", "prompts", "candidates", "judge", "pairs", "reference",
          "dpo-m2", "eval-m2"]  # fmt: skip

# Artifacts that must be byte-identical between an uninterrupted run and a killed-and-resumed one.
ARTIFACTS = [
    "config.toml", "seed/sft.jsonl", "seed/ift.jsonl", "seed/eft.jsonl", "seed/seed_prompts.jsonl",
    "tokenizer/tokenizer.json", "m0/model.safetensors", "m1/model.safetensors", "eval/m1.json",
    "iter1/prompts.jsonl", "iter1/candidates.jsonl", "iter1/judgments.jsonl", "iter1/pairs.jsonl",
    "iter1/pairs.ref.jsonl", "iter1/stats.json", "m2/model.safetensors", "eval/m2.json",
]  # fmt: skip


def _cli(runs: Path, name: str, kill: str | None, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    args = [f"--name={name}", f"--runs_dir={runs}", *SMOKE, *extra]
    cmd = [sys.executable, "-m", "srlm_fast.cli", "run", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={runs}", "--name=ref", *SMOKE])
    return run_loop(cfg)


def test_end_to_end_writes_every_artifact_and_a_report(reference_run):
    for rel in ARTIFACTS:
        assert (reference_run / rel).is_file(), rel
    report = (reference_run / "report.md").read_text()
    assert "M1" in report and "M2" in report
    # Every stage's wall time and the peak memory so far, from the provenance records, in run order.
    from srlm_fast.recipe.rundir import RunDir, stage_costs

    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={reference_run.parent}", "--name=ref", *SMOKE])
    costs = stage_costs(RunDir(cfg))
    names = [c["stage"] for c in costs]
    assert names[:3] == ["seed data", "tokenizer", "random M0"] and "iter1: DPO → M2" in names
    assert all(c["seconds"] >= 0 for c in costs) and costs[-1]["peak_rss_mb"] >= costs[0]["peak_rss_mb"] > 0
    assert "| iter1: DPO → M2 |" in report
    if any(a.startswith("--eval.prompts=") for a in SMOKE):
        m2 = json.loads((reference_run / "eval" / "m2.json").read_text())
        assert m2["vs_previous"]["n"] == 3  # M2 against M1 on 3 MT-Bench prompts, both orders
        assert "pairwise_accuracy" in m2["human_rankings"]
        assert (reference_run / "eval" / "m1.answers.jsonl").is_file()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        assert (reference_run / "m2" / name).is_file()  # an HF checkpoint any tool can load
    # A finished training stage keeps its config and metrics, not its training state (only a resume reads it).
    for k in (1, 2):
        assert (reference_run / "train" / f"m{k}" / "metrics.jsonl").is_file()
        assert not (reference_run / "train" / f"m{k}" / "checkpoints").exists()
    stats = json.loads((reference_run / "iter1" / "stats.json").read_text())
    assert sum(stats["pairs"]["checker"].values()) == stats["pairs"]["pairs"]  # every pair graded once


def test_killed_in_every_stage_resumes_to_identical_artifacts(reference_run, tmp_path):
    for stage in STAGES:
        proc = _cli(tmp_path, "ref", kill=stage)
        assert proc.returncode == -signal.SIGKILL, f"{stage}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    proc = _cli(tmp_path, "ref", kill=None)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "✓" in proc.stdout  # finished stages were not redone
    resumed = tmp_path / "ref"
    for rel in ARTIFACTS:
        ours, theirs = (resumed / rel).read_bytes(), (reference_run / rel).read_bytes()
        if rel == "config.toml":  # the runs directory differs, nothing else may
            ours, theirs = (
                ours.replace(str(tmp_path).encode(), b""),
                theirs.replace(str(reference_run.parent).encode(), b""),
            )
        assert ours == theirs, f"{rel} differs after kill + resume"


def test_resume_with_a_different_config_is_refused(reference_run):
    cfg = load_job_config(
        LoopConfig, None, [f"--runs_dir={reference_run.parent}", "--name=ref", *SMOKE, "--seed=7"]
    )
    with pytest.raises(ConfigError, match=r"different config \(differs in seed\)"):
        run_loop(cfg)


def test_a_run_saved_before_new_config_keys_resumes(tmp_path):
    """A config.toml written by an older version (without keys added since) is the same config when the new
    keys are at their defaults; it is rewritten in full. A real difference is still refused, naming the key."""
    from srlm_fast.config import to_toml
    from srlm_fast.recipe.rundir import RunDir, save_or_check_config

    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=old", *SMOKE])
    run = RunDir(cfg)
    run.root.mkdir(parents=True)
    full = to_toml(cfg)
    start = full.index("[generation]")  # as if this table (added later) were unknown when the run started
    old = full[:start] + full[full.index("\n[", start) + 1 :]
    assert "[generation]" in full and "[generation]" not in old
    run.config.write_text(old)
    save_or_check_config(cfg, run)
    assert run.config.read_text() == full
    run.config.write_text(old.replace("seed = 0", "seed = 3"))
    with pytest.raises(ConfigError, match=r"differs in seed\)"):
        save_or_check_config(cfg, run)


def test_only_the_iteration_count_may_change_on_resume(tmp_path, capsys):
    """More iterations extend a run (no artifact depends on how many follow it); any other key is refused, even
    beside a changed iteration count."""
    from srlm_fast.recipe.rundir import RunDir, save_or_check_config

    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=x", *SMOKE])
    save_or_check_config(cfg, RunDir(cfg))
    more = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=x", *SMOKE, "--iterations=3"])
    save_or_check_config(more, RunDir(more))
    assert f"resuming run {RunDir(more).root} (with 3 iterations, was 1)" in capsys.readouterr().out
    assert "iterations = 3" in RunDir(more).config.read_text()  # the config now says what the run holds
    other = load_job_config(
        LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=x", *SMOKE, "--iterations=4", "--seed=5"]
    )
    with pytest.raises(ConfigError, match=r"differs in seed\)"):
        save_or_check_config(other, RunDir(other))
    assert "iterations = 3" in RunDir(more).config.read_text()  # a refused resume writes nothing


def test_a_finished_run_resumed_with_more_iterations_extends_it(reference_run, tmp_path):
    import shutil

    shutil.copytree(reference_run, tmp_path / "ref")
    config = tmp_path / "ref" / "config.toml"  # the copy lives in another runs directory
    config.write_text(config.read_text().replace(str(reference_run.parent), str(tmp_path)))
    before = {rel: (tmp_path / "ref" / rel).read_bytes() for rel in ARTIFACTS if rel != "config.toml"}
    proc = _cli(tmp_path, "ref", kill=None, extra=["--iterations=2"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "(with 2 iterations, was 1)" in proc.stdout
    assert "✓ iter1: DPO → M2" in proc.stdout  # iteration 1 was not redone
    for rel, data in before.items():
        assert (tmp_path / "ref" / rel).read_bytes() == data, f"{rel} changed"
    for rel in ("iter2/pairs.jsonl", "m3/model.safetensors", "eval/m3.json"):
        assert (tmp_path / "ref" / rel).is_file(), rel
    assert "M3" in (tmp_path / "ref" / "report.md").read_text()


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[2] / "srlm_fast" / "configs").glob("loop-*.toml"))
)
def test_shipped_loop_configs_load_and_their_trainer_tables_validate(path):
    from srlm_fast.config import from_dict, merge
    from srlm_fast.recipe.stages import train_table
    from srlm_fast.train.config import TrainConfig

    cfg = load_job_config(LoopConfig, path)
    for task in ("sft", "dpo"):
        tc = from_dict(
            TrainConfig,
            merge({"task": task, "data": {"train": "x"}, "model": {"init": "m"}}, train_table(task, cfg)),
        )
        tc.validate(check_paths=False)  # the values; the placeholder paths do not exist


def test_wandb_offline_gets_scalars_and_the_model_table(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from srlm_fast.recipe.summary import log_to_wandb

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = wandb.init(project="srlm-test", mode="offline", dir=str(tmp_path))
    rows = [
        {"model": "M1", "task_accuracy": 0.2, "pairs": None},
        {"model": "M2", "task_accuracy": 0.25, "pairs": 12},
    ]
    log_to_wandb(run, rows)
    run.finish()
    files = [p.name for p in tmp_path.rglob("*")]
    assert any(name.endswith(".wandb") for name in files)  # the offline run was written
    assert any("models" in name and name.endswith(".table.json") for name in files)  # and the table with it


def test_checker_counts_what_the_pairs_teach():
    import random

    from srlm_fast.recipe import task_eft, tasks
    from srlm_fast.recipe.pairs import Pair
    from srlm_fast.recipe.stage_checks import checked_pairs, checked_pairs_by_family

    rng = random.Random(0)
    task = tasks.eval_prompts(1, seed=3)[0]
    right, wrong = task_eft.candidate(task, "correct", rng), task_eft.candidate(task, "wrong", rng)
    assert tasks.check(task.prompt, right).correct and not tasks.check(task.prompt, wrong).correct

    def pair(prompt: str, chosen: str, rejected: str) -> Pair:
        return Pair(prompt, chosen, rejected, 5.0, 1.0, len(chosen), len(rejected), 0, 1, (5.0, 1.0))

    pairs = [
        pair(task.prompt, right, wrong),
        pair(task.prompt, right, wrong),
        pair(task.prompt, wrong, right),
        pair(task.prompt, wrong, wrong + "!"),
        pair(task.prompt, right, right + " Indeed."),
        pair("Write a poem about the sea.", "waves", "sand"),
    ]
    assert checked_pairs(pairs) == {
        "right": 2, "wrong": 1, "both_correct": 1, "both_wrong": 1, "unparseable": 1,
    }  # fmt: skip
    # Per family, from pairs.jsonl rows: the poem is no family, and a replayed row (SFT data) is not a pair.
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    rows.append({"prompt": task.prompt, "chosen": wrong, "rejected": right, "replay": True})
    assert checked_pairs_by_family(rows) == {
        task.family: {"right": 2, "wrong": 1, "both_correct": 1, "both_wrong": 1},
    }


def test_checkpoint_copy_is_atomic_and_ignores_a_stale_partial_copy(tmp_path):
    from srlm_fast.recipe.rundir import copy_checkpoint

    src = tmp_path / "m1"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights")
    stale = tmp_path / ".m2.tmp"  # a copy killed halfway by an earlier run
    stale.mkdir()
    (stale / "junk").write_text("half")
    copy_checkpoint(src, tmp_path / "m2")
    assert sorted(p.name for p in (tmp_path / "m2").iterdir()) == ["model.safetensors"]
    assert not stale.exists()
