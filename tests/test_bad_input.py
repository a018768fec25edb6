"""Bad input to every subcommand: a non-zero exit, one line naming the file, line, key or path, no traceback, and
nothing already on disk changed.

Each case is run in-process through `srlm_fast.cli.main` (fast: no interpreter start, and most cases never load a
model). The whole workspace and the case's own scratch directory are snapshotted byte for byte before and after.
Cases are grouped by the class of failure they guard against (the `kind` in each id):

  output     data loss: an output that is an input, contains one, is of another kind, exists, or cannot be written
  untrusted  files a resume must not trust (old pickled formats, planted pointers, bad state files)
  types      config values of the wrong type, in TOML files, overrides and config.json
  counts     counts, sizes, rates and intervals out of range (config keys and CLI flags), unknown names
  resume     a resumed run with a different config or with no record of its config
  provenance reused artifacts that do not belong to the current inputs
  decode     bytes that are not UTF-8 (or a broken gzip stream) in every reader
  inputs     missing inputs, inputs of the wrong kind, empty inputs
  lock       a run directory another process is writing
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from srlm_fast.cli import _command_names, main
from srlm_fast.config import load_job_config
from srlm_fast.io import RunLock
from srlm_fast.model.checkpoint import save_pretrained
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.reference import compute_reference_logprobs
from srlm_fast.train.trainer import train
from tests._train_fixtures import TEST_MODEL, dpo_overrides, make_workspace, one_thread, sft_overrides

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)

BAD = b"\xff\xfe"  # never valid UTF-8


# ---- helpers --------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a directory, the target for a link)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = b"-> " + str(p.readlink()).encode()
        elif p.is_dir():
            out[rel] = None
        else:
            out[rel] = p.read_bytes()
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    return code, capsys.readouterr().err


def q(path) -> str:
    """A path as a TOML string literal for a --key=value override."""
    return json.dumps(str(path))


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# ---- the workspace (built once; every case checks it is left as it was) ---------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    w = make_workspace(root / "ws", n_sft=24, n_pairs=12)
    tok = Tokenizer.from_dir(w["init"])
    w["init2"] = save_pretrained(build_model(TEST_MODEL, seed=1), root / "ws" / "init2", tokenizer=tok)
    # A finished SFT run (2 steps, one checkpoint per step).
    w["sft_run"] = root / "ws" / "sft_run"
    train(load_job_config(TrainConfig, None, sft_overrides(w, w["sft_run"], schedule__max_steps=2,
                                                           checkpoint__save_every=1)))  # fmt: skip
    # Reference log-probs of the pairs by `init`, with their provenance record.
    w["ref"] = compute_reference_logprobs(w["init"], w["pairs"], root / "ws" / "ref.jsonl", max_seq_len=96,
                                          device="cpu")  # fmt: skip
    w["prompts"] = write(root / "ws" / "prompts.jsonl", '{"prompt": "add 2 and 3"}\n{"prompt": "say hi"}\n')
    w["ranked"] = write(
        root / "ws" / "ranked.jsonl",
        "".join(json.dumps({"question": "q?", "answer": a, "rank": r}) + "\n" for r, a in enumerate("abc")),
    )
    w["notes"] = write(root / "ws" / "notes" / "todo.txt", "my notes")
    w["bad_utf8"] = write(
        root / "ws" / "bad.jsonl", b'{"prompt": "ok", "response": "fine"}\n{"prompt": "' + BAD + b'"}\n'
    )
    return w


def sft(ws, run_dir, *extra: str) -> list[str]:
    return ["sft", *sft_overrides(ws, run_dir), *extra]


def dpo(ws, run_dir, *extra: str) -> list[str]:
    return ["dpo", *dpo_overrides(ws, ws["init"], run_dir), *extra]


def gen(ws, *extra: str) -> list[str]:
    return ["generate", "--checkpoint", str(ws["init"]), "--device", "cpu", "--max-new-tokens", "4", *extra]


def loop(tmp: Path, *extra: str) -> list[str]:
    return ["run", f"--runs_dir={q(tmp)}", "--name=r", *extra]


def dpo_reference(ws, *extra: str) -> list[str]:
    return ["dpo-reference", "--model", str(ws["init"]), "--pairs", str(ws["pairs"]), *extra]


def eft_build(ws, ranked: Path, out: Path | str, *extra: str) -> list[str]:
    argv = ["eft", "build", "--checkpoint", str(ws["init"]), "--ranked", str(ranked)]
    return [*argv, "--out", str(out), *extra]


def tokenizer_train(text: Path, out: Path, *extra: str) -> list[str]:
    return ["tokenizer", "train", str(text), "--out", str(out), *extra]


def eval_judge(ws, rankings: Path, *extra: str) -> list[str]:
    return ["eval", "judge", "--checkpoint", str(ws["init"]), "--rankings", str(rankings), *extra]


def eval_versus(ws, *extra: str) -> list[str]:
    argv = ["eval", "versus", "--a", str(ws["init"]), "--b", str(ws["init2"])]
    return [*argv, "--prompts", str(ws["prompts"]), *extra]


def copy_of_sft_run(ws, run: Path) -> Path:
    """A copy of the finished SFT run at `run`, for a case to edit and resume."""
    shutil.copytree(ws["sft_run"], run)
    return run


def resume_sft(ws, run: Path, *extra: str) -> list[str]:
    """The SFT command that resumes `run` with the config it was started with (2 steps, a checkpoint each)."""
    return sft(ws, run, "--schedule.max_steps=2", "--checkpoint.save_every=1", *extra)


def old_format_run(ws, tmp: Path) -> Path:
    """A copy of the finished SFT run whose checkpoints are in the pre-safetensors (pickled) format."""
    run = copy_of_sft_run(ws, tmp / "old_run")
    for ck in (run / "checkpoints").glob("step-*"):
        shutil.rmtree(ck / "state")
        write(ck / "state" / ".metadata", b"\x80\x04K\x01.")
        write(ck / "rng-rank0.pt", b"PK\x03\x04")
    return run


def dpo_run_on_own_pairs(ws, tmp: Path) -> tuple[Path, Path]:
    """A finished 2-step DPO run that computed its own reference log-probs from a pairs file in `tmp`."""
    pairs = tmp / "pairs.jsonl"
    shutil.copy(ws["pairs"], pairs)
    run = tmp / "dpo_run"
    train(load_job_config(TrainConfig, None, dpo_overrides(ws, ws["init"], run, data__train=str(pairs),
                                                           schedule__max_steps=2)))  # fmt: skip
    return run, pairs


# ---- the cases --------------------------------------------------------------------------------------------


Build = Callable[[dict, Path], tuple[list[str], str]]  # (ws, scratch dir) -> (argv, expected in the message)


@dataclass
class Case:
    kind: str
    name: str
    build: Build
    stdin: bytes | None = None

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.name}"


def _case(kind: str, name: str, stdin: bytes | None = None):
    def deco(fn):
        CASES.append(Case(kind, name, fn, stdin))
        return fn

    return deco


CASES: list[Case] = []


# The builds of the cases in the tables below: functions, so that each case keeps its own flags (a lambda in
# the loop body would see the loop's last row).


def sft_case(*flags: str, expect: str) -> Build:
    return lambda ws, tmp: (sft(ws, tmp / "run", *flags), expect)


def dpo_case(*flags: str, expect: str) -> Build:
    return lambda ws, tmp: (dpo(ws, tmp / "run", *flags), expect)


def gen_case(*flags: str, expect: str) -> Build:
    return lambda ws, tmp: (gen(ws, "--prompt", "hi", *flags), expect)


def loop_case(*flags: str, expect: str) -> Build:
    return lambda ws, tmp: (loop(tmp, *flags), expect)


def run_case(flag: str, *, expect: str) -> Build:
    return lambda ws, tmp: (["run", flag, f"--runs_dir={q(tmp)}"], expect)


# -- output: nothing the command did not create is replaced ------------------------------------------------


@_case("output", "sft-run_dir-is-not-a-run")
def _(ws, tmp):
    return sft(ws, ws["notes"].parent), "is not a training run directory"


@_case("output", "sft-run_dir-is-a-file")
def _(ws, tmp):
    return sft(ws, ws["notes"]), "is a file, not a directory"


@_case("output", "sft-run_dir-under-a-file")
def _(ws, tmp):
    return sft(ws, ws["notes"] / "run"), "is a file, not a directory"


@_case("output", "sft-run_dir-unwritable")
def _(ws, tmp):
    return sft(ws, Path("/proc/srlm-no-such/run")), "cannot write in /proc"


@_case("output", "sft-final_dir-is-not-a-checkpoint")
def _(ws, tmp):
    return sft(ws, tmp / "run", f"--checkpoint.final_dir={q(ws['notes'].parent)}"), "is not a checkpoint"


@_case("output", "sft-final_dir-is-a-file")
def _(ws, tmp):
    return sft(ws, tmp / "run", f"--checkpoint.final_dir={q(ws['notes'])}"), "is not a directory"


@_case("output", "sft-final_dir-is-the-init-checkpoint")
def _(ws, tmp):
    return sft(
        ws, tmp / "run", f"--checkpoint.final_dir={q(ws['init'])}", "--overwrite"
    ), "the output is an input"


@_case("output", "sft-final_dir-is-the-parent-of-init")
def _(ws, tmp):
    final = q(ws["init"].parent)
    return sft(
        ws, tmp / "run", f"--checkpoint.final_dir={final}", "--overwrite"
    ), "the output contains an input"


@_case("output", "sft-final_dir-exists-without-overwrite")
def _(ws, tmp):
    return sft(ws, tmp / "run", f"--checkpoint.final_dir={q(ws['init2'])}"), "pass --overwrite"


@_case("output", "sft-data-is-its-own-metrics")
def _(ws, tmp):
    run = copy_of_sft_run(ws, tmp / "run2")
    return sft(ws, run, f"--data.train={q(run / 'metrics.jsonl')}"), "which is an input of this run"


@_case("output", "dpo-reference-out-is-the-pairs")
def _(ws, tmp):
    return dpo_reference(ws, "--out", str(ws["pairs"]), "--overwrite"), "is an input of this command"


@_case("output", "dpo-reference-out-exists")
def _(ws, tmp):
    return dpo_reference(ws, "--out", str(ws["ref"])), "pass --overwrite"


@_case("output", "dpo-reference-out-is-not-jsonl")
def _(ws, tmp):
    weights = ws["init"] / "model.safetensors"
    return dpo_reference(ws, "--out", str(weights), "--overwrite"), "is not a JSONL file"


@_case("output", "dpo-reference-out-under-a-file")
def _(ws, tmp):
    return dpo_reference(ws, "--out", str(ws["notes"] / "x.jsonl")), "is a file, not a directory"


@_case("output", "generate-out-is-the-prompts")
def _(ws, tmp):
    return gen(ws, "--prompts", str(ws["prompts"]), "--out", str(ws["prompts"]), "--overwrite"), "is an input"


@_case("output", "generate-out-exists")
def _(ws, tmp):
    return gen(ws, "--prompt", "hi", "--out", str(ws["ref"])), "pass --overwrite"


@_case("output", "generate-out-is-a-directory")
def _(ws, tmp):
    return gen(ws, "--prompt", "hi", "--out", str(ws["notes"].parent)), "is a directory"


@_case("output", "generate-out-replaces-a-non-jsonl-file")
def _(ws, tmp):
    return gen(ws, "--prompt", "hi", "--out", str(ws["notes"]), "--overwrite"), "is not a JSONL file"


@_case("output", "eft-out-is-the-ranked-file")
def _(ws, tmp):
    return eft_build(ws, ws["ranked"], ws["ranked"], "--overwrite"), "is an input"


@_case("output", "tokenizer-out-is-a-checkpoint")
def _(ws, tmp):
    argv = tokenizer_train(ws["sft"], ws["init"], "--vocab-size", "300", "--overwrite")
    return argv, "is not a tokenizer directory"


@_case("output", "tokenizer-out-exists")
def _(ws, tmp):
    tok_dir = tmp / "tok"
    Tokenizer.from_dir(ws["init"]).save(tok_dir)
    return tokenizer_train(ws["sft"], tok_dir, "--vocab-size", "300"), "pass --overwrite"


@_case("output", "tokenizer-out-is-a-file")
def _(ws, tmp):
    return tokenizer_train(ws["sft"], ws["notes"]), "is not a directory"


@_case("output", "checkpoint-init-out-is-not-a-checkpoint")
def _(ws, tmp):
    return ["checkpoint", "init", "--preset", "tiny", "--out", str(ws["notes"].parent)], "is not a checkpoint"


@_case("output", "checkpoint-init-out-is-a-file")
def _(ws, tmp):
    return ["checkpoint", "init", "--preset", "tiny", "--out", str(ws["notes"])], "is not a directory"


@_case("output", "checkpoint-convert-out-is-the-parent-of-the-source")
def _(ws, tmp):
    src = tmp / "models" / "src"
    shutil.copytree(ws["init"], src)
    return ["checkpoint", "convert", str(src), "--out", str(src.parent)], "contains an input"


@_case("output", "checkpoint-init-out-exists")
def _(ws, tmp):
    return ["checkpoint", "init", "--preset", "tiny", "--out", str(ws["init2"])], "pass --overwrite"


@_case("output", "checkpoint-convert-out-exists")
def _(ws, tmp):
    return ["checkpoint", "convert", str(ws["init"]), "--out", str(ws["init2"])], "pass --overwrite"


@_case("output", "checkpoint-convert-out-is-the-source")
def _(ws, tmp):
    argv = ["checkpoint", "convert", str(ws["init"]), "--out", str(ws["init"]), "--overwrite"]
    return argv, "the output is an input"


@_case("counts", "checkpoint-convert-max-shard-gb")
def _(ws, tmp):
    argv = ["checkpoint", "convert", str(ws["init"]), "--out", str(tmp / "c"), "--max-shard-gb", "0"]
    return argv, "argument --max-shard-gb: must be more than 0"


# -- untrusted: what a resume reads -----------------------------------------------------------------------


@_case("untrusted", "sft-resume-old-pickled-format")
def _(ws, tmp):
    return resume_sft(ws, old_format_run(ws, tmp)), "older format"


@_case("untrusted", "sft-resume-planted-latest-pointer")
def _(ws, tmp):
    run = copy_of_sft_run(ws, tmp / "run")
    write(run / "checkpoints" / "latest", "../../../etc\n")
    return resume_sft(ws, run), "not a checkpoint of this run"


@_case("untrusted", "sft-resume-bad-train-state")
def _(ws, tmp):
    run = copy_of_sft_run(ws, tmp / "run")
    write(run / "checkpoints" / "step-000002" / "train_state.json", '{"step": "2"}')
    return resume_sft(ws, run), "train_state.json: field 'step'"


@_case("untrusted", "sft-resume-state-file-is-a-pickle")
def _(ws, tmp):
    run = copy_of_sft_run(ws, tmp / "run")
    write(
        run / "checkpoints" / "step-000002" / "state" / "rank-00000-of-00001.safetensors", b"\x80\x04K\x01."
    )
    return resume_sft(ws, run), "corrupt or unreadable safetensors"


@_case("untrusted", "sft-resume-index-names-other-tensors")
def _(ws, tmp):
    run = copy_of_sft_run(ws, tmp / "run")
    index = run / "checkpoints" / "step-000002" / "state" / "index.json"
    data = json.loads(index.read_text())
    data["entries"]["model/evil"] = data["entries"].pop(next(iter(data["entries"])))
    index.write_text(json.dumps(data))
    return resume_sft(ws, run), "does not match this model"


# -- types ------------------------------------------------------------------------------------------------


for _name, _flag, _expect in [
    ("sft-bool-as-float", "--optim.lr=true", "optim.lr: expected a number, got True (a boolean)"),
    ("sft-string-as-int", '--schedule.max_steps="8"', "schedule.max_steps: expected an integer, got '8'"),
    ("sft-float-as-int", "--schedule.max_steps=2.5", "schedule.max_steps: expected an integer, got 2.5"),
    ("sft-bool-as-int", "--schedule.grad_accum=true", "schedule.grad_accum: expected an integer, got True"),
    ("sft-int-as-bool", "--data.pack=1", "data.pack: expected a boolean"),
    ("sft-literal", "--data.overlong=cut", "data.overlong: expected one of 'truncate', 'drop'"),
    ("sft-optional-str-gets-a-list", "--model.tokenizer=[1]", "model.tokenizer: expected a string, got [1]"),
    ("sft-table-gets-a-number", "--optim=3", "optim: expected a table, got 3"),
    ("sft-nan", "--optim.lr=nan", "optim.lr: expected a number, got nan"),
    ("sft-unknown-key", "--optim.lrr=1", "optim: unknown key(s) lrr"),
]:
    CASES.append(Case("types", _name, sft_case(_flag, expect=_expect)))


@_case("types", "sft-toml-file")
def _(ws, tmp):
    cfg = write(tmp / "sft.toml", f'[optim]\nlr = "fast"\n[data]\ntrain = "{ws["sft"]}"\n')
    return [
        "sft",
        "--config",
        str(cfg),
        f"--model.init={q(ws['init'])}",
    ], f"{cfg}: optim.lr: expected a number"


@_case("types", "sft-config-json-wrong-type")
def _(ws, tmp):
    init = tmp / "init"
    shutil.copytree(ws["init"], init)
    cfg = json.loads((init / "config.json").read_text())
    cfg["num_hidden_layers"] = "2"
    (init / "config.json").write_text(json.dumps(cfg))
    return sft(
        ws, tmp / "run", f"--model.init={q(init)}"
    ), "config.json: num_hidden_layers must be an integer"


@_case("types", "checkpoint-inspect-config-json-not-an-object")
def _(ws, tmp):
    init = tmp / "init"
    shutil.copytree(ws["init"], init)
    (init / "config.json").write_text("[1, 2]")
    return ["checkpoint", "inspect", str(init)], "config.json: expected a JSON object"


for _name, _flag, _expect in [
    ("run-bool-as-int", "--iterations=true", "iterations: expected an integer, got True"),
    ("run-string-count", '--candidates.n="4"', "candidates.n: expected an integer, got '4'"),
    ("run-literal", "--judge.mode=maybe", "judge.mode: expected one of 'sample', 'expected'"),
    (
        "run-list-of-str-gets-ints",
        "--seed_data.ift_files=[1, 2]",
        "seed_data.ift_files[0]: expected a string",
    ),
]:
    CASES.append(Case("types", _name, run_case(_flag, expect=_expect)))


# -- counts, sizes, intervals, names ------------------------------------------------------------------------


for _key, _value, _expect in [
    ("schedule.micro_batch_size", "0", "schedule.micro_batch_size: must be >= 1, got 0"),
    ("schedule.grad_accum", "-1", "schedule.grad_accum: must be >= 1, got -1"),
    ("logging.log_every", "0", "logging.log_every: must be >= 1, got 0"),
    ("checkpoint.save_every", "-2", "checkpoint.save_every: must be >= 0"),
    ("checkpoint.keep_last", "0", "checkpoint.keep_last: must be >= 1"),
    ("data.max_seq_len", "1", "data.max_seq_len: must be >= 2"),
    ("optim.lr", "inf", "optim: need lr > 0"),
    ("optim.beta2", "1.0", "optim.beta2: must be in [0, 1)"),
    ("optim.warmup_steps", "-3", "optim.warmup_steps: must be >= 0"),
    ("device", "gpu", "device: unknown device 'gpu'"),
    ("device", "cuda:7", "device: device 'cuda:7'"),
    ("model.attn_backend", "flash", "model.attn_backend: must be one of sdpa"),
    ("data.template", "chatgpt", "data.template: must be one of"),
]:
    CASES.append(Case("counts", f"sft-{_key}={_value}", sft_case(f"--{_key}={_value}", expect=_expect)))


CASES += [
    Case("counts", "sft-zero-epochs", sft_case("--schedule.max_steps=0", "--schedule.epochs=0",
                                               expect="schedule.epochs: must be > 0")),
    Case("counts", "dpo-beta-zero", dpo_case("--dpo.beta=0", expect="dpo.beta: must be > 0")),
    Case("counts", "dpo-label-smoothing", dpo_case("--dpo.label_smoothing=0.7",
                                                   expect="dpo.label_smoothing: must be in [0, 0.5)")),
]  # fmt: skip


for _flag, _value, _expect in [
    ("--n", "0", "argument --n: must be at least 1, got 0"),
    ("--max-new-tokens", "0", "argument --max-new-tokens: must be at least 1"),
    ("--top-p", "1.5", "argument --top-p: must be in (0, 1]"),
    ("--temperature", "-1", "argument --temperature: must be 0 or more"),
    ("--top-k", "-1", "argument --top-k: must be 0 or more"),
    ("--max-batch", "0", "argument --max-batch: must be at least 1"),
    ("--device", "tpu", "argument --device: unknown device 'tpu'"),
    ("--temperature", "nan", "argument --temperature: expected a finite number"),
]:
    CASES.append(Case("counts", f"generate{_flag}={_value}", gen_case(_flag, _value, expect=_expect)))


@_case("counts", "dpo-reference-batch-size")
def _(ws, tmp):
    return dpo_reference(ws, "--batch-size", "0"), "argument --batch-size: must be at least 1"


@_case("counts", "dpo-reference-max-seq-len")
def _(ws, tmp):
    argv = dpo_reference(ws, "--max-seq-len", "1", "--out", str(tmp / "r.jsonl"))
    return argv, "--max-seq-len must be at least 2"


@_case("counts", "tokenizer-vocab-too-small")
def _(ws, tmp):
    return tokenizer_train(ws["sft"], tmp / "tok", "--vocab-size", "10"), "at least 263"


@_case("counts", "tokenizer-min-frequency")
def _(ws, tmp):
    argv = tokenizer_train(ws["sft"], tmp / "tok", "--min-frequency", "0")
    return argv, "argument --min-frequency: must be at least 1"


@_case("counts", "presets-seq-len")
def _(ws, tmp):
    return ["presets", "--seq-len", "0"], "argument --seq-len: must be at least 1"


@_case("counts", "eft-max-new-tokens")
def _(ws, tmp):
    argv = eft_build(ws, ws["ranked"], "x.jsonl", "--max-new-tokens", "0")
    return argv, "argument --max-new-tokens: must be at least 1"


@_case("counts", "chat-top-p")
def _(ws, tmp):
    return ["chat", "--checkpoint", str(ws["init"]), "--top-p", "0"], "argument --top-p: must be in (0, 1]"


# -- resume ------------------------------------------------------------------------------------------------


@_case("resume", "sft-different-config")
def _(ws, tmp):
    run = copy_of_sft_run(ws, tmp / "run")
    return resume_sft(ws, run, "--optim.lr=0.1"), "started with a different config (differs in optim.lr)"


@_case("resume", "sft-resume-false-over-checkpoints")
def _(ws, tmp):
    run = copy_of_sft_run(ws, tmp / "run")
    return resume_sft(ws, run, "--checkpoint.resume=false"), "checkpoint.resume is false"


@_case("resume", "sft-checkpoints-without-config")
def _(ws, tmp):
    run = copy_of_sft_run(ws, tmp / "run")
    (run / "config.toml").unlink()
    return resume_sft(ws, run), "no config.toml"


# -- provenance --------------------------------------------------------------------------------------------


@_case("provenance", "dpo-reference-of-another-model")
def _(ws, tmp):
    argv = ["dpo", *dpo_overrides(ws, ws["init2"], tmp / "run", data__train=str(ws["ref"]))]
    return argv, "computed by another model"


@_case("provenance", "dpo-reference-file-edited")
def _(ws, tmp):
    ref = tmp / "ref.jsonl"
    rows = [json.loads(x) for x in ws["ref"].read_text().splitlines()]
    rows[0]["ref_chosen_logp"] = -0.5
    write(ref, "".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(
        ws["ref"].with_name(ws["ref"].name + ".provenance.json"), ref.with_name(ref.name + ".provenance.json")
    )
    return ["dpo", *dpo_overrides(ws, ws["init"], tmp / "run", data__train=str(ref))], "changed after"


@_case("provenance", "dpo-resumed-on-other-pairs")
def _(ws, tmp):
    run, pairs = dpo_run_on_own_pairs(ws, tmp)
    lines = pairs.read_text().splitlines()
    pairs.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same path, other order: other pairs per line
    (run / "inputs.json").unlink()  # as an older version left it: the reference file's own record decides
    argv = ["dpo", *dpo_overrides(ws, ws["init"], run, data__train=str(pairs), schedule__max_steps=2)]
    return argv, "computed from other pairs"


@_case("provenance", "sft-resumed-on-changed-data")
def _(ws, tmp):
    data = tmp / "sft.jsonl"
    shutil.copy(ws["sft"], data)
    overrides = sft_overrides(
        ws, tmp / "run", data__train=str(data), schedule__max_steps=2, checkpoint__save_every=1
    )
    train(load_job_config(TrainConfig, None, overrides))
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-1]) + "\n")  # the same path, one row fewer
    return ["sft", *overrides], "started on other inputs (data.train changed since"


@_case("provenance", "dpo-missing-reference-error")
def _(ws, tmp):
    return dpo(ws, tmp / "run", "--dpo.missing_reference=error"), f"{ws['pairs']}: pairs lack ref_chosen_logp"


# -- decode ------------------------------------------------------------------------------------------------


@_case("decode", "sft-data")
def _(ws, tmp):
    return sft(ws, tmp / "run", f"--data.train={q(ws['bad_utf8'])}"), f"{ws['bad_utf8']}:2: not valid UTF-8"


@_case("decode", "dpo-pairs")
def _(ws, tmp):
    pairs = write(tmp / "pairs.jsonl", ws["pairs"].read_bytes() + b'{"prompt": "' + BAD + b'"}\n')
    return dpo(
        ws, tmp / "run", f"--data.train={q(pairs)}"
    ), f"{pairs}:13: not valid UTF-8 (byte 0xff at column 13)"


@_case("decode", "sft-toml-config")
def _(ws, tmp):
    cfg = write(tmp / "sft.toml", b"[optim]\nlr = 1e-3 # " + BAD + b"\n")
    return ["sft", "--config", str(cfg)], f"{cfg}:2: not valid UTF-8"


@_case("decode", "sft-config-json")
def _(ws, tmp):
    init = tmp / "init"
    shutil.copytree(ws["init"], init)
    (init / "config.json").write_bytes(b'{"vocab_size": 384, "x": "' + BAD + b'"}')
    return sft(ws, tmp / "run", f"--model.init={q(init)}"), "config.json:1: not valid UTF-8"


@_case("decode", "generate-prompts")
def _(ws, tmp):
    p = write(tmp / "p.jsonl", b'{"prompt": "a"}\n\n{"prompt": "' + BAD + b'"}\n')
    return gen(ws, "--prompts", str(p)), f"{p}:3: not valid UTF-8"


@_case("decode", "dpo-reference-pairs")
def _(ws, tmp):
    pairs = write(tmp / "pairs.jsonl", b'{"prompt": "' + BAD + b'", "chosen": "a", "rejected": "b"}\n')
    argv = ["dpo-reference", "--model", str(ws["init"]), "--pairs", str(pairs), "--device", "cpu"]
    return argv, f"{pairs}:1: not valid UTF-8"


@_case("decode", "tokenizer-text-input")
def _(ws, tmp):
    txt = write(tmp / "corpus.txt", b"hello\nworld " + BAD + b"\n")
    return tokenizer_train(txt, tmp / "tok", "--vocab-size", "300"), f"{txt}:2: not valid"


@_case("decode", "tokenizer-jsonl-not-json")
def _(ws, tmp):
    f = write(tmp / "corpus.jsonl", '{"a": "b"}\n{"a": \n')
    return tokenizer_train(f, tmp / "tok", "--vocab-size", "300"), f"{f}:2: not valid JSON"


@_case("decode", "eft-judge-template")
def _(ws, tmp):
    t = write(tmp / "rubric.txt", b"Rate it.\n{instruction}\n{response}\n" + BAD)
    return eft_build(ws, ws["ranked"], tmp / "o.jsonl", "--template", str(t)), f"{t}:4: not valid UTF-8"


@_case("decode", "eft-ranked-all-undecodable")
def _(ws, tmp):
    r = write(tmp / "ranked.jsonl", BAD + b"\n" + BAD + b"\n")
    return eft_build(ws, r, tmp / "o.jsonl"), f"no prompts with ranked or scored replies in {r}"


@_case("decode", "eval-data-oasst")
def _(ws, tmp):
    f = write(tmp / "oasst_trees.jsonl", b'{"prompt": {"text": "' + BAD + b'"}}\n')
    return ["eval", "data", str(f)], f"{f}:1: not valid UTF-8"


@_case("decode", "eval-data-hh-truncated-gzip")
def _(ws, tmp):
    data = gzip.compress(b'{"chosen": "a", "rejected": "b"}\n' * 50)
    f = write(tmp / "hh_pairs.jsonl.gz", data[: len(data) // 2])
    return ["eval", "data", str(f)], f"{f}: cannot read after line"


@_case("decode", "eval-data-alpaca-json")
def _(ws, tmp):
    f = write(
        tmp / "alpaca.json", b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "' + BAD + b'"}\n]'
    )
    return ["eval", "data", str(f), "--kind", "prompts"], f"{f}:3: not valid UTF-8"


@_case("decode", "eval-agreement-judgments")
def _(ws, tmp):
    f = write(tmp / "j.jsonl", b'{"chosen_score": 1, "rejected_score": 2}\n' + BAD + b"\n")
    return ["eval", "agreement", "--judgments", str(f)], f"{f}:2: not valid UTF-8"


@_case("decode", "eval-head2head-verdicts")
def _(ws, tmp):
    f = write(tmp / "v.jsonl", b'{"verdict_ab": "1", "verdict_ba": "' + BAD + b'"}\n')
    return ["eval", "head2head", "--verdicts", str(f)], f"{f}:1: not valid UTF-8"


@_case("decode", "run-toml-config")
def _(ws, tmp):
    cfg = write(tmp / "loop.toml", b'name = "x"\n\n# ' + BAD + b"\n")
    return ["run", "--config", str(cfg)], f"{cfg}:3: not valid UTF-8"


@_case("decode", "chat-piped-stdin", stdin=b"\xffhello\n")
def _(ws, tmp):
    return [
        "chat",
        "--checkpoint",
        str(ws["init"]),
        "--device",
        "cpu",
        "--max-new-tokens",
        "2",
    ], "stdin:1: not valid"


# -- inputs ------------------------------------------------------------------------------------------------


@_case("inputs", "sft-data-missing")
def _(ws, tmp):
    return sft(ws, tmp / "run", f"--data.train={q(tmp / 'nope.jsonl')}"), "data.train: "


@_case("inputs", "sft-data-is-a-directory")
def _(ws, tmp):
    return sft(
        ws, tmp / "run", f"--data.train={q(ws['notes'].parent)}"
    ), "is a directory, expected a JSONL file"


@_case("inputs", "sft-init-is-not-a-checkpoint")
def _(ws, tmp):
    return sft(ws, tmp / "run", f"--model.init={q(ws['notes'].parent)}"), "model.init: "


@_case("inputs", "dpo-without-init")
def _(ws, tmp):
    argv = ["dpo", f"--data.train={q(ws['pairs'])}", f"--checkpoint.run_dir={q(tmp / 'run')}"]
    return [*argv, "--model.preset=tiny", f"--model.tokenizer={q(ws['init'])}"], "model.init: DPO starts"


@_case("inputs", "generate-empty-prompts")
def _(ws, tmp):
    p = write(tmp / "p.jsonl", "\n\n")
    return gen(ws, "--prompts", str(p)), f"{p}: no prompts"


@_case("inputs", "generate-prompt-row-not-an-object")
def _(ws, tmp):
    p = write(tmp / "p.jsonl", '["a prompt"]\n')
    return gen(ws, "--prompts", str(p)), f"{p}:1: expected a JSON object"


@_case("inputs", "generate-checkpoint-not-a-checkpoint")
def _(ws, tmp):
    argv = ["generate", "--checkpoint", str(ws["notes"].parent), "--prompt", "hi", "--device", "cpu"]
    return argv, "--checkpoint: "


@_case("inputs", "dpo-reference-model-not-a-checkpoint")
def _(ws, tmp):
    argv = ["dpo-reference", "--model", str(tmp), "--pairs", str(ws["pairs"]), "--out", str(tmp / "r.jsonl")]
    return argv, "--model: "


@_case("inputs", "tokenizer-show-missing")
def _(ws, tmp):
    return ["tokenizer", "show", str(tmp / "nope")], "no such tokenizer file"


@_case("inputs", "tokenizer-show-unknown-template")
def _(ws, tmp):
    return ["tokenizer", "show", str(ws["init"]), "--template", "bogus"], "unknown chat template 'bogus'"


@_case("inputs", "eval-report-missing")
def _(ws, tmp):
    return ["eval", "report", str(tmp / "nope")], "no such run directory"


@_case("inputs", "run-config-missing")
def _(ws, tmp):
    return ["run", "--config", str(tmp / "nope.toml")], "no such config file"


# -- lock --------------------------------------------------------------------------------------------------


@_case("lock", "sft-run-dir-in-use")
def _(ws, tmp):
    return sft(ws, tmp / "locked"), "is in use by process"


# -- the loop and the evaluations -------------------------------------------------------------------------


@_case("lock", "run-dir-in-use")
def _(ws, tmp):
    return loop(tmp / "locked_runs"), "this run directory is in use by process"


@_case("output", "run-dir-is-not-a-run")
def _(ws, tmp):
    return ["run", f"--runs_dir={q(ws['root'])}", "--name=notes"], "is not a run directory of srlm run"


@_case("output", "run-dir-is-a-file")
def _(ws, tmp):
    return ["run", f"--runs_dir={q(ws['notes'].parent)}", "--name=todo.txt"], "is a file, not a run directory"


for _key, _value, _expect in [
    ("judge.k", "0", "judge.k: must be >= 1, got 0"),
    ("candidates.n", "1", "candidates.n: must be >= 2"),
    ("iterations", "-1", "iterations: must be >= 0"),
    ("selfinstruct.top_p", "0", "selfinstruct.top_p: must be in (0, 1]"),
    ("selfinstruct.dedup_threshold", "1.5", "selfinstruct.dedup_threshold"),
    ("selfinstruct.shape_min_count", "-1", "selfinstruct.shape_min_count: must be >= 0"),
    ("selfinstruct.source", '"corpus"', "selfinstruct.source"),
    ("selfinstruct.source", '"seed"', "seed_data.n_seed_prompts: selfinstruct.source = 'seed' draws"),
    ("pairs.min_chosen", "-1", "pairs.min_chosen: must be >= 0"),
    ("seed_data.eft_mix", "[1,0,0,0,0]", "seed_data.eft_mix: must be 6 non-negative weights"),
    ("seed_data.eft_blind", "1.5", "seed_data.eft_blind: must be in [0, 1]"),
    ("seed_data.eft_misspell", "-0.5", "seed_data.eft_misspell: must be in [0, 1]"),
    ("seed_data.families", '["capital","nope"]', "seed_data.families: unknown families ['nope']"),
    ("retrieval.k", "0", "retrieval.k: must be >= 1, got 0"),
    ("retrieval.shuffle_candidates", "true", "retrieval.shuffle_candidates: orders the candidates' evidence"),
    ("retrieval.shuffle_judge", "true", "retrieval.shuffle_judge: orders the judge's evidence"),
    ("retrieval.candidates", "true", "retrieval: candidates/judge/selfinstruct need a source"),
    ("judge.template", "grounded", "judge.template: 'grounded' reads retrieved evidence"),
    ("eval.max_new_tokens", "0", "eval.max_new_tokens: must be >= 1"),
    ("model.vocab_size", "100", "model.vocab_size: must be >= 263"),
    ("dpo.optim.lr", "1e-6", "dpo.optim: need lr > 0 and 0 <= min_lr <= lr"),  # found before SFT, not after
    ("sft.schedule.micro_batch_size", "0", "sft.schedule.micro_batch_size: must be >= 1"),
    ("dpo.dpo.beta", "0", "dpo.dpo.beta: must be > 0"),
    ("pairs.min_votes", "9", "pairs.min_votes: must be in [0, candidates.n = 4]"),
    ("name", '"../up"', "name: must be a plain directory name"),
    ("device", "cuda:3", "device: device 'cuda:3'"),
]:
    CASES.append(Case("counts", f"run-{_key}={_value}", loop_case(f"--{_key}={_value}", expect=_expect)))
CASES.append(
    Case(
        "counts",
        "run-pairs.replay-without-nll",  # the embedded default has the NLL term: replay is refused with it off
        loop_case(
            "--pairs.replay=5", "--dpo.dpo.nll_weight=0", expect="pairs.replay: replay rows train only"
        ),
    )
)


@_case("types", "experiment-seeds")
def _(ws, tmp):
    return ["experiment", "--seeds=x", f"--runs_dir={q(tmp)}"], "--seeds: a comma-separated list of integers"


@_case("inputs", "experiment-m1-from")
def _(ws, tmp):
    args = ["experiment", "--seeds=0", f"--m1-from={q(tmp / 'nowhere')}", f"--runs_dir={q(tmp)}"]
    return args, "is no run directory with an M1"


@_case("counts", "experiment-loop-value")
def _(ws, tmp):
    return ["experiment", "--seeds=0", "--judge.k=0", f"--runs_dir={q(tmp)}"], "judge.k: must be >= 1, got 0"


@_case("inputs", "run-eval-rankings-missing")
def _(ws, tmp):
    return loop(tmp, f"--eval.rankings={q(tmp / 'nope.jsonl')}"), "eval.rankings: no such file"


@_case("inputs", "run-retrieval-corpus-missing")
def _(ws, tmp):
    return loop(tmp, f'--retrieval.corpus=["{tmp / "nope.jsonl"}"]', "--retrieval.judge=true"), (
        "retrieval.corpus[0]: no such file"
    )


@_case("inputs", "run-retrieval-index-not-an-index")
def _(ws, tmp):
    return loop(tmp, f"--retrieval.index={q(ws['notes'].parent)}", "--retrieval.candidates=true"), (
        "retrieval.index: "
    )


@_case("inputs", "run-checkpoint-not-a-checkpoint")
def _(ws, tmp):
    return loop(
        tmp, f"--model.checkpoint={q(ws['notes'].parent)}"
    ), "model.checkpoint: not a checkpoint directory"


@_case("inputs", "run-judge-template-missing")
def _(ws, tmp):
    return loop(
        tmp, f"--judge.template={q(tmp / 'rubric.txt')}"
    ), "judge.template: compact, full or a template"


@_case("counts", "eval-judge-k")
def _(ws, tmp):
    return eval_judge(ws, ws["ranked"], "--k", "0"), "argument --k: must be at least 1"


@_case("counts", "eval-head2head-n-boot")
def _(ws, tmp):
    return [
        "eval",
        "head2head",
        "--verdicts",
        str(ws["prompts"]),
        "--n-boot",
        "0",
    ], "argument --n-boot: must be"


@_case("counts", "eval-versus-limit")
def _(ws, tmp):
    return eval_versus(ws, "--limit", "-1"), "argument --limit: must be 0 or more"


@_case("output", "eval-judge-out-is-the-rankings")
def _(ws, tmp):
    f = write(tmp / "oasst_trees.json", "{}")
    return eval_judge(ws, f, "--out", str(f), "--overwrite"), "is an input of this command"


@_case("output", "eval-versus-out-exists")
def _(ws, tmp):
    out = write(tmp / "versus.json", "{}")
    return eval_versus(ws, "--out", str(out)), "pass --overwrite"


@_case("output", "eval-report-exists")
def _(ws, tmp):
    write(tmp / "eval" / "m1.json", '{"task": {"accuracy": 0.5}}')
    write(tmp / "report.md", "# my notes\n")
    return ["eval", "report", str(tmp)], "report.md: a report already exists there; pass --overwrite"


@_case("inputs", "eval-versus-a-not-a-checkpoint")
def _(ws, tmp):
    argv = ["eval", "versus", "--a", str(tmp), "--b", str(ws["init2"]), "--prompts", str(ws["prompts"])]
    return argv, "--a: "


@_case("inputs", "eval-judge-no-ranked-prompts")
def _(ws, tmp):
    f = write(tmp / "trees.jsonl", '{"prompt": {"text": "q", "replies": []}}\n')
    return eval_judge(ws, f), f"{f}: no ranked prompts"


@_case("inputs", "eval-agreement-empty")
def _(ws, tmp):
    f = write(tmp / "j.jsonl", "\n")
    return ["eval", "agreement", "--judgments", str(f)], f"{f}: no judgments"


@_case("inputs", "eval-report-nothing-to-report")
def _(ws, tmp):
    return ["eval", "report", str(tmp)], "no evaluations to report"


@_case("decode", "run-judge-template")
def _(ws, tmp):
    t = write(tmp / "rubric.txt", b"Rate.\n{instruction}\n{response}\n" + BAD)
    return loop(tmp, f"--judge.template={q(t)}"), f"judge.template: {t}:4: not valid UTF-8"


@_case("decode", "eval-report-eval-file")
def _(ws, tmp):
    f = write(tmp / "eval" / "m1.json", b'{"task":\n "' + BAD + b'"}')
    return ["eval", "report", str(tmp)], f"{f}:2: not valid UTF-8"


@_case("decode", "eval-judge-template")
def _(ws, tmp):
    t = write(tmp / "rubric.txt", BAD)
    return eval_judge(ws, ws["ranked"], "--template", str(t)), f"{t}:1: not valid UTF-8"


# -- retrieval: srlm index build/search, srlm eval qa -----------------------------------------------------------

XQ = json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "Cats purr.", "qas": [
    {"id": "q", "question": "Who purrs?", "answers": [{"text": "Cats", "answer_start": 0}]}]}]}]})  # fmt: skip


def built_index(tmp: Path) -> Path:
    corpus = write(
        tmp / "corpus.jsonl", '{"id": "a", "text": "cats purr"}\n{"id": "b", "text": "dogs bark"}\n'
    )
    assert main(["index", "build", str(corpus), "--out", str(tmp / "idx")]) == 0
    return tmp / "idx"


@_case("inputs", "index-build-missing-corpus")
def _(ws, tmp):
    return ["index", "build", str(tmp / "nope.txt"), "--out", str(tmp / "idx")], "nope.txt: no such file"


@_case("inputs", "index-build-dense-without-embedder")
def _(ws, tmp):
    c = write(tmp / "c.txt", "cats purr\n")
    return ["index", "build", str(c), "--out", str(tmp / "idx"), "--kind", "dense"], "needs --embedder"


@_case("inputs", "index-build-malformed-jsonl")
def _(ws, tmp):
    c = write(tmp / "c.jsonl", '{"text": "ok"}\n{"text": 3}\n')
    return ["index", "build", str(c), "--out", str(tmp / "idx")], f'{c}:2: needs "text"'


@_case("inputs", "index-build-empty-corpus")
def _(ws, tmp):
    c = write(tmp / "c.txt", "\n  \n")
    return ["index", "build", str(c), "--out", str(tmp / "idx")], "no passages in the corpus"


@_case("inputs", "index-search-not-an-index")
def _(ws, tmp):
    return ["index", "search", str(ws["notes"].parent), "--query", "x"], "not an index directory"


@_case("inputs", "index-search-queries-malformed")
def _(ws, tmp):
    f = write(tmp / "q.jsonl", '{"query": "ok"}\n{"q": "x"}\n')
    return ["index", "search", str(built_index(tmp)), "--queries", str(f)], f'{f}:2: needs "query"'


@_case("decode", "index-build-corpus")
def _(ws, tmp):
    c = write(tmp / "c.txt", b"cats purr\n" + BAD + b"\n")
    return ["index", "build", str(c), "--out", str(tmp / "idx")], f"{c}:2: not valid UTF-8"


@_case("decode", "index-search-queries")
def _(ws, tmp):
    f = write(tmp / "q.jsonl", b'{"query": "' + BAD + b'"}\n')
    return ["index", "search", str(built_index(tmp)), "--queries", str(f)], f"{f}:1: not valid UTF-8"


@_case("counts", "index-search-k")
def _(ws, tmp):
    return ["index", "search", str(tmp), "--query", "x", "--k", "0"], "--k: must be at least 1"


@_case("counts", "index-build-b")
def _(ws, tmp):
    c = write(tmp / "c.txt", "cats purr\n")
    return ["index", "build", str(c), "--out", str(tmp / "idx"), "--b", "1.5"], "--b: must be in [0, 1]"


@_case("output", "index-build-out-is-not-an-index")
def _(ws, tmp):
    c = write(tmp / "c.txt", "cats purr\n")
    return ["index", "build", str(c), "--out", str(ws["notes"].parent)], "is not a retrieval index"


@_case("output", "index-build-out-holds-the-corpus")
def _(ws, tmp):
    c = write(tmp / "idx" / "c.txt", "cats purr\n")
    return ["index", "build", str(c), "--out", str(tmp / "idx")], "contains an input"


@_case("output", "index-build-other-corpus-needs-overwrite")
def _(ws, tmp):
    idx = built_index(tmp)
    c = write(tmp / "other.txt", "birds sing\n")
    return ["index", "build", str(c), "--out", str(idx)], "pass --overwrite to replace it"


@_case("output", "index-search-out-exists")
def _(ws, tmp):
    out = write(tmp / "hits.jsonl", '{"query": "old"}\n')
    return ["index", "search", str(built_index(tmp)), "--query", "x", "--out", str(out)], "--overwrite"


@_case("provenance", "index-search-edited-corpus")
def _(ws, tmp):
    idx = built_index(tmp)
    stored = idx / "passages.jsonl"
    stored.write_text(stored.read_text().replace("dogs", "wolves"))
    return ["index", "search", str(idx), "--query", "x"], "does not match the corpus the index was built from"


@_case("inputs", "eval-qa-missing-data")
def _(ws, tmp):
    return ["eval", "qa", "--data", str(tmp / "nope.json")], "nope.json: no such file"


@_case("inputs", "eval-qa-squad-malformed")
def _(ws, tmp):
    f = write(tmp / "x.json", XQ.replace('"question": "Who purrs?"', '"question": 5'))
    return ["eval", "qa", "--data", str(f)], "data[0].paragraphs[0].qas[0]"


@_case("inputs", "eval-qa-nq-rag-without-passages")
def _(ws, tmp):
    f = write(tmp / "nq.jsonl", '{"question": "who?", "answer": ["me"]}\n')
    argv = ["eval", "qa", "--data", str(f), "--checkpoint", str(ws["init"]), "--conditions", "closed,rag"]
    return argv, "the rag condition needs --index or --corpus"


@_case("inputs", "eval-qa-nq-malformed")
def _(ws, tmp):
    f = write(tmp / "nq.jsonl", '{"question": "who?", "answer": []}\n')
    return ["eval", "qa", "--data", str(f)], f'{f}:1: needs "answer"'


@_case("inputs", "eval-qa-not-a-checkpoint")
def _(ws, tmp):
    f = write(tmp / "x.json", XQ)
    return ["eval", "qa", "--data", str(f), "--checkpoint", str(tmp)], "--checkpoint: "


@_case("counts", "eval-qa-k")
def _(ws, tmp):
    return ["eval", "qa", "--data", "x.json", "--k", "0"], "--k: must be at least 1"


@_case("counts", "eval-qa-conditions")
def _(ws, tmp):
    f = write(tmp / "x.json", XQ)
    return ["eval", "qa", "--data", str(f), "--conditions", "closed,open"], "--conditions: expected some of"


@_case("decode", "eval-qa-data")
def _(ws, tmp):
    f = write(tmp / "x.json", XQ.encode()[:-2] + BAD)
    return ["eval", "qa", "--data", str(f)], f"{f}:1: not valid UTF-8"


@_case("output", "eval-qa-out-is-the-data")
def _(ws, tmp):
    f = write(tmp / "x.json", XQ)
    return ["eval", "qa", "--data", str(f), "--out", str(f), "--overwrite"], "is an input of this command"


# ---- the test ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_refused_cleanly_and_changes_nothing(case, ws, tmp_path, capsys, monkeypatch):
    scratch = tmp_path / "case"
    scratch.mkdir()
    argv, expect = case.build(ws, scratch)
    locked = scratch / ("locked_runs/r" if case.name.startswith("run-") else "locked")
    lock = RunLock(locked).acquire() if case.kind == "lock" else None
    if case.stdin is not None:
        fake = io.TextIOWrapper(io.BytesIO(case.stdin), encoding="utf-8")
        monkeypatch.setattr("sys.stdin", fake)
    before = snapshot(ws["root"]), snapshot(scratch)
    try:
        code, err = run_cli(argv, capsys)
    finally:
        if lock is not None:
            lock.release()
    if lock is not None:  # the lock file was ours: the refused command left the rest as it found it
        before = (
            before[0],
            {k: v for k, v in before[1].items() if k != str((locked / ".lock").relative_to(scratch))},
        )
    assert code not in (0, None), f"exit {code}; stderr: {err}"
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines, "no message"
    message = lines[-1]
    # One line: ours ("srlm CMD: error: ..."), or argparse's usage line + its one error line.
    assert len(lines) == 1 or (lines[0].startswith("usage:") and ": error: " in message), err
    assert "error:" in message and expect in message, message
    assert (snapshot(ws["root"]), snapshot(scratch)) == before, "something on disk changed"


def test_the_cases_cover_every_class_and_command():
    kinds = {c.kind for c in CASES}
    assert kinds == {
        "output",
        "untrusted",
        "types",
        "counts",
        "resume",
        "provenance",
        "decode",
        "inputs",
        "lock",
    }
    assert len({c.id for c in CASES}) == len(CASES) >= 60
    commands = {
        "dpo_reference" if c.name.startswith("dpo-reference") else c.name.split("-")[0] for c in CASES
    }
    assert set(_command_names()) <= commands  # every subcommand has cases
