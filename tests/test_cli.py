"""`srlm` foundation subcommands, run as a user would (in-process through the entry point)."""

import json
import os
import subprocess
import sys

import pytest

from srlm_fast.cli import main


def test_presets_json(capsys):
    assert main(["presets", "--json"]) == 0
    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["llama-3-8b"]["params"] == 8_030_261_248
    assert rows["debug"]["train_flops_per_token"] > 6 * rows["debug"]["params"] * 0.5


def test_tokenizer_train_init_inspect(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps({"prompt": f"add {i} and {i + 1}", "response": str(2 * i + 1)}) for i in range(200)
        )
    )
    assert (
        main(["tokenizer", "train", str(corpus), "--out", str(tmp_path / "tok"), "--vocab-size", "300"]) == 0
    )
    assert (
        main(
            [
                "checkpoint",
                "init",
                "--preset",
                "tiny",
                "--out",
                str(tmp_path / "ck"),
                "--tokenizer",
                str(tmp_path / "tok"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["checkpoint", "inspect", str(tmp_path / "ck"), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "151,872 parameters" in out and "chat template 'srlm'" in out and "model.norm.weight" in out
    assert (
        main(
            [
                "checkpoint",
                "convert",
                str(tmp_path / "ck"),
                "--out",
                str(tmp_path / "ck16"),
                "--dtype",
                "bf16",
            ]
        )
        == 0
    )
    assert (tmp_path / "ck16" / "tokenizer.json").is_file()
    # An existing checkpoint is replaced only when asked.
    init = ["checkpoint", "init", "--preset", "tiny", "--out", str(tmp_path / "ck16"), "--seed", "1"]
    assert main(init) == 1 and "pass --overwrite" in capsys.readouterr().err
    assert main([*init, "--overwrite"]) == 0 and "wrote tiny" in capsys.readouterr().out


def test_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["checkpoint", "inspect", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("srlm checkpoint: error:") and "no such file" in err
    assert main(["checkpoint", "init", "--preset", "nope", "--out", str(tmp_path / "x")]) == 1
    assert "unknown model preset 'nope'" in capsys.readouterr().err


def test_unknown_arguments_are_refused():
    with pytest.raises(SystemExit):
        main(["presets", "--bogus"])


@pytest.mark.parametrize("torchrun_env", [False, True])
def test_the_console_script_exits_with_the_command_code_and_its_whole_output(torchrun_env):
    # Under torchrun `entry` leaves through os._exit: the piped output must still be flushed, the code kept.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    if torchrun_env:
        env.update(RANK="0", WORLD_SIZE="1")
    script = "import sys; from srlm_fast.cli import entry; entry(sys.argv[1:])"
    ok = subprocess.run(
        [sys.executable, "-c", script, "presets", "--json"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "llama-3-8b" in {r["preset"] for r in json.loads(ok.stdout)}
    # A command that fails returns 1 through `main` (argparse's own exit would bypass `entry`'s exit path).
    bad = subprocess.run(
        [sys.executable, "-c", script, "checkpoint", "inspect", "/nonexistent"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "/nonexistent/config.json: no such file" in bad.stderr
