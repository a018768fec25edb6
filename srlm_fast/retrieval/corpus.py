"""Corpus readers: files of text become a list of `Passage`s, the unit a retriever indexes and returns.

Formats (chosen by the file name):
- `*.jsonl` / `*.jsonl.gz`: one passage per line, `{"text": ..., "id": ..., "title": ...}`; `id` and `title` are
  optional (a missing id becomes `<file stem>:<line>`). Passages are kept as the user cut them.
- `*.json`: SQuAD v1.1 / XQuAD (`{"data": [{"title", "paragraphs": [{"context", "qas"}]}]}`); every paragraph
  is one passage, with the id `squad_paragraph_id(title, j)` (the QA reader in `eval/qa_data.py` names the
  gold paragraph of each question the same way).
- anything else: plain text. Non-empty lines are packed greedily into passages of at most `words` words (the
  ~100-word passages of DPR); a line longer than that is cut into windows. Lines are the paragraphs of the
  shared corpora (WikiText, the Wikipedia demo), so a passage never starts mid-sentence unless a paragraph is
  longer than `words`.

Bad input is a `DataError` naming the file and the line (JSONL) or the field (SQuAD JSON); ids must be unique
over all the files of one corpus. `corpus_sha256` fingerprints the passages in order: an index records it and
refuses to serve a different corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from srlm_fast.io import DataError, read_json, read_jsonl_numbered, read_text

DEFAULT_PASSAGE_WORDS = 100


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of text."""

    id: str
    text: str
    title: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "text": self.text}

    @property
    def indexed_text(self) -> str:
        """What the retrievers see: the title (often the entity a question names) and the text."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def squad_paragraph_id(title: str, index: int) -> str:
    """The id of paragraph `index` (0-based, within its article) of the SQuAD article `title`."""
    return f"{title}#{index}"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".txt"):
        name = name.removesuffix(suffix)
    return name


def split_text(text: str, words: int = DEFAULT_PASSAGE_WORDS) -> list[str]:
    """Non-empty lines of `text`, packed greedily into chunks of at most `words` words (long lines are cut)."""
    if words < 1:
        raise ValueError(f"words per passage must be at least 1, got {words}")
    out: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if current and len(current) + len(tokens) > words:
            out.append(" ".join(current))
            current = []
        while len(tokens) > words:  # a paragraph longer than a passage: whole windows first
            out.append(" ".join(tokens[:words]))
            tokens = tokens[words:]
        current += tokens
    if current:
        out.append(" ".join(current))
    return out


def read_text_passages(path: str | os.PathLike, words: int = DEFAULT_PASSAGE_WORDS) -> list[Passage]:
    """A plain-text file as passages `<stem>:<n>` (see `split_text`)."""
    path = Path(path)
    stem = _stem(path)
    return [Passage(f"{stem}:{i}", chunk) for i, chunk in enumerate(split_text(read_text(path), words))]


def read_jsonl_passages(path: str | os.PathLike) -> list[Passage]:
    """A JSONL file of `{"text", "id"?, "title"?}` objects, one passage per line."""
    path = Path(path)

    def check(row: dict) -> str | None:
        if not isinstance(row.get("text"), str):
            return 'needs "text" (a string)'
        if "id" in row and not isinstance(row["id"], str | int):
            return f'"id" must be a string or an integer, got {type(row["id"]).__name__}'
        if not isinstance(row.get("title", ""), str):
            return '"title" must be a string'
        return None

    rows, _ = read_jsonl_numbered(path, validate=check)
    stem = _stem(path)
    seen: dict[str, int] = {}
    out = []
    for line, row in rows:
        pid = str(row["id"]) if "id" in row else f"{stem}:{line}"
        if pid in seen:
            raise DataError(f"{path}:{line}: passage id {pid!r} already used on line {seen[pid]}")
        seen[pid] = line
        out.append(Passage(pid, row["text"], row.get("title", "")))
    return out


def squad_articles(data: object, path: str | os.PathLike) -> list[dict]:
    """The `data` list of a SQuAD/XQuAD file, each article checked to have a title and a paragraph list."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f'{path}: expected a SQuAD JSON object with a "data" list of articles')
    for i, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise DataError(f'{path}: data[{i}]: expected an article with a "paragraphs" list')
        if not isinstance(article.get("title", ""), str):
            raise DataError(f"{path}: data[{i}].title: expected a string")
        for j, par in enumerate(article["paragraphs"]):
            if not isinstance(par, dict) or not isinstance(par.get("context"), str):
                raise DataError(
                    f'{path}: data[{i}].paragraphs[{j}]: expected an object with a "context" string'
                )
    return data["data"]


def read_squad_passages(path: str | os.PathLike) -> list[Passage]:
    """Every paragraph of a SQuAD/XQuAD JSON file as a passage (title = the article's title)."""
    out = []
    for i, article in enumerate(squad_articles(read_json(path), path)):
        title = article.get("title") or f"article {i}"
        out += [
            Passage(squad_paragraph_id(title, j), par["context"], title)
            for j, par in enumerate(article["paragraphs"])
        ]
    return out


def corpus_format(path: str | os.PathLike) -> str:
    """ "jsonl", "squad" or "text", from the file name."""
    name = Path(path).name.lower().removesuffix(".gz")
    return "jsonl" if name.endswith(".jsonl") else "squad" if name.endswith(".json") else "text"


def read_corpus(paths: Sequence[str | os.PathLike], words: int = DEFAULT_PASSAGE_WORDS) -> list[Passage]:
    """The passages of all `paths`, in order; ids must be unique across the files."""
    if not paths:
        raise ValueError("no corpus files given")
    out: list[Passage] = []
    owner: dict[str, str] = {}
    for path in paths:
        fmt = corpus_format(path)
        if fmt == "jsonl":
            passages = read_jsonl_passages(path)
        elif fmt == "squad":
            passages = read_squad_passages(path)
        else:
            passages = read_text_passages(path, words)
        for p in passages:
            if p.id in owner:
                raise DataError(f"{path}: passage id {p.id!r} is also in {owner[p.id]}; ids must be unique")
            owner[p.id] = str(path)
        out += passages
    if not out:
        raise DataError(f"{', '.join(map(str, paths))}: no passages in the corpus")
    return out


def corpus_sha256(passages: Iterable[Passage]) -> str:
    """A fingerprint of the passages (ids, titles, texts) in order."""
    h = hashlib.sha256()
    for p in passages:
        h.update(json.dumps([p.id, p.title, p.text], ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()
