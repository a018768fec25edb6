"""Seed readers: every shape, best reply per prompt, malformed rows reported with file and line, real files."""

import json
from pathlib import Path

import pytest

from srlm_fast.io import DataError
from srlm_fast.recipe.judge import parse_score
from srlm_fast.recipe.seed_data import load_ift, oasst_seed_paths, read_ift, read_ranked
from srlm_fast.recipe.task_eft import eft_examples
from srlm_fast.recipe.tasks import check

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_all_shapes(tmp_path: Path) -> None:
    p = write(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "P1", "response": "R1"},
            {"instruction": "Translate.", "input": "hola", "output": "hello"},
            {"instruction": "Say hi.", "input": "", "output": "hi"},
            {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                          {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"}]},
            {"instruction": "Add.", "instances": [{"input": "1 2", "output": "3"}], "is_classification": False},
        ],
    )  # fmt: skip
    examples, errors = read_ift(p)
    assert errors == []
    assert [(e.prompt, e.response) for e in examples] == [
        ("P1", "R1"),
        ("Translate.\n\nhola", "hello"),
        ("Say hi.", "hi"),
        ("U", "A"),
        ("Add.\n\n1 2", "3"),
    ]


def test_best_reply_per_prompt(tmp_path: Path) -> None:
    ranked = write(
        tmp_path / "ranked.jsonl",
        [
            {"question": "Q1", "answer": "second", "rank": 1.0},
            {"question": "Q1", "answer": "best", "rank": 0.0},
            {"question": "Q2", "answer": "only", "rank": 2},
        ],
    )
    scored = write(
        tmp_path / "scored.jsonl",
        [
            {"prompt_text": "Q3", "response_text": "meh", "quality_score": 0.2},
            {"prompt_text": "Q3", "response_text": "unscored", "quality_score": None},
            {"prompt_text": "Q3", "response_text": "great", "quality_score": 0.9},
            {"prompt_text": "Q1", "response_text": "dup prompt", "quality_score": 1.0},
        ],
    )
    ex, _ = read_ift(ranked)
    assert {(e.prompt, e.response) for e in ex} == {("Q1", "best"), ("Q2", "only")}
    rp, _ = read_ranked(scored)
    assert [r.text for r in rp[0].replies] == ["great", "meh"]  # the unscored reply is no evidence
    merged, _ = load_ift([ranked, scored])
    assert [(e.prompt, e.response) for e in merged] == [("Q1", "best"), ("Q2", "only"), ("Q3", "great")]


BAD_ROWS = [
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"foo": 1}, "unrecognised row shape"),
    ({"prompt": "P", "response": ""}, "'response' is empty"),
    ({"prompt": 3, "response": "R"}, "'prompt' must be a string"),
    ({"question": "Q", "answer": "A", "rank": "first"}, "'rank' must be a finite number"),
    ({"messages": [{"role": "user", "content": "U"}]}, "not followed by an assistant"),
    ({"messages": "hi"}, "must be a list"),
    ({"instruction": "I", "instances": []}, "non-empty list"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_malformed_rows_name_file_and_line(tmp_path: Path, row, message: str) -> None:
    p = write(tmp_path / "bad.jsonl", [{"prompt": "ok", "response": "fine"}, "", row])
    with pytest.raises(DataError) as err:
        read_ift(p)
    assert f"{p}:3:" in str(err.value) and message in str(err.value)
    examples, errors = read_ift(p, on_error="skip")
    assert len(examples) == 1 and len(errors) == 1 and errors[0].startswith(f"{p}:3:")


def test_empty_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no IFT examples"):
        load_ift([write(tmp_path / "empty.jsonl", [])])


def test_task_eft_examples_are_judge_format() -> None:
    ex = eft_examples(12, seed=0)
    assert len(ex) == 12 and all(parse_score(e.response) == e.score for e in ex)


def test_reference_eft_examples_solve_first_then_score() -> None:
    plain, ref = eft_examples(60, seed=0), eft_examples(60, seed=0, reference=True)
    assert [e.prompt for e in plain] == [e.prompt for e in ref]  # only the judgment changes
    for p, r in zip(plain, ref):
        answer, score = r.response.split("\n", 1)
        assert answer == f"Answer: {check(r.instruction, '').expected}" and score == p.response
        assert parse_score(r.response) == r.score
        # the judge's own answer is the right one, and the score says whether the candidate matches it
        assert check(r.instruction, answer.removeprefix("Answer: ")).correct


@pytest.mark.skipif(not (DATA / "seed").is_dir(), reason="shared/data is not present")
def test_real_openassistant_files() -> None:
    paths = oasst_seed_paths(DATA / "seed")
    assert len(paths) == 2
    examples, errors = load_ift(paths)
    assert errors == []
    # SOURCES.md: the two files together give about 2,900 unique English prompts.
    assert 2800 <= len(examples) <= 3100
    assert len({e.prompt for e in examples}) == len(examples)
    ranked, _ = read_ranked(paths[0])
    multi = [r for r in ranked if len(r.replies) > 1]
    assert multi and all(r.replies[0].quality >= r.replies[-1].quality for r in multi)
    si, errors = read_ift(DATA / "seed" / "selfinstruct_seed_tasks.jsonl")
    assert len(si) == 175 and errors == []
