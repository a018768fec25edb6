"""Shared helpers for the microbenchmarks: device description, timing, peak memory, tables, JSON results.

Results go to `bench/results/<name>-<device>.json` with the date, device, library versions and shapes, so a
number is never separated from where it was measured. Timings are medians; CUDA timings use events.
Peak memory on CUDA comes from the caching allocator's statistics; on CPU there are no allocator
statistics, so `cpu_peak_rss_mb` runs the measured function in a fresh subprocess and reports the growth
of the process's peak resident set (an upper bound on the peak of live tensors).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """Human-readable device: the GPU's name, or the CPU model with the number of usable cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"model name\s*:\s*(.+)", f.read())
        if found:
            model = found.group(1).strip()
    except OSError:
        pass
    return f"{model} ({len(os.sched_getaffinity(0))} cores)"


def device_slug(device: torch.device) -> str:
    """Short file-name tag: 'cpu', or the GPU's name in lower case ('nvidia-h100-80gb-hbm3')."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    out["cuda"] = torch.version.cuda
    for mod in ("triton", "numpy", "liger_kernel", "cut_cross_entropy"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "installed")
        except Exception:  # optional packages: absent is a normal answer
            out[mod] = None
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], device: torch.device, warmup: int = 1, iters: int = 5) -> float:
    """Median wall time of fn() in milliseconds (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int = 1, iters: int = 5
) -> dict[str, float]:
    """Median ms of each fn, measured round-robin (a, b, a, b, …), so that a load change on a shared machine
    hits every candidate alike and their ratios stay honest."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            samples[name].append(time_ms(fn, device, warmup=0, iters=1))
    return {name: statistics.median(v) for name, v in samples.items()}


def cuda_peak_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak extra CUDA memory of fn() in MiB, above what was allocated before it ran."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def rss_mark() -> float:
    """Reset the peak-RSS mark (Linux clear_refs) and return the current RSS in MiB.

    Not `ru_maxrss`: Linux carries it across fork + exec, so a child would inherit its parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5 = reset the peak resident set size (VmHWM) to the current one
    except OSError:
        pass  # then VmHWM also holds the import-time peak: the growth reported may be too small
    return _proc_status_mb("VmRSS")


def cpu_peak_rss_mb(script: str | Path, args: Sequence[str]) -> float:
    """Run `python script *args` in a fresh process; it must call `rss_mark()` after its setup and
    `report_rss_growth(mark)` at the end, which prints 'PEAK_MB <float>'."""
    out = subprocess.run(
        [sys.executable, str(script), *args],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_MB "):
            return float(line.split()[1])
    raise RuntimeError(f"{script} {' '.join(args)} printed no PEAK_MB line:\n{out.stdout}\n{out.stderr}")


def report_rss_growth(mark_mb: float) -> None:
    """Call at the end of a memory-measuring child process: prints the peak RSS growth since `rss_mark()`."""
    print(f"PEAK_MB {_proc_status_mb('VmHWM') - mark_mb:.1f}", flush=True)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def write_results(
    name: str, device: torch.device, payload: dict[str, Any], out_dir: Path | None = None
) -> Path:
    """Write {date, device, versions, **payload} to <out_dir>/<name>-<device slug>.json and return the path."""
    out_dir = out_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{device_slug(device)}.json"
    doc = {
        "name": name,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "device": device_name(device),
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),
        **payload,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path


# ---- the shared command line of the kernel benchmarks ------------------------------------------------------


def kernel_bench_parser(
    doc: str, presets: dict, candidates: Sequence[str], shape_names: tuple[str, ...]
) -> argparse.ArgumentParser:
    """The options every kernel benchmark takes; `shape_names` are the dimensions of one `--shape`."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--preset", choices=sorted(presets), default=None, help="default: cuda on a GPU, else cpu"
    )
    n = len(shape_names)
    ap.add_argument(
        "--shape", type=int, nargs=n, action="append", metavar=shape_names, help="replaces the preset"
    )
    ap.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--candidates", nargs="+", default=list(candidates), choices=candidates)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--results-name",
        help="JSON name (default: the benchmark's); a second call with other candidates keeps both",
    )
    # A child process measures one candidate's CPU peak memory (see cpu_peak_rss_mb).
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-shape", type=int, nargs=n, help=argparse.SUPPRESS)
    ap.add_argument("--child-passes", help=argparse.SUPPRESS)
    return ap


def write_kernel_results(
    args: argparse.Namespace, name: str, run_cfg: KernelRun, rows: list[dict[str, Any]]
) -> Path | None:
    """A kernel benchmark's JSON (`--results-name` or `name`), unless `--no-write`; called after every pass too, so
    a run stopped by a time limit keeps what it measured."""
    if args.no_write:
        return None
    payload = {
        "shapes": [list(s) for s in run_cfg.shapes],
        "dtype": args.dtype,
        "iters": run_cfg.iters,
        "rows": rows,
    }
    return write_results(args.results_name or name, run_cfg.device, payload)


@dataclass
class KernelRun:
    device: torch.device
    cuda: bool
    dtype: torch.dtype
    shapes: list[tuple[int, ...]]
    iters: int


def kernel_run(args: argparse.Namespace, presets: dict) -> KernelRun:
    """Device, dtype (filled into args.dtype), shapes and iterations from the parsed options."""
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    shapes = (
        [tuple(s) for s in args.shape] if args.shape else presets[args.preset or ("cuda" if cuda else "cpu")]
    )
    return KernelRun(device, cuda, getattr(torch, args.dtype), shapes, args.iters or (10 if cuda else 3))


def measure_candidates(
    runs: dict[str, Callable[[], Any]],
    base: dict[str, Any],
    run_cfg: KernelRun,
    reset: Callable[[], None],
    child_args: Callable[[str], list[str]],
    script: str | Path,
    tolerate: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per candidate: median ms (interleaved) and peak MB, or the error that stopped it.

    Each run is warmed up once first (compiles; proves it fits in memory). Every row is printed as soon as its
    shape is measured (the table and JSON come only at the end). `reset` clears gradients between runs; on CPU
    the peak comes from a child process started as `script <child_args(name)>`. Candidates named in `tolerate`
    (optional third-party packages with another API) may fail with any error; others raise.
    """
    ok, failed = {}, {}
    for name, run in runs.items():
        try:
            run()
            ok[name] = run
        except torch.OutOfMemoryError:
            failed[name] = "out of memory"
            torch.cuda.empty_cache()
        except Exception as e:
            if name not in tolerate:
                raise
            failed[name] = f"{type(e).__name__}: {e}"[:200]
        reset()
    times = time_interleaved(ok, run_cfg.device, warmup=0, iters=run_cfg.iters)
    rows = []
    for name in runs:
        row = {**base, "impl": name}
        rows.append(row)
        if name in failed:
            row["error"] = failed[name]
            continue
        row["ms"] = times[name]
        if run_cfg.cuda:
            row["peak_mb"] = cuda_peak_mb(ok[name], run_cfg.device)
            reset()
        else:
            row["peak_mb"] = cpu_peak_rss_mb(script, child_args(name))
    for row in rows:  # as measured: a benchmark stopped by a time limit still leaves these in its log
        print("measured", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return rows
