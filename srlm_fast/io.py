"""Run-directory I/O: atomic writes, reading that names the file and line of bad input, safe outputs, locks.

Every artifact of a run is written to a temporary name, fsynced and renamed, so a process killed at
any moment leaves either the old file or the complete new one, never half of one.

Reading decodes bytes here, never in a text-mode `open`: a line that is not UTF-8 is an error naming
`file:line:column` (or a skipped line in skip mode), not a `UnicodeDecodeError` from deep inside.

Outputs are checked before any work (`check_output`): an existing path is only replaced when it is the
same kind of artifact and the caller says `overwrite`, an output may not be one of the inputs (or a
directory holding one), and a parent that is a file or cannot be written is refused up front. A run
directory is owned by one process at a time (`RunLock`).

One module on purpose (about 500 lines): its parts share the error types and the path checks, and a caller
that writes an artifact needs most of them together.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import socket
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the problem."""


class OutputError(ValueError):
    """An output path this command must not write; the message names the path and why."""


class LockedError(OutputError):
    """A run directory that another live process is writing."""


# ---- writing -------------------------------------------------------------------------------------


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on a clean exit fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the entries of `directory` (a rename into it) durable."""
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


_fsync_dir = fsync_dir  # the old private name


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


# ---- reading: bytes are decoded here ----------------------------------------------------------------


def _utf8_problem(err: UnicodeDecodeError, line: bytes) -> str:
    bad = line[err.start : err.start + 1]
    column = len(line[: err.start].decode("utf-8", errors="replace")) + 1
    return f"not valid UTF-8 (byte 0x{bad.hex()} at column {column})"


def decode_text(data: bytes, path: str | os.PathLike) -> str:
    """`data` (a whole file) as UTF-8 text; undecodable bytes are a `DataError` naming `path:line:column`.
    A leading byte-order mark is dropped."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line_no = data.count(b"\n", 0, e.start) + 1
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        line = data[start : end if end >= 0 else len(data)]
        e2 = UnicodeDecodeError("utf-8", line, e.start - start, e.end - start, e.reason)
        raise DataError(f"{path}:{line_no}: {_utf8_problem(e2, line)}") from None


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a file (`.gz` decompressed); a missing file, a directory or a bad gzip stream is one
    clear error naming the path."""
    path = _existing_file(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, PermissionError):
            raise
        raise DataError(f"{path}: cannot read ({e})") from None


def read_text(path: str | os.PathLike) -> str:
    """A whole text file (`.gz` too), decoded as UTF-8 with `file:line` errors (see `decode_text`)."""
    return decode_text(read_bytes(path), path)


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, problem) for every line of a text file (`.gz` too), read as bytes.

    `text` is the decoded line without its newline, or None when the line is not UTF-8; then `problem`
    says why (the caller raises or skips). Lines end at `\\n` only (as `wc -l` counts them); a byte-order
    mark on the first line is dropped. A truncated or corrupt gzip stream is a `DataError` naming the line
    after which it broke.
    """
    path = _existing_file(path)
    lineno = 0
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                raw = raw.rstrip(b"\n").rstrip(b"\r")
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield lineno, raw.decode("utf-8"), None
                except UnicodeDecodeError as e:
                    yield lineno, None, _utf8_problem(e, raw)
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, PermissionError):
            raise
        raise DataError(f"{path}: cannot read after line {lineno} ({e})") from None


def read_jsonl_numbered(
    path: str | os.PathLike,
    *,
    required: Iterable[str] = (),
    on_error: str = "raise",
    validate: Callable[[dict], str | None] | None = None,
) -> tuple[list[tuple[int, dict]], list[str]]:
    """Like `read_jsonl`, with the 1-based line number of every row: ([(line, row)], error messages)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    required = tuple(required)
    rows: list[tuple[int, dict]] = []
    errors: list[str] = []
    for lineno, line, problem in iter_lines(path):
        if problem is None:
            assert line is not None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problem = f"not valid JSON ({e.msg} at column {e.colno})"
            except RecursionError:
                problem = "not valid JSON (nested too deeply)"
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
            rows.append((lineno, row))
            continue
        message = f"{path}:{lineno}: {problem}"
        if on_error == "raise":
            raise DataError(message)
        errors.append(message)
    return rows, errors


def read_jsonl(
    path: str | os.PathLike,
    *,
    required: Iterable[str] = (),
    on_error: str = "raise",
    validate: Callable[[dict], str | None] | None = None,
) -> tuple[list[dict], list[str]]:
    """Read a JSONL file (`.gz` too) into a list of dicts.

    Blank lines are ignored. A line that is not UTF-8, not a JSON object, lacks a `required` field, or
    fails `validate` (which returns an error string or None) is an error naming `path:line`. With
    `on_error="raise"` the first one raises `DataError`; with `on_error="skip"` bad lines are skipped and
    their messages returned as the second element, so callers can count and log them.
    """
    rows, errors = read_jsonl_numbered(path, required=required, on_error=on_error, validate=validate)
    return [row for _, row in rows], errors


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, with `file:line` errors for bad bytes and bad JSON."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON (nested too deeply)") from None


# ---- fingerprints (provenance of reused artifacts) -----------------------------------------------


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike, *, full_below: int = 256 << 20, samples: int = 64) -> str:
    """A content fingerprint of one file: its SHA-256 when under `full_below` bytes, else the SHA-256 of
    its size, its first and last MiB and `samples` evenly spaced 64 KiB blocks (a model's weights are
    fingerprinted in milliseconds; retraining changes every block, so a changed model is caught)."""
    size = os.path.getsize(path)
    if size < full_below:
        return "sha256:" + file_sha256(path)
    h = hashlib.sha256(str(size).encode())
    block = 64 << 10
    offsets = [0, max(0, size - (1 << 20))] + [i * (size - block) // (samples - 1) for i in range(samples)]
    with open(path, "rb") as f:
        for i, off in enumerate(offsets):
            f.seek(off)
            h.update(f.read((1 << 20) if i < 2 else block))
    return "sampled-sha256:" + h.hexdigest()


def directory_fingerprint(directory: str | os.PathLike, patterns: Sequence[str]) -> str:
    """One fingerprint of the files of `directory` matching `patterns` (names and contents)."""
    directory = Path(directory)
    h = hashlib.sha256()
    files = sorted({p for pat in patterns for p in directory.glob(pat) if p.is_file()})
    for p in files:
        h.update(p.name.encode() + b"\0" + file_fingerprint(p).encode() + b"\0")
    return h.hexdigest()


# ---- outputs ---------------------------------------------------------------------------------------


def _first_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p):
        if p.parent == p:
            break
        p = p.parent
    return p


def check_writable_location(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output whose location cannot be written: an ancestor that is a file, or
    a directory where no file can be created (read-only, no permission). Creates nothing."""
    path = Path(path).absolute()
    anc = _first_existing(path.parent)
    if anc.exists() and not anc.is_dir():
        raise OutputError(f"{path}: cannot be created: {anc} is a file, not a directory")
    try:  # os.access says yes to root on a read-only filesystem: probe with a real (removed) file
        fd, probe = tempfile.mkstemp(prefix=".srlm-probe-", dir=anc)
    except OSError as e:
        reason = "read-only filesystem" if e.errno == errno.EROFS else (e.strerror or str(e))
        raise OutputError(f"{path}: cannot write in {anc} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(
    path: str | os.PathLike,
    *,
    kind: str,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    is_kind: Callable[[Path], bool] | None = None,
    directory: bool = False,
    flag: str = "--overwrite",
) -> Path:
    """Check, before any work, that writing the artifact `kind` (a file, or a directory if `directory`) at
    `path` loses nothing. Refused, with a message naming the path:

    * an output that is one of `inputs`, or (a directory output) one that contains an input;
    * a location that cannot be written (see `check_writable_location`);
    * an existing path of the wrong type (a file where a directory goes, or the reverse);
    * an existing path that is not a `kind` (`is_kind` says; an empty directory is always fine);
    * an existing `kind` without `overwrite` (the message names `flag`).
    Returns `path` as a `Path`.
    """
    path = Path(path)
    target = path.resolve()
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        src = Path(inp).resolve()
        if target == src or (directory and _within(src, target)):
            what = "is" if target == src else "contains"
            raise OutputError(
                f"{path}: the output {what} an input of this command ({inp}); choose another output"
            )
    check_writable_location(path)
    if not os.path.lexists(path):
        return path
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{path}: is a dangling symbolic link; refusing to write through it")
    if directory:
        if not path.is_dir():
            raise OutputError(f"{path}: exists and is not a directory; refusing to replace it with a {kind}")
        if not any(path.iterdir()):
            return path
    elif path.is_dir():
        raise OutputError(f"{path}: is a directory; refusing to replace it with a {kind}")
    if is_kind is not None and not is_kind(path):
        raise OutputError(
            f"{path}: exists and is not a {kind}; refusing to replace it (choose another output)"
        )
    if not overwrite:
        raise OutputError(f"{path}: a {kind} already exists there; pass {flag} to replace it")
    return path


def looks_like_jsonl(path: Path) -> bool:
    """A file whose first non-blank line is a JSON object (or an empty file): something a JSONL writer made."""
    try:
        for _, line, problem in iter_lines(path):
            if problem is not None:
                return False
            if line is not None and line.strip():
                return isinstance(json.loads(line), dict)
    except (ValueError, OSError):
        return False
    return True


def looks_like_json(path: Path) -> bool:
    try:
        read_json(path)
    except (ValueError, OSError):
        return False
    return True


# ---- one writer per run directory ------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory: `<dir>/.lock` holds the owner's pid and host.

    The lock is an `flock` on that file, so it ends with its process however it ends (a SIGKILLed owner
    leaves a stale file, never a stale lock: the next process takes it over and says so). Where the
    filesystem has no `flock`, the pid in the file decides (a dead pid on this host is stale). A second
    process refuses with a `LockedError` naming the owner.
    """

    def __init__(self, directory: str | os.PathLike, *, what: str = "run directory") -> None:
        self.dir = Path(directory)
        self.path = self.dir / ".lock"
        self.what = what
        self._fd: int | None = None
        self.took_over: str | None = None  # the stale owner we replaced, if any

    @staticmethod
    def _owner_text() -> str:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname()})

    def _read_owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_bytes().decode("utf-8", errors="replace") or "{}")
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _refuse(self, owner: dict) -> LockedError:
        who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}"
        return LockedError(
            f"{self.dir}: this {self.what} is in use by {who} (lock file {self.path}); wait for it to finish, "
            f"or use another directory. If that process is gone, remove {self.path}"
        )

    def acquire(self) -> RunLock:
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = self._read_owner()
                os.close(fd)
                raise self._refuse(owner) from None
            except OSError as e:  # no flock here (some network filesystems): the pid decides
                os.close(fd)
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                return self._acquire_by_pid()
            # The file may have been unlinked by its releasing owner between our open and flock.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = self._read_owner()
            if previous.get("pid") not in (None, os.getpid()):
                self.took_over = f"process {previous.get('pid')} on {previous.get('host', '?')}"
            os.ftruncate(fd, 0)
            os.write(fd, self._owner_text().encode())
            os.fsync(fd)
            self._fd = fd
            return self
        raise LockedError(f"{self.path}: could not take the lock (it keeps changing)")

    def _acquire_by_pid(self) -> RunLock:
        owner = self._read_owner()
        host, pid = owner.get("host"), owner.get("pid")
        if isinstance(pid, int) and pid != os.getpid():
            if host != socket.gethostname() or _pid_alive(pid):
                raise self._refuse(owner)
            self.took_over = f"process {pid} on {host}"
        self.path.write_text(self._owner_text())
        self._fd = -1
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
