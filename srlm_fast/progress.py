"""Progress of a long piece of work (requests generated, pairs scored), shown on rank 0.

On a terminal (stderr is a TTY) and with tqdm installed: a bar. Otherwise (logs of torchrun or a batch job,
captured test output) a carriage-return bar would fill the log with fragments, so a plain line goes to `stream`
(stdout by default, in order with the stage lines): `desc: done/total unit, rate, ETA`, at most every
`interval_s` seconds when work completes, and at least every `interval_s` seconds while it does not (a heartbeat
thread: one batch of a large model can take many minutes, and a silent log looks like a hung job).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    if not (seconds >= 0 and seconds != float("inf")):
        return "?"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """`add_total(n)` when n more items start, `update(n)` when n finish, `close()` at the end (or use `with`)."""

    def __init__(
        self,
        desc: str,
        *,
        enabled: bool = True,
        interval_s: float = 30.0,
        unit: str = "requests",
        stream: TextIO | None = None,
    ) -> None:
        self.desc, self.enabled, self.interval_s, self.unit = desc, enabled, interval_s, unit
        self.stream = stream
        self.total = self.done = 0
        # A muted scope counts but prints nothing: an enclosing scope while a nested one reports (Policy.progress).
        self.muted = False
        self.t0 = self._last = time.perf_counter()
        self._bar = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=0, desc=f"    {desc}", unit=unit[:3], leave=False, dynamic_ncols=True)
        if enabled and interval_s > 0:
            self._thread = threading.Thread(target=self._heartbeat, name=f"progress:{desc}", daemon=True)
            self._thread.start()

    def line(self) -> str:
        """`desc: done/total unit, elapsed, rate, ETA`, or `desc: elapsed` while no item is known yet (a scope
        whose work so far went to nested scopes: "0/0 requests, ETA ?" would read as a stall)."""
        elapsed = time.perf_counter() - self.t0
        if self.total == 0:
            return f"    {self.desc}: {format_duration(elapsed)} elapsed"
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (
            f"    {self.desc}: {self.done}/{self.total} {self.unit}, {format_duration(elapsed)} elapsed, "
            f"{rate:.2f}/s, ETA {format_duration(eta) if self.done else '?'}"
        )

    def _print(self) -> None:
        print(self.line(), file=self.stream or sys.stdout, flush=True)

    def add_total(self, n: int) -> None:
        """A call with `n` more items started (a stage may make several calls)."""
        with self._lock:
            self.total += n
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
                return
            now = time.perf_counter()
            if self.enabled and not self.muted and now - self._last >= self.interval_s:
                self._last = now
                self._print()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval_s)):
            with self._lock:
                now = time.perf_counter()
                if self.muted or now - self._last < self.interval_s:
                    continue
                self._last = now
                if self._bar is not None:
                    self._bar.refresh()  # the elapsed time moves even when no item finished
                else:
                    self._print()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
