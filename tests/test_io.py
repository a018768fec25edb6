"""io: byte-level reading with file:line errors, output checks, the run-directory lock."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

from srlm_fast.io import (
    DataError,
    LockedError,
    OutputError,
    RunLock,
    check_output,
    looks_like_jsonl,
    read_json,
    read_jsonl,
    read_jsonl_numbered,
    read_text,
)


def test_undecodable_bytes_name_file_line_and_column_and_are_skipped_in_skip_mode(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_bytes(b'{"a": 1}\n{"a": "caf\xc3\xa9 \xff"}\n\n{"a": 3}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: not valid UTF-8 \(byte 0xff at column 13\)"):
        read_jsonl(f)
    rows, errors = read_jsonl_numbered(f, on_error="skip")
    assert rows == [(1, {"a": 1}), (4, {"a": 3})]
    assert len(errors) == 1 and errors[0].startswith(f"{f}:2: not valid UTF-8")
    g = tmp_path / "x.jsonl.gz"
    g.write_bytes(gzip.compress(f.read_bytes()))
    assert read_jsonl(g, on_error="skip")[0] == [{"a": 1}, {"a": 3}]
    t = tmp_path / "t.json"
    t.write_bytes(b'{\n "a": 1,\n "b": "\xfe"\n}')
    with pytest.raises(DataError, match=r"t\.json:3: not valid UTF-8"):
        read_json(t)
    t.write_bytes(b"\xef\xbb\xbf" + b'{"bom": true}')  # a byte-order mark is not an error
    assert read_json(t) == {"bom": True} and read_text(t).startswith("{")


def test_check_output_refuses_what_would_lose_something(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"a": 1}\n')
    out = tmp_path / "out.jsonl"
    assert check_output(out, kind="JSONL file") == out  # new: fine, nothing created
    assert not out.exists()
    with pytest.raises(OutputError, match="is an input"):
        check_output(inp, kind="JSONL file", overwrite=True, inputs=[inp])
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_output(inp, kind="JSONL file", is_kind=looks_like_jsonl)
    assert check_output(inp, kind="JSONL file", overwrite=True, is_kind=looks_like_jsonl) == inp
    (tmp_path / "photo.bin").write_bytes(b"\x89PNG")
    with pytest.raises(OutputError, match="is not a JSONL file"):
        check_output(tmp_path / "photo.bin", kind="JSONL file", overwrite=True, is_kind=looks_like_jsonl)
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output(inp / "sub" / "x.jsonl", kind="JSONL file")
    with pytest.raises(OutputError, match="contains an input"):
        check_output(tmp_path, kind="checkpoint", directory=True, overwrite=True, inputs=[inp])
    with pytest.raises(OutputError, match="cannot write in /proc"):
        check_output("/proc/no-such-dir/x.jsonl", kind="JSONL file")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    with pytest.raises(OutputError, match="dangling"):
        check_output(tmp_path / "dangling", kind="JSONL file", overwrite=True)


def test_run_lock_is_exclusive_and_a_stale_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as lock:
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(LockedError, match=rf"in use by process {os.getpid()}"):
            RunLock(run).acquire()
    assert not (run / ".lock").exists() and lock.took_over is None
    # A lock file left by a process that died (SIGKILL leaves the file, never the flock).
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (run / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": "elsewhere"}))
    lock = RunLock(run).acquire()
    assert lock.took_over == f"process {int(dead.stdout)} on elsewhere"
    lock.release()
