"""Evaluation data readers: the real files in ../shared/data (skipped when absent), synthetic files, bad input."""

import gzip
import json
from pathlib import Path

import pytest

from srlm_fast.eval.readers import (
    alpaca_eval_records,
    read_alpaca_eval,
    read_eval_prompts,
    read_hh_pairs,
    read_mt_bench,
    read_oasst_trees,
    read_scored_judgments,
    read_selfinstruct,
    split_hh_pair,
)
from srlm_fast.io import DataError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared(rel: str) -> Path:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- OpenAssistant trees


def _msg(text: str, rank=None, replies=(), deleted=False, role="assistant") -> dict:
    m = {"text": text, "role": role, "deleted": deleted, "replies": list(replies), "message_id": text}
    if rank is not None:
        m["rank"] = rank
    return m


TREE = {
    "message_tree_id": "t1",
    "prompt": _msg(
        "Q1",
        role="prompter",
        replies=[
            _msg("A best", 0, replies=[_msg("Q2", role="prompter", replies=[_msg("B0", 1), _msg("B1", 0)])]),
            _msg("A worst", 2),
            _msg("A mid", 1),
            _msg("A unranked"),
            _msg("A deleted", 3, deleted=True),
        ],
    ),
}


def test_oasst_synthetic_tree(tmp_path: Path) -> None:
    p = write(tmp_path / "trees.jsonl", [TREE])
    (first,) = read_oasst_trees(p)
    assert first.prompt == "Q1" and first.history == ()
    assert first.responses == ("A best", "A worst", "A mid") and first.ranks == (0, 2, 1)
    deep = read_oasst_trees(p, first_turn_only=False)
    assert len(deep) == 2
    second = deep[1]
    assert second.prompt == "Q2" and second.history == (("prompter", "Q1"), ("assistant", "A best"))
    assert second.ranks == (1, 0)
    assert second.instruction == "User: Q1\n\nAssistant: A best\n\nUser: Q2"


def test_oasst_gzip_and_errors(tmp_path: Path) -> None:
    gz = tmp_path / "trees.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps(TREE) + "\n")
    assert len(read_oasst_trees(gz)) == 1
    bad = json.loads(json.dumps(TREE))
    bad["prompt"]["replies"][1]["rank"] = "first"
    p = write(tmp_path / "bad.jsonl", [TREE, bad])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: message A worst: 'rank' must be an integer"):
        read_oasst_trees(p)
    p = write(tmp_path / "broken.jsonl", [TREE, "{not json"])
    with pytest.raises(DataError, match=r"broken\.jsonl:2: not valid JSON"):
        read_oasst_trees(p)
    p = write(tmp_path / "notext.jsonl", [{"prompt": {"replies": []}}])
    with pytest.raises(DataError, match=r"notext\.jsonl:1: .*'text' must be a string"):
        read_oasst_trees(p)


def test_oasst_real_file() -> None:
    path = shared("prefs/oasst_en_100_trees.jsonl")
    first_turn = read_oasst_trees(path)
    assert len(first_turn) == 99  # one of the 100 trees has no ranked first-turn replies
    assert sum(len(p.responses) for p in first_turn) == 330
    assert all(sorted(p.ranks)[0] == 0 and len(p.responses) >= 2 for p in first_turn)
    assert first_turn[0].prompt == "How can I find the best 401k plan for my needs?"
    assert len(read_oasst_trees(path, first_turn_only=False)) > len(first_turn)


# ---------------------------------------------------------------- HH-RLHF


def test_split_hh_pair() -> None:
    pre = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant:"
    pair, why = split_hh_pair(pre + " 4", pre + " 5, I think")
    assert why == "" and pair is not None
    assert (pair.prompt, pair.chosen, pair.rejected) == ("What is 2+2?", "4", "5, I think")
    assert pair.history == (("human", "Hi"), ("assistant", "Hello!"))
    # the shared prefix ends inside a word: still split at the last assistant marker
    pair, _ = split_hh_pair(pre + " Four.", pre + " Fourty.")
    assert (pair.chosen, pair.rejected) == ("Four.", "Fourty.")
    assert split_hh_pair(pre + " 4", pre + " 4") == (None, "identical")
    diverge = "\n\nHuman: Hi\n\nAssistant: "
    assert (
        split_hh_pair(diverge + "A\n\nHuman: x\n\nAssistant: y", diverge + "B")[1]
        == "diverges_before_last_turn"
    )
    assert split_hh_pair("abc", "abd")[1] == "no_shared_prompt"
    assert split_hh_pair(pre, pre + " x")[1] == "empty_reply"


def test_hh_synthetic_gz_and_errors(tmp_path: Path) -> None:
    pre = "\n\nHuman: Q\n\nAssistant:"
    gz = tmp_path / "hh.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"chosen": pre + " good", "rejected": pre + " bad"}) + "\n")
        f.write(json.dumps({"chosen": pre + " same", "rejected": pre + " same"}) + "\n")
    ps = read_hh_pairs(gz)
    assert [(p.prompt, p.chosen, p.rejected) for p in ps.pairs] == [("Q", "good", "bad")]
    assert ps.skipped == {"identical": 1}
    p = write(tmp_path / "hh.jsonl", [{"chosen": pre + " a", "rejected": pre + " b"}, {"chosen": "x"}])
    with pytest.raises(DataError, match=r"hh\.jsonl:2: field 'rejected' must be a string"):
        read_hh_pairs(p)
    junk = tmp_path / "junk.jsonl.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="junk.jsonl.gz: cannot read"):
        read_hh_pairs(junk)


def test_hh_real_file() -> None:
    ps = read_hh_pairs(shared("prefs/hh_rlhf_helpful_base_test.jsonl.gz"))
    assert len(ps.pairs) + sum(ps.skipped.values()) == 2354
    assert len(ps.pairs) >= 2330 and ps.skipped.get("identical") == 2
    assert all(p.chosen != p.rejected and p.prompt for p in ps.pairs)
    assert not any("\n\nHuman:" in p.chosen or "\n\nAssistant:" in p.rejected for p in ps.pairs)


# ---------------------------------------------------------------- prompt sets


def test_alpaca_eval_synthetic_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "outs.json"
    p.write_text(json.dumps([{"instruction": "I", "output": "O", "generator": "g", "dataset": "d"}]))
    (e,) = read_alpaca_eval(p)
    assert (e.instruction, e.reference, e.generator, e.category) == ("I", "O", "g", "d")
    assert alpaca_eval_records([e], ["mine"], "m1") == [
        {"dataset": "d", "instruction": "I", "output": "mine", "generator": "m1"}
    ]
    p.write_text(json.dumps([{"instruction": "I", "output": "O"}, {"instruction": "J"}]))
    with pytest.raises(DataError, match=r"outs\.json: record 1: field 'output' must be a string"):
        read_alpaca_eval(p)
    p.write_text('[{"instruction": "I",\n "output": }]')
    with pytest.raises(DataError, match=r"outs\.json:2: not valid JSON"):
        read_alpaca_eval(p)
    p.write_text('{"instruction": "I"}')
    with pytest.raises(DataError, match="expected a JSON list"):
        read_alpaca_eval(p)


def test_alpaca_eval_real_files() -> None:
    gpt4 = read_alpaca_eval(shared("eval/alpaca_eval_805_gpt4_turbo.json"))
    davinci = read_alpaca_eval(shared("eval/alpaca_eval_805_davinci003.json"))
    assert len(gpt4) == len(davinci) == 805
    assert [e.instruction for e in gpt4] == [e.instruction for e in davinci]
    assert gpt4[0].generator == "gpt4_1106_preview" and davinci[0].generator == "text_davinci_003"
    assert sum(len(e.reference) for e in gpt4) > 3 * sum(len(e.reference) for e in davinci)


def test_mt_bench(tmp_path: Path) -> None:
    p = write(tmp_path / "q.jsonl", [{"question_id": 7, "category": "math", "turns": ["t1", "t2"]}])
    (q,) = read_mt_bench(p)
    assert (q.id, q.instruction, q.category) == ("7", "t1", "math")
    assert read_mt_bench(p, turn=1)[0].instruction == "t2"
    with pytest.raises(DataError, match=r"q\.jsonl:1: has 2 turn"):
        read_mt_bench(p, turn=2)
    bad = write(tmp_path / "bad.jsonl", [{"question_id": 1, "turns": "not a list"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'turns'"):
        read_mt_bench(bad)
    real = read_mt_bench(shared("eval/mt_bench_questions.jsonl"))
    assert len(real) == 80 and real[0].id == "81" and real[0].category == "writing"


def test_selfinstruct(tmp_path: Path) -> None:
    p = write(
        tmp_path / "si.jsonl",
        [
            {"id": "a", "instruction": "Fix it.", "instances": [{"input": "teh cat", "output": "the cat"}]},
            {"id": "b", "instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}]},
        ],
    )
    a, b = read_selfinstruct(p)
    assert (a.instruction, a.reference) == ("Fix it.\n\nteh cat", "the cat")
    assert (b.instruction, b.reference) == ("Say hi.", "hi")
    real = read_selfinstruct(shared("eval/selfinstruct_user_oriented_252.jsonl"))
    assert len(real) == 252 and real[0].id == "user_oriented_task_0" and "\n\n" in real[0].instruction


def test_read_eval_prompts_recognises_shapes(tmp_path: Path) -> None:
    plain = write(tmp_path / "plain.jsonl", [{"prompt": "P1"}, {"prompt": "P2", "id": "x"}])
    assert [(e.id, e.instruction) for e in read_eval_prompts(plain)] == [("1", "P1"), ("x", "P2")]
    mt = write(tmp_path / "mt.jsonl", [{"question_id": 1, "turns": ["a", "b"]}])
    assert read_eval_prompts(mt)[0].instruction == "a"
    si = write(tmp_path / "si.jsonl", [{"instruction": "I", "instances": []}])
    assert read_eval_prompts(si)[0].instruction == "I"
    bad = write(tmp_path / "bad.jsonl", [{"prompt": "P"}, {"prompt": 3}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'prompt' must be a string"):
        read_eval_prompts(bad)
    with pytest.raises(FileNotFoundError):
        read_eval_prompts(tmp_path / "missing.jsonl")


def test_read_scored_judgments(tmp_path: Path) -> None:
    p = write(
        tmp_path / "j.jsonl",
        [{"ranks": [0, 1], "scores": [4, None]}, {"chosen_score": 5, "rejected_score": 2.5}],
    )
    s = read_scored_judgments(p)
    assert len(s.ranked) == 1 and list(s.ranked[0].scores) == [4.0, None]
    assert (s.chosen_scores, s.rejected_scores) == ([5.0], [2.5])
    for row, msg in [
        ({"ranks": [0, 1], "scores": [1]}, "same length"),
        ({"ranks": [0, 1], "scores": [1, "high"]}, "a score must be a number"),
        ({"score": 3}, "expected 'ranks'"),
    ]:
        bad = write(tmp_path / "bad.jsonl", [{"ranks": [0], "scores": [1]}, row])
        with pytest.raises(DataError, match=rf"bad\.jsonl:2: .*{msg}"):
            read_scored_judgments(bad)
