"""`srlm eval judge`: a real checkpoint judges real OpenAssistant rankings and HH-RLHF pairs."""

import json

import pytest

from srlm_fast.cli import main
from srlm_fast.model.tokenizer import Tokenizer
from tests.helpers import SHARED_DATA, tiny_model

OASST = SHARED_DATA / "prefs" / "oasst_en_100_trees.jsonl"
HH = SHARED_DATA / "prefs" / "hh_rlhf_helpful_base_test.jsonl.gz"


@pytest.mark.skipif(not (OASST.is_file() and HH.is_file()), reason="../shared/data is not present")
def test_eval_judge_on_rankings_and_pairs(tmp_path, capsys):
    tok = Tokenizer.train_bpe(["Score: 3. Relevant: yes. The answer is helpful."] * 20, vocab_size=300)
    tiny_model(vocab_size=tok.vocab_size, max_seq_len=1024).save_pretrained(tmp_path / "ck", tokenizer=tok)
    out = tmp_path / "agreement.json"
    argv = ["eval", "judge", "--checkpoint", str(tmp_path / "ck"), "--rankings", str(OASST), "--pairs", str(HH),
            "--mode", "expected", "--template", "compact", "--limit", "3", "--max-new-tokens", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "expected"
    assert set(result) >= {"rankings", "pairs"}
    # Every response got a score or was counted as invalid/skipped: nothing silently disappears.
    assert "pairwise_accuracy" in json.dumps(result["rankings"])
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{\n") :]) == result


def test_eval_versus_two_checkpoints_with_references(tmp_path, capsys):
    tok = Tokenizer.train_bpe(["Score: 3. Name a color. Blue is a color."] * 20, vocab_size=300)
    for name, seed in (("a", 0), ("b", 1)):
        tiny_model(seed=seed, vocab_size=tok.vocab_size, max_seq_len=512).save_pretrained(
            tmp_path / name, tokenizer=tok
        )
    prompts = tmp_path / "alpaca.json"
    rows = [{"instruction": f"Name color number {i}.", "output": "Blue.", "generator": "ref", "dataset": "t"}
            for i in range(4)]  # fmt: skip
    prompts.write_text(json.dumps(rows))
    out = tmp_path / "versus.json"
    argv = ["eval", "versus", "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--prompts", str(prompts),
            "--references", "--max-new-tokens", "6", "--template", "compact", "--judge-max-new-tokens", "4",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["judge"] == str(tmp_path / "b")  # the newer model judges by default
    h2h = result["a_vs_b"]
    assert h2h["n"] == 4
    total = h2h["win"]["value"] + h2h["tie"]["value"] + h2h["loss"]["value"]
    assert abs(total - 1.0) < 1e-9 or h2h["n_valid"] == 0
    assert {"a_vs_reference", "b_vs_reference"} <= set(result)
    assert len(result["answers"]) == 4 and all(set(a) == {"instruction", "a", "b"} for a in result["answers"])
