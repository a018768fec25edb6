"""Run-directory I/O: atomic writes and JSONL reading that names the file and line of bad input.

Every artifact of a run is written to a temporary name, fsynced and renamed, so a process killed at
any moment leaves either the old file or the complete new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the problem."""


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on a clean exit fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines, atomically. Returns the number of rows written."""
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(
    path: str | os.PathLike,
    *,
    required: Iterable[str] = (),
    on_error: str = "raise",
    validate: Callable[[dict], str | None] | None = None,
) -> tuple[list[dict], list[str]]:
    """Read a JSONL file into a list of dicts.

    Blank lines are ignored. A line that is not a JSON object, lacks a `required` field, or fails
    `validate` (which returns an error string or None) is an error naming `path:line`. With
    `on_error="raise"` the first one raises `DataError`; with `on_error="skip"` bad lines are
    skipped and their messages returned as the second element, so callers can count and log them.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    required = tuple(required)
    rows: list[dict] = []
    errors: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            problem = None
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problem = f"not valid JSON ({e.msg} at column {e.colno})"
            else:
                if not isinstance(row, dict):
                    problem = f"expected a JSON object, got {type(row).__name__}"
                else:
                    missing = [k for k in required if k not in row]
                    if missing:
                        problem = f"missing field(s) {', '.join(map(repr, missing))}"
                    elif validate is not None:
                        problem = validate(row)
            if problem is None:
                rows.append(row)
                continue
            message = f"{path}:{lineno}: {problem}"
            if on_error == "raise":
                raise DataError(message)
            errors.append(message)
    return rows, errors
