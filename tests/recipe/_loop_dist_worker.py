"""Worker for tests/recipe/test_loop_dist.py: `srlm run` under torchrun, recording every rename each rank makes.

Run as `torchrun --standalone --nproc_per_node=2 <this> WRITES_DIR run --name=... ...`. Every atomic write of the
project ends in `os.replace` (or `os.rename`), so the renames a rank makes are the files it commits: the test checks
that only rank 0 commits the run's artifacts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _recording(original, log: Path):
    def rename(src, dst, *args, **kwargs):
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.fspath(dst)}\n")
        return original(src, dst, *args, **kwargs)

    return rename


def main() -> None:
    writes = Path(sys.argv[1])
    log = writes / f"rank{os.environ['RANK']}.txt"
    os.replace = _recording(os.replace, log)
    os.rename = _recording(os.rename, log)
    from srlm_fast.cli import entry

    entry(sys.argv[2:])  # as the `srlm` script ends: under torchrun without interpreter teardown


if __name__ == "__main__":
    main()
