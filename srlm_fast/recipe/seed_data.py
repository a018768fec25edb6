"""Seed data readers: IFT (prompt → response) JSONL in the common shapes, ranked replies for EFT, task-world EFT.

Row shapes recognised (per row, so a file may mix them):
    {"prompt", "response"}                                  plain pairs
    {"instruction", "input"?, "output"}                     Alpaca / Dolly style (input appended after a blank line)
    {"messages": [{"role", "content"}, ...]}                chat; the first user turn and the assistant reply after it
    {"instruction", "instances": [{"input", "output"}]}     Self-Instruct seed tasks (first instance)
    {"question", "answer", "rank"}                          ranked replies, 0 = best (oasst2, AndrisWillow export)
    {"prompt_text", "response_text", "quality_score"}       scored replies, higher = better (oasst2, raulc0399 export)
Ranked and scored shapes group the replies of one prompt; the IFT example is the best reply (first on ties).
A bad row is an error naming `file:line`; with `on_error="skip"` it is skipped and its message returned.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from srlm_fast.io import DataError, read_jsonl
from srlm_fast.recipe.tasks import IFTExample

SHAPES = ("prompt_response", "alpaca", "messages", "selfinstruct", "ranked", "scored")


@dataclass(frozen=True)
class RatedReply:
    """One human-judged reply; `quality` is higher-is-better whatever the source scale (rank 0 → quality 0)."""

    text: str
    quality: float


@dataclass(frozen=True)
class RatedPrompt:
    """A prompt with its human-judged replies, best first (material for judge/EFT data)."""

    prompt: str
    replies: tuple[RatedReply, ...]


def _nonempty_str(row: dict, key: str) -> str | None:
    v = row.get(key)
    if not isinstance(v, str):
        return f"field {key!r} must be a string, got {type(v).__name__}"
    if not v.strip():
        return f"field {key!r} is empty"
    return None


def _number(row: dict, key: str) -> str | None:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return f"field {key!r} must be a finite number, got {v!r}"
    return None


def detect_shape(row: dict) -> str | None:
    """Which of SHAPES a row has (by its keys), or None."""
    if "messages" in row:
        return "messages"
    if "prompt" in row and "response" in row:
        return "prompt_response"
    if "question" in row and "answer" in row:
        return "ranked"
    if "prompt_text" in row and "response_text" in row:
        return "scored"
    if "instruction" in row and "instances" in row:
        return "selfinstruct"
    if "instruction" in row and "output" in row:
        return "alpaca"
    return None


def _first_turn(messages: list) -> tuple[str, str] | str:
    """(user, assistant) of the first exchange, or an error message."""
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            return f"messages[{i}] must be an object with string 'role' and 'content'"
    for i, m in enumerate(messages):
        if m["role"] == "user":
            nxt = messages[i + 1] if i + 1 < len(messages) else None
            if nxt is None or nxt["role"] != "assistant":
                return "the first user message is not followed by an assistant message"
            if not m["content"].strip() or not nxt["content"].strip():
                return "the first user/assistant exchange has empty content"
            return m["content"], nxt["content"]
    return "no user message"


def _validate(row: dict) -> str | None:
    shape = detect_shape(row)
    if shape is None:
        keys = ", ".join(sorted(row)) or "none"
        return f"unrecognised row shape (keys: {keys}); expected one of {', '.join(SHAPES)}"
    if shape == "messages":
        if not isinstance(row["messages"], list):
            return "field 'messages' must be a list"
        turn = _first_turn(row["messages"])
        return turn if isinstance(turn, str) else None
    if shape == "selfinstruct":
        inst = row["instances"]
        if not isinstance(inst, list) or not inst or not isinstance(inst[0], dict):
            return "field 'instances' must be a non-empty list of objects"
        return _nonempty_str(row, "instruction") or _nonempty_str(inst[0], "output")
    fields = {
        "prompt_response": ("prompt", "response"),
        "alpaca": ("instruction", "output"),
        "ranked": ("question", "answer"),
        "scored": ("prompt_text", "response_text"),
    }[shape]
    for key in fields:
        if err := _nonempty_str(row, key):
            return err
    if shape == "alpaca" and row.get("input") not in (None, "") and not isinstance(row.get("input"), str):
        return "field 'input' must be a string"
    if shape == "ranked":
        return _number(row, "rank")
    # Replies that no human scored are no evidence either way: a None score is allowed and the reply ignored.
    if shape == "scored" and row.get("quality_score") is not None:
        return _number(row, "quality_score")
    return None


def _join_input(instruction: str, inp: str | None) -> str:
    return f"{instruction.strip()}\n\n{inp.strip()}" if inp and inp.strip() else instruction.strip()


def read_seed_rows(path: str | os.PathLike, on_error: str = "raise") -> tuple[list[dict], list[str]]:
    """Validated rows of a seed file and the messages of skipped bad rows (`file:line: problem`)."""
    return read_jsonl(path, on_error=on_error, validate=_validate)


def read_ranked(path: str | os.PathLike, on_error: str = "raise") -> tuple[list[RatedPrompt], list[str]]:
    """Prompts with their human-ranked/scored replies, best first (ranked and scored shapes only)."""
    rows, errors = read_seed_rows(path, on_error)
    groups: dict[str, list[RatedReply]] = {}
    for row in rows:
        shape = detect_shape(row)
        if shape == "ranked":
            prompt, reply = row["question"], RatedReply(row["answer"], -float(row["rank"]))
        elif shape == "scored" and row.get("quality_score") is not None:
            prompt, reply = row["prompt_text"], RatedReply(row["response_text"], float(row["quality_score"]))
        else:
            continue
        groups.setdefault(prompt.strip(), []).append(reply)
    # sorted() is stable, so replies of equal quality keep file order and "first on ties" holds.
    out = [RatedPrompt(p, tuple(sorted(r, key=lambda x: -x.quality))) for p, r in groups.items()]
    return out, errors


def read_ift(path: str | os.PathLike, on_error: str = "raise") -> tuple[list[IFTExample], list[str]]:
    """IFT examples from one JSONL file of any recognised shape; ranked/scored prompts give their best reply."""
    rows, errors = read_seed_rows(path, on_error)
    out: list[IFTExample] = []
    ranked_seen = False
    for row in rows:
        shape = detect_shape(row)
        if shape == "prompt_response":
            out.append(IFTExample(row["prompt"].strip(), row["response"].strip()))
        elif shape == "alpaca":
            out.append(IFTExample(_join_input(row["instruction"], row.get("input")), row["output"].strip()))
        elif shape == "selfinstruct":
            inst = row["instances"][0]
            out.append(IFTExample(_join_input(row["instruction"], inst.get("input")), inst["output"].strip()))
        elif shape == "messages":
            user, assistant = _first_turn(row["messages"])  # validated above
            out.append(IFTExample(user.strip(), assistant.strip()))
        else:
            ranked_seen = True
    if ranked_seen:
        ranked, _ = read_ranked(path, on_error="skip")  # rows already validated; errors already reported
        out.extend(IFTExample(r.prompt, r.replies[0].text.strip()) for r in ranked if r.replies)
    return out, errors


def load_ift(
    paths: Sequence[str | os.PathLike], on_error: str = "raise", dedupe: bool = True
) -> tuple[list[IFTExample], list[str]]:
    """IFT examples from several files; with `dedupe`, the first example of each prompt wins."""
    out: list[IFTExample] = []
    errors: list[str] = []
    seen: set[str] = set()
    for path in paths:
        examples, errs = read_ift(path, on_error)
        errors.extend(errs)
        for ex in examples:
            if dedupe:
                if ex.prompt in seen:
                    continue
                seen.add(ex.prompt)
            out.append(ex)
    if not out:
        raise DataError(f"no IFT examples in {', '.join(map(str, paths)) or '(no files)'}")
    return out, errors


def oasst_seed_paths(data_dir: str | os.PathLike) -> list[Path]:
    """The OpenAssistant seed files of `shared/data/seed` that exist under `data_dir`."""
    names = ("oasst2_en_ranked_andriswillow.jsonl", "oasst2_en_quality_raulc0399.jsonl")
    return [p for p in (Path(data_dir) / n for n in names) if p.is_file()]
