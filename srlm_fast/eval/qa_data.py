"""QA evaluation data: SQuAD v1.1 / XQuAD JSON (questions with their paragraph) and NQ-open JSONL (questions and
short answers, no passage).

Each question's gold paragraph is named `<article title>#<paragraph index>`, the id the SQuAD corpus reader of
`retrieval/corpus.py` gives the same paragraph (tests/retrieval/test_corpus.py checks they agree), so the recall
of an index built from the file can be measured by id. NQ-open has no gold passage: its recall is answer recall
(a gold answer string in a retrieved passage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from srlm_fast.io import DataError, read_json, read_jsonl_numbered


@dataclass(frozen=True)
class QAExample:
    """A question, its acceptable answers, and (SQuAD) the paragraph that holds the answer."""

    id: str
    question: str
    answers: tuple[str, ...]
    passage_id: str | None = None
    passage: str | None = None


def read_squad_questions(path: str | os.PathLike) -> list[QAExample]:
    """The questions of a SQuAD/XQuAD file, each with its gold paragraph; fields are checked by JSON path."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f'{path}: expected a SQuAD JSON object with a "data" list of articles')
    out = []
    for i, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise DataError(f'{path}: data[{i}]: expected an article with a "paragraphs" list')
        title = article.get("title") or f"article {i}"
        for j, par in enumerate(article["paragraphs"]):
            where = f"{path}: data[{i}].paragraphs[{j}]"
            if not isinstance(par, dict) or not isinstance(par.get("context"), str):
                raise DataError(f'{where}: expected an object with a "context" string')
            for q, qa in enumerate(par.get("qas") or []):
                answers = qa.get("answers") if isinstance(qa, dict) else None
                if (
                    not isinstance(qa, dict)
                    or not isinstance(qa.get("question"), str)
                    or not isinstance(answers, list)
                ):
                    raise DataError(f'{where}.qas[{q}]: expected {{"question": str, "answers": [...]}}')
                texts = [a.get("text") for a in answers if isinstance(a, dict)]
                if not texts or not all(isinstance(t, str) for t in texts):
                    raise DataError(f'{where}.qas[{q}].answers: expected a list of {{"text": str}}')
                out.append(QAExample(str(qa.get("id", f"{i}-{j}-{q}")), qa["question"], tuple(texts),
                                     f"{title}#{j}", par["context"]))  # fmt: skip
    return out


def read_nq_open(path: str | os.PathLike) -> list[QAExample]:
    """NQ-open JSONL: `{"question": str, "answer": [str, ...]}` per line."""

    def check(row: dict) -> str | None:
        a = row.get("answer")
        if not isinstance(row.get("question"), str):
            return 'needs "question" (a string)'
        if not isinstance(a, list) or not a or not all(isinstance(x, str) for x in a):
            return 'needs "answer" (a non-empty list of strings)'
        return None

    rows, _ = read_jsonl_numbered(path, validate=check)
    return [QAExample(f"line{line}", r["question"], tuple(r["answer"])) for line, r in rows]


def read_qa_data(path: str | os.PathLike) -> list[QAExample]:
    """SQuAD/XQuAD for `.json`, NQ-open for `.jsonl` (`.gz` too); an empty file is an error."""
    name = Path(path).name.lower().removesuffix(".gz")
    examples = read_squad_questions(path) if name.endswith(".json") else read_nq_open(path)
    if not examples:
        raise DataError(f"{path}: no questions in the file")
    return examples
