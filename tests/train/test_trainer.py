"""The training loop in one process: losses, accumulation, schedule, crash/resume, divergence, DPO, CLI."""

from __future__ import annotations

import io
import itertools
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from srlm_fast import cli
from srlm_fast.config import ConfigError, load_job_config
from srlm_fast.model.llama import Llama
from srlm_fast.train.checkpointing import latest_checkpoint
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.reference import compute_reference_logprobs
from srlm_fast.train.trainer import Trainer, TrainingDiverged, lr_at, train
from tests._train_fixtures import dpo_overrides, make_workspace, one_thread, read_metrics, sft_overrides


def run(overrides: list[str]):
    return train(load_job_config(TrainConfig, None, overrides))


def weights(ckpt) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def assert_same_weights(a, b, atol=1e-5):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=1e-4, msg=k)


def losses(run_dir) -> list[float]:
    m = read_metrics(run_dir)
    return [m[s]["loss"] for s in sorted(m)]


_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def sft_run(ws):
    """8 steps of 1 micro-batch of 8 rows, checkpoint every 4 steps."""
    run_dir = ws["root"] / "sft_8x1"
    final = run(sft_overrides(ws, run_dir, schedule__micro_batch_size=8, checkpoint__save_every=4))
    return run_dir, final


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 10, 1.0, 0.1, 3) for s in range(10)]
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))
    assert lrs[-1] == pytest.approx(0.1) and min(lrs) >= 0.1


def test_sft_loss_goes_down_and_writes_hf_checkpoints(ws, sft_run):
    run_dir, final = sft_run
    curve = losses(run_dir)
    assert len(curve) == 8 and curve[-1] < curve[0] - 0.5
    assert (final / "config.json").is_file() and (final / "tokenizer.json").is_file()
    assert latest_checkpoint(run_dir).name == "step-000008"
    state = json.loads((run_dir / "checkpoints" / "step-000008" / "train_state.json").read_text())
    assert state["step"] == 8
    rec = read_metrics(run_dir)[8]
    for key in ("lr", "grad_norm", "tokens_per_s", "eta_s", "target_tokens"):
        assert key in rec
    # The final weights load in transformers as a LlamaForCausalLM and agree with our model.
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(final, dtype=torch.float32)
    ids = torch.tensor([[5, 17, 42, 9, 100]])
    ours = Llama.from_pretrained(final).logits(ids)
    torch.testing.assert_close(hf(ids).logits, ours, atol=1e-4, rtol=1e-4)


def test_eight_micro_batches_of_one_equal_one_batch_of_eight(ws, sft_run):
    run_dir = ws["root"] / "sft_1x8"
    final = run(sft_overrides(ws, run_dir, schedule__micro_batch_size=1, schedule__grad_accum=8))
    assert losses(run_dir) == pytest.approx(losses(sft_run[0]), abs=1e-5)
    assert_same_weights(final, sft_run[1])


def test_crash_and_resume_equals_an_uninterrupted_run(ws, sft_run, monkeypatch):
    run_dir = ws["root"] / "sft_crash"
    overrides = sft_overrides(ws, run_dir, schedule__micro_batch_size=8, checkpoint__save_every=4)
    original = Trainer._sft_step
    calls = {"n": 0}

    def crashing(self, lm, micro):
        calls["n"] += 1
        if calls["n"] == 6:  # in step 6: step 4 is checkpointed, step 5 is done but not saved
            raise RuntimeError("simulated crash")
        return original(self, lm, micro)

    monkeypatch.setattr(Trainer, "_sft_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(overrides)
    assert latest_checkpoint(run_dir).name == "step-000004"
    monkeypatch.setattr(Trainer, "_sft_step", original)
    final = run(overrides)
    assert losses(run_dir) == pytest.approx(losses(sft_run[0]), abs=1e-6)
    assert_same_weights(final, sft_run[1], atol=1e-6)
    # Step 5 was logged before the crash and again after the resume: metrics.jsonl holds it once.
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_skip_mode_skips_undecodable_lines_and_names_them(ws, tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_bytes(ws["sft"].read_bytes() + b'{"prompt": "\xff", "response": "x"}\n')
    log = io.StringIO()
    cfg = load_job_config(TrainConfig, None, sft_overrides(ws, tmp_path / "run", data__train=str(data),
                                                           data__on_bad_row="skip", schedule__max_steps=1))  # fmt: skip
    train(cfg, log_stream=log)
    assert f"skipped: {data}:49: not valid UTF-8 (byte 0xff at column 13)" in log.getvalue()
    assert "bad rows skipped 1" in log.getvalue()


def test_overwrite_starts_a_finished_run_over(ws, sft_run, tmp_path):
    run_dir = tmp_path / "run"
    run(sft_overrides(ws, run_dir, schedule__max_steps=2, checkpoint__save_every=1))
    with pytest.raises(ConfigError, match="differs in optim.lr"):
        run(sft_overrides(ws, run_dir, schedule__max_steps=2, optim__lr=1e-3))
    run(sft_overrides(ws, run_dir, schedule__max_steps=3, optim__lr=1e-3, checkpoint__overwrite=True))
    assert sorted(read_metrics(run_dir)) == [1, 2, 3] and read_metrics(run_dir)[1]["lr"] < 1e-3
    assert [p.name for p in (run_dir / "checkpoints").glob("step-*")] == ["step-000003"]
    assert "lr = 0.001" in (run_dir / "config.toml").read_text()


def test_stale_reference_logprobs_are_recomputed_before_training(ws, sft_run, tmp_path, monkeypatch):
    """A DPO run killed after computing its reference log-probs (before any checkpoint), restarted after its pairs
    file changed: the old values belong to other pairs, so they are computed again, not trained on."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(ws["pairs"].read_text())
    run_dir = tmp_path / "dpo"
    overrides = dpo_overrides(ws, sft_run[1], run_dir, data__train=str(pairs), schedule__max_steps=2)

    def crash(self, lm, micro, plan):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(Trainer, "_dpo_step", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(overrides)
    monkeypatch.undo()
    ref = run_dir / "pairs.ref.jsonl"
    assert ref.is_file() and latest_checkpoint(run_dir) is None
    lines = pairs.read_text().splitlines()
    pairs.write_text("\n".join(lines[::-1]) + "\n")
    log = io.StringIO()
    train(load_job_config(TrainConfig, None, overrides), log_stream=log)
    assert "computed from other pairs" in log.getvalue() and "computing them again" in log.getvalue()
    rows = [json.loads(x) for x in ref.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [json.loads(x)["prompt"] for x in lines[::-1]]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(ws, monkeypatch):
    run_dir = ws["root"] / "sft_nan"
    original = Trainer._sft_step
    calls = {"n": 0}

    def poisoned(self, lm, micro):
        calls["n"] += 1
        out = original(self, lm, micro)
        return {**out, "loss": float("nan")} if calls["n"] == 3 else out

    monkeypatch.setattr(Trainer, "_sft_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at step 3 .*step-000002, left intact"):
        run(sft_overrides(ws, run_dir, checkpoint__save_every=2))
    good = latest_checkpoint(run_dir)
    assert good.name == "step-000002" and (good / "model" / "model.safetensors").is_file()
    assert not (run_dir / "final").exists()
    assert max(read_metrics(run_dir)) == 2


def test_lm_head_low_memory_is_refused_off_cuda(ws):
    """The option picks the Triton backward's strategy; on CPU it must fail clearly, before any step."""
    run_dir = ws["root"] / "sft_low_memory_cpu"
    with pytest.raises(ValueError, match="lm_head_low_memory"):
        run(sft_overrides(ws, run_dir, model__lm_head_low_memory=True))
    assert latest_checkpoint(run_dir) is None


@pytest.mark.cuda
def test_lm_head_low_memory_trains_like_the_default_on_cuda(ws, tmp_path, monkeypatch):
    """On a GPU (bf16 compute, where the option acts) the two-pass backward trains like the one-pass one."""
    import srlm_kernels.cross_entropy_triton as tri

    row_passes = []
    row_pass = tri._row_pass
    monkeypatch.setattr(tri, "_row_pass", lambda *a: row_passes.append(1) or row_pass(*a))
    runs = {}
    for low in (False, True):
        run_dir = tmp_path / f"low_{low}"
        run(
            sft_overrides(
                ws, run_dir, device="cuda", model__lm_head_low_memory=low, model__param_dtype="bfloat16"
            )
        )
        runs[low] = losses(run_dir)
        assert bool(row_passes) == low  # the row pass ran in the low-memory run only
    # Same math; only the order of fp32 atomic additions differs, then bf16 training amplifies it a little.
    assert runs[True] == pytest.approx(runs[False], rel=2e-2)


def test_dpo_raises_reward_accuracy_with_precomputed_reference(ws, sft_run, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = ws["root"] / "dpo"
    overrides = dpo_overrides(
        ws,
        sft_run[1],
        run_dir,
        logging__wandb=True,
        logging__wandb_mode="offline",
        logging__wandb_run_name="t",
    )
    run(overrides)
    m = read_metrics(run_dir)
    assert m[1]["reward_accuracy"] <= 0.5  # the policy starts as the reference: all rewards are 0
    assert min(m[s]["reward_accuracy"] for s in (6, 7, 8)) >= 0.9
    assert m[8]["margin"] > m[2]["margin"] > 0 and m[8]["loss"] < math.log(2)
    assert list(tmp_path.glob("wandb/offline-run-*")), "wandb offline run was not written"
    # The reference log-probs were written beside the run; the standalone function agrees with them.
    written = [json.loads(line) for line in (run_dir / "pairs.ref.jsonl").read_text().splitlines()]
    assert len(written) == 24 and all(r["ref_chosen_logp"] < 0 for r in written)
    out = compute_reference_logprobs(
        sft_run[1], ws["pairs"], tmp_path / "ref.jsonl", max_seq_len=96, device="cpu"
    )
    again = [json.loads(line) for line in out.read_text().splitlines()]
    for a, b in zip(written, again):
        assert a["ref_chosen_logp"] == pytest.approx(b["ref_chosen_logp"], abs=1e-4)
        assert a["ref_rejected_tokens"] == b["ref_rejected_tokens"]
    # Training from the precomputed file needs no reference computation at all.
    run_dir2 = ws["root"] / "dpo_pre"
    run(dpo_overrides(ws, sft_run[1], run_dir2, data__train=str(out), dpo__missing_reference="error"))
    assert not (run_dir2 / "pairs.ref.jsonl").exists()
    assert losses(run_dir2) == pytest.approx(losses(run_dir), abs=1e-4)


def test_reward_metrics_leave_out_replay_rows(ws, sft_run, tmp_path):
    # Replay rows (chosen = rejected: an NLL-only example) have margin 0 by construction. Mixed 1:1 with the
    # pairs, counting them would halve the logged reward accuracy; it must be the pairs' alone.
    pairs = [json.loads(line) for line in ws["pairs"].read_text().splitlines()]
    replay = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["chosen"]} for p in pairs]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in itertools.chain(*zip(pairs, replay))))
    run_dir = ws["root"] / "dpo_replay"
    run(dpo_overrides(ws, sft_run[1], run_dir, data__train=str(mixed), dpo__nll_weight=0.1))
    m = read_metrics(run_dir)
    late = [m[s] for s in (6, 7, 8)]
    assert all(1 <= x["preference_pairs"] < 4 for x in late)  # mixed steps (4 rows each): dilution would show
    assert min(x["reward_accuracy"] for x in late) >= 0.9 and all(x["margin"] > 0 for x in late)


def test_cli_sft_with_config_file_and_bad_data(ws, tmp_path, capsys):
    cfg = tmp_path / "sft.toml"
    cfg.write_text(
        f'[model]\ninit = "{ws["init"]}"\n[data]\ntrain = "{ws["sft"]}"\nmax_seq_len = 96\n'
        f'[schedule]\nmax_steps = 2\n[checkpoint]\nrun_dir = "{tmp_path / "run"}"\n'
    )
    assert cli.main(["sft", "--config", str(cfg), "--optim.lr=1e-3", "--device=cpu"]) == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert "lr = 0.001" in (tmp_path / "run" / "config.toml").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(ws["sft"].read_text() + '{"prompt": "x"}\n')
    code = cli.main(["sft", "--config", str(cfg), f"--data.train={json.dumps(str(bad))}", "--device=cpu"])
    assert code == 1  # the finished run in run_dir was trained on other data: a resume is refused
    assert "started with a different config (differs in data.train, optim.lr)" in capsys.readouterr().err
    other = json.dumps(str(tmp_path / "run2"))
    code = cli.main(["sft", "--config", str(cfg), f"--data.train={json.dumps(str(bad))}", "--device=cpu",
                     f"--checkpoint.run_dir={other}"])  # fmt: skip
    assert code == 1
    assert f"{bad}:49: field 'response'" in capsys.readouterr().err
    assert cli.main(["sft", "--config", str(cfg), "--optim.nope=1"]) == 1
    assert "unknown key(s) nope" in capsys.readouterr().err


def test_config_validation_and_example_configs():
    from importlib import resources

    with pytest.raises(ConfigError, match="data.train"):
        TrainConfig().validate()
    with pytest.raises(ConfigError, match="model.init"):
        load_job_config(TrainConfig, None, ["--task=dpo", "--data.train=x"]).validate()
    configs = sorted(
        p for p in resources.files("srlm_fast").joinpath("configs").iterdir() if p.name.endswith(".toml")
    )
    names = {p.name for p in configs}
    assert {"sft-debug-cpu.toml", "dpo-debug-cpu.toml", "sft-1b-gpu.toml", "dpo-1b-gpu.toml"} <= names
    for path in configs:
        if path.name.startswith(("sft-", "dpo-")):
            cfg = load_job_config(TrainConfig, path)
            assert cfg.task == path.name.split("-")[0]
