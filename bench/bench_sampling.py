"""Per-step cost of token sampling: native op vs the pure-torch path vs a full-sort reference.

    python bench/bench_sampling.py [--device auto|cpu|cuda] [--iters 5] [--quick]

For every batch B in {1, 16, 64} and vocabulary V in {4096, 32000, 128256}, times one decode step's
`sample()` call (per-row temperature/top-k/top-p, counter-based uniforms) for:
  native  the C++ (CPU) / CUDA op from csrc/ (no full sort of the vocabulary),
  torch   srlm_fast.engine.sampling's pure-torch path (top-k by torch.topk, top-p by a growing sorted head),
  sorted  the plain reference that sorts the whole vocabulary (HF-style `sample_sorted`).
Settings: the paper's generation sampling (T=0.7, top-p 0.9), top-k 50 with top-p 0.9, and plain T=1.
Logits are N(0, 2.5^2) per token: a moderately flat distribution, where top-p keeps hundreds to thousands
of tokens at V=128k (harder for the native top-p search than a typical peaked LM distribution).
CPU timings use one thread per implementation by default (--threads). Prints a table and writes
bench/results/bench_sampling-<device>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # bench/common.py: device names, versions, timing, JSON

from srlm_fast.engine import native
from srlm_fast.engine.sampling import sample, sample_sorted

BATCHES = (1, 16, 64)
VOCABS = (4096, 32000, 128256)
SETTINGS = {  # name: (temperature, top_k, top_p)
    "T0.7-p0.9": (0.7, 0, 0.9),
    "T0.7-k50-p0.9": (0.7, 50, 0.9),
    "T1.0": (1.0, 0, 1.0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="B=16, V=32000 only (smoke run)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for every implementation (default 1: on a shared 2-core machine OpenMP barriers "
        "under load make multi-threaded timings meaningless; 0 = torch's default)",
    )
    args = ap.parse_args()
    device = common.pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    have_native = native.available() and (device.type == "cpu" or native.has_cuda_kernel())
    print(f"device: {common.device_name(device)}; native: {native.build_info()}")
    batches, vocabs = ((16,), (32000,)) if args.quick else (BATCHES, VOCABS)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for v in vocabs:
        for b in batches:
            logits = (torch.randn(b, v, generator=gen) * 2.5).to(device)
            seeds = torch.randint(0, 2**62, (b,), generator=gen).to(device)
            for setting, (t, k, p) in SETTINGS.items():
                params = dict(
                    temperature=torch.full((b,), t, device=device),
                    top_k=torch.full((b,), k, dtype=torch.long, device=device),
                    top_p=torch.full((b,), p, device=device),
                    seeds=seeds,
                )
                step = iter(range(10**9))  # a new counter each call, as in decoding

                def run(impl: str, params=params, logits=logits, step=step):
                    s = next(step)
                    if impl == "sorted":
                        return sample_sorted(logits, **params, steps=s)
                    return sample(logits, **params, steps=s, impl=impl)

                row = {"B": b, "V": v, "setting": setting}
                for impl in ("native", "torch", "sorted"):
                    if impl == "native" and not have_native:
                        row[f"{impl}_ms"] = None
                        continue
                    row[f"{impl}_ms"] = common.time_ms(lambda impl=impl: run(impl), device, iters=args.iters)
                nat = row["native_ms"]
                row["native_vs_sorted"] = row["sorted_ms"] / nat if nat else None
                row["native_vs_torch"] = row["torch_ms"] / nat if nat else None
                rows.append(row)
                print(
                    f"  B={b:3d} V={v:6d} {setting:14s} " + " ".join(f"{r}={row[r]}" for r in row if "_" in r)
                )

    cols = ["B", "V", "setting", "native_ms", "torch_ms", "sorted_ms", "native_vs_torch", "native_vs_sorted"]
    print()
    common.print_table(rows, cols)
    path = common.write_results(
        "bench_sampling",
        device,
        {
            "command": "python bench/bench_sampling.py " + " ".join(sys.argv[1:]),
            "what": "median ms per sample() call (one decode step) over "
            f"{args.iters} calls; logits N(0, 2.5^2); per-row params identical across rows",
            "native": native.build_info(),
            "load_average_at_end": list(os.getloadavg()),
            "shapes": {"B": list(batches), "V": list(vocabs), "settings": SETTINGS},
            "rows": rows,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
