"""`srlm generate`: outputs checked before sampling, progress on stderr (stdout stays the JSONL output)."""

from __future__ import annotations

import json

import pytest

from srlm_fast.cli import main
from srlm_fast.commands.generate import run_with_progress
from srlm_fast.engine.generator import Generator, SamplingParams
from srlm_fast.model.llama import Llama
from srlm_fast.model.tokenizer import Tokenizer
from tests._train_fixtures import make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("generate"), n_sft=12, n_pairs=4)


def test_progress_goes_to_stderr_and_stdout_is_only_jsonl(ws, capsys):
    model = Llama.from_pretrained(ws["init"]).eval()
    gen = Generator(model, Tokenizer.from_dir(ws["init"]), max_batch=2)
    results = run_with_progress(gen, ["a b", "c", "d e f"], SamplingParams(max_new_tokens=6, n=2, seed=1),
                                "generating", interval_s=0.0)  # fmt: skip
    out, err = capsys.readouterr()
    assert out == "" and len(results) == 3
    assert "generating: 6/6 samples" in err and "ETA" in err
    assert [r.samples[0].token_ids for r in results] == [
        r.samples[0].token_ids
        for r in gen.generate(["a b", "c", "d e f"], SamplingParams(max_new_tokens=6, n=2, seed=1))
    ]


def test_generate_writes_once_and_refuses_to_replace_without_overwrite(ws, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "add 1 and 2"}\n')
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--checkpoint", str(ws["init"]), "--prompts", str(prompts), "--out", str(out),
            "--max-new-tokens", "3", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    first = out.read_bytes()
    assert json.loads(first)["completions"][0]["num_tokens"] <= 3
    capsys.readouterr()
    assert main([*argv, "--seed", "5"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err and out.read_bytes() == first
    assert main([*argv, "--seed", "5", "--overwrite"]) == 0
