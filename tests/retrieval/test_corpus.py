"""Corpus readers: passages, ids, malformed input named by file:line or field, and the corpus fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm_fast.eval.qa_data import read_squad_questions
from srlm_fast.io import DataError
from srlm_fast.retrieval.corpus import (
    Passage,
    corpus_sha256,
    read_corpus,
    read_jsonl_passages,
    read_squad_passages,
    split_text,
)

SQUAD = {
    "data": [
        {"title": "Cats", "paragraphs": [
            {"context": "Cats purr when content.", "qas": [{"id": "q1", "question": "When do cats purr?",
                                                             "answers": [{"text": "when content", "answer_start": 10}]}]},
            {"context": "Cats sleep sixteen hours.", "qas": [{"id": "q2", "question": "How long do cats sleep?",
                                                               "answers": [{"text": "sixteen hours", "answer_start": 11}]}]},
        ]},
        {"title": "Dogs", "paragraphs": [
            {"context": "Dogs bark at strangers.", "qas": [{"id": "q3", "question": "At whom do dogs bark?",
                                                             "answers": [{"text": "strangers", "answer_start": 13}]}]},
        ]},
    ]
}  # fmt: skip


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_split_text_packs_lines_and_cuts_long_ones() -> None:
    text = "a b c\n\n d e \nf g h i j k l\nm\n"
    assert split_text(text, words=4) == ["a b c", "d e", "f g h i", "j k l m"]
    assert split_text("", words=4) == []
    every_word = " ".join(split_text(text, words=3)).split()
    assert every_word == text.split()  # nothing lost or reordered


def test_text_file_passages_are_numbered(tmp_path: Path) -> None:
    f = write(tmp_path / "notes.txt", "one two three\nfour five\n")
    ps = read_corpus([f], words=3)
    assert [(p.id, p.text) for p in ps] == [("notes:0", "one two three"), ("notes:1", "four five")]


def test_jsonl_passages(tmp_path: Path) -> None:
    f = write(tmp_path / "c.jsonl", '{"id": 7, "title": "T", "text": "x"}\n\n{"text": "y"}\n')
    assert read_jsonl_passages(f) == [Passage("7", "x", "T"), Passage("c:3", "y", "")]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"text": "x"}\n{"text": 3}\n', ':2: needs "text"'),
        ('{"text": "x"}\nnot json\n', ":2: not valid JSON"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', ":2: passage id 'a' already used on line 1"),
        ('{"text": "x", "title": 1}\n', ':1: "title" must be a string'),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    f = write(tmp_path / "c.jsonl", text)
    with pytest.raises(DataError, match=f"^{f}{problem}"):
        read_jsonl_passages(f)


def test_squad_paragraph_ids_match_the_qa_reader(tmp_path: Path) -> None:
    f = write(tmp_path / "s.json", json.dumps(SQUAD))
    ps = read_squad_passages(f)
    assert [p.id for p in ps] == ["Cats#0", "Cats#1", "Dogs#0"]
    by_id = {p.id: p.text for p in ps}
    qs = read_squad_questions(f)
    assert [q.passage_id for q in qs] == ["Cats#0", "Cats#1", "Dogs#0"]
    assert all(by_id[q.passage_id] == q.passage for q in qs)


def test_bad_squad_names_the_field(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][1]["paragraphs"][0]["context"] = None
    f = write(tmp_path / "s.json", json.dumps(bad))
    with pytest.raises(DataError, match=r"data\[1\]\.paragraphs\[0\]"):
        read_squad_passages(f)
    with pytest.raises(DataError, match=r"s.json:1: not valid JSON"):
        read_squad_passages(write(tmp_path / "s.json", "{"))


def test_ids_must_be_unique_across_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", '{"id": "p", "text": "x"}\n')
    b = write(tmp_path / "b.jsonl", '{"id": "p", "text": "y"}\n')
    with pytest.raises(DataError, match="also in"):
        read_corpus([a, b])


def test_corpus_fingerprint_sees_every_field_and_the_order() -> None:
    ps = [Passage("a", "x"), Passage("b", "y", "T")]
    h = corpus_sha256(ps)
    assert h == corpus_sha256(list(ps))
    assert h != corpus_sha256(ps[::-1])
    assert h != corpus_sha256([Passage("a", "x"), Passage("b", "y")])
    assert h != corpus_sha256([Passage("a", "x "), Passage("b", "y", "T")])
