"""`srlm index build/search` and `srlm eval qa` end to end, in-process through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm_fast.cli import main
from srlm_fast.model.checkpoint import save_pretrained
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import Tokenizer
from tests._train_fixtures import TEST_MODEL, one_thread
from tests.recipe.test_qa import FACTS

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def write_corpus(path: Path, n: int = 6) -> Path:
    path.write_text("".join(json.dumps({"id": f"f{i}", "title": name, "text": f"The {kind} of {name} is {ans}."})
                            + "\n" for i, (name, kind, ans) in enumerate(FACTS[:n])))  # fmt: skip
    return path


def test_build_then_search(tmp_path: Path, capsys) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl")
    idx = tmp_path / "idx"
    assert main(["index", "build", str(corpus), "--out", str(idx)]) == 0
    assert "bm25 index of 6 passages" in capsys.readouterr().out
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        '{"query": "lake of Cimba"}\n{"query": "Fenra island"}\n{"query": "nothing matches"}\n'
    )
    out = tmp_path / "hits.jsonl"
    assert main(["index", "search", str(idx), "--queries", str(queries), "--k", "2", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["query"] for r in rows] == ["lake of Cimba", "Fenra island", "nothing matches"]
    assert rows[0]["hits"][0]["id"] == "f2" and rows[1]["hits"][0]["id"] == "f5"
    assert rows[0]["hits"][0]["text"] == "The lake of Cimba is Ulven." and len(rows[0]["hits"]) == 2
    assert set(rows[0]["hits"][0]) == {"id", "score", "text"}
    capsys.readouterr()
    assert main(["index", "search", str(idx), "--query", "Dorne forest", "--k", "1"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["hits"][0]["id"] == "f3"


def test_rebuild_is_up_to_date_or_needs_overwrite(tmp_path: Path, capsys) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl")
    idx = tmp_path / "idx"
    assert main(["index", "build", str(corpus), "--out", str(idx)]) == 0
    before = (idx / "index.json").read_bytes()
    assert main(["index", "build", str(corpus), "--out", str(idx)]) == 0
    assert "up to date" in capsys.readouterr().out and (idx / "index.json").read_bytes() == before
    write_corpus(corpus, n=4)  # the corpus changed: a new index, only with --overwrite
    assert main(["index", "build", str(corpus), "--out", str(idx)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["index", "build", str(corpus), "--out", str(idx), "--overwrite"]) == 0
    assert json.loads((idx / "index.json").read_text())["n_passages"] == 4


def test_a_hybrid_index_is_rebuilt_only_for_another_fusion(tmp_path: Path, capsys) -> None:
    pytest.importorskip("faiss")
    corpus = write_corpus(tmp_path / "c.jsonl")
    tok = Tokenizer.train_bpe([corpus.read_text()] * 20, vocab_size=TEST_MODEL.vocab_size)
    ckpt = save_pretrained(build_model(TEST_MODEL, seed=0), tmp_path / "ckpt", tokenizer=tok)
    idx = tmp_path / "idx"
    build = ["index", "build", str(corpus), "--out", str(idx), "--kind", "hybrid", "--embedder", str(ckpt)]
    assert main(build) == 0
    assert json.loads((idx / "index.json").read_text())["params"]["fusion"] == "zscore"
    assert main(build) == 0 and "up to date" in capsys.readouterr().out
    assert main([*build, "--fusion", "rrf"]) == 1 and "--overwrite" in capsys.readouterr().err
    assert main([*build, "--fusion", "rrf", "--overwrite"]) == 0
    assert json.loads((idx / "index.json").read_text())["params"]["fusion"] == "rrf"


@pytest.fixture(scope="module")
def squad(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qa") / "squad.json"
    data = {"data": [{"title": name, "paragraphs": [{"context": f"The {kind} of {name} is called {ans}.",
            "qas": [{"id": name, "question": f"What is the {kind} of {name} called?",
                     "answers": [{"text": ans, "answer_start": 0}]}]}]} for name, kind, ans in FACTS]}  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def test_eval_qa_retrieval_only(squad: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "qa.json"
    assert main(["eval", "qa", "--data", str(squad), "--out", str(out), "--limit", "4"]) == 0
    res = json.loads(out.read_text())
    assert res["n_questions"] == 4 and res["retrieval"]["recall@1"] == 1.0
    assert [e["id"] for e in res["examples"]] == ["Aldor", "Cimba", "Dorne", "Fenra"]  # spread over the file


def test_eval_qa_with_a_checkpoint(squad: Path, tmp_path: Path) -> None:
    tok = Tokenizer.train_bpe([json.dumps(f) for f in FACTS] * 10, vocab_size=TEST_MODEL.vocab_size)
    ckpt = save_pretrained(build_model(TEST_MODEL, seed=0), tmp_path / "ckpt", tokenizer=tok)
    out = tmp_path / "qa.json"
    argv = ["eval", "qa", "--data", str(squad), "--checkpoint", str(ckpt), "--max-new-tokens", "3",
            "--device", "cpu", "--n-boot", "50", "--out", str(out), "--max-len", "256"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["conditions"]) == {"closed", "rag", "oracle", "shuffled"}
    assert all(set(e) >= {"closed", "rag", "oracle", "shuffled", "retrieved"} for e in res["examples"])
    for c in res["conditions"].values():
        assert c["n"] == len(FACTS) and 0 <= c["f1"]["value"] <= 1
