"""Tile sweep for the Triton linear cross-entropy kernels: forward and forward + backward time per tile config.

    python bench/tune_lce_tiles.py                         # CUDA only: the Llama-3-8B head at 8k tokens, bf16
    python bench/tune_lce_tiles.py --shape 4096 4096 128256 --grid full

The kernels' GPU tiles (`_gpu_blocks` in srlm_kernels/cross_entropy_triton.py) were chosen without a GPU: the largest
that compile for sm_90 without register spills. This sweep times candidates through the same public call the
trainer makes, one config at a time via `GPU_TILES_OVERRIDE` (BLOCK_N, BLOCK_V, BLOCK_D, num_warps, num_stages);
a config that does not compile or does not fit (shared memory) is recorded with its error. The winner belongs in
`_gpu_blocks`, with the JSON committed beside it. Each config compiles the forward and the backward kernel, so a
sweep costs ~10-20 s per config before any timing: the default grid is small on purpose.
Results: bench/results/lce_tiles-<device>.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

import srlm_kernels.cross_entropy_triton as tri
from srlm_kernels import fused_linear_cross_entropy

# (BLOCK_N, BLOCK_V, BLOCK_D, num_warps, num_stages): the current default first, then neighbours that compile for
# sm_90 without register spills and within the 227 KiB of shared memory (checked ahead of time with Triton 3.6's
# ptxas; 128×256 and 256×128 tiles spill in the backward, 64×256×64 needs 248 KiB there, 4 warps at 128×128×64 spill).
SMALL_GRID = [
    (128, 128, 64, 8, 3),
    (128, 128, 32, 8, 3),
    (128, 128, 32, 8, 4),
    (128, 128, 64, 8, 4),
    (128, 64, 64, 8, 4),
    (64, 128, 64, 4, 3),
    (64, 64, 64, 4, 4),
]


def full_grid() -> list[tuple[int, int, int, int, int]]:
    return list(itertools.product((64, 128, 256), (64, 128, 256), (32, 64), (4, 8), (2, 3, 4)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(8192, 4096, 128256), metavar=("N", "D", "V"))
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--grid", choices=("small", "full"), default="small")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("tune_lce_tiles: needs a CUDA device (the interpreter is not a benchmark); nothing measured")
        return
    device = torch.device("cuda")
    n, d, v = args.shape
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(n, d, device=device, dtype=dtype, generator=gen).requires_grad_()
    w = (torch.randn(v, d, device=device, dtype=dtype, generator=gen) / d**0.5).requires_grad_()
    y = torch.randint(0, v, (n,), device=device, generator=gen)

    def fwd() -> None:
        with torch.no_grad():
            fused_linear_cross_entropy(h, w, y, impl="triton")

    def fwd_bwd() -> None:
        h.grad = w.grad = None
        fused_linear_cross_entropy(h, w, y, impl="triton").backward()

    grid = SMALL_GRID if args.grid == "small" else full_grid()
    rows = []
    for tiles in grid:
        tri.GPU_TILES_OVERRIDE = tiles
        row = dict(zip(("block_n", "block_v", "block_d", "num_warps", "num_stages"), tiles))
        try:
            row["fwd_ms"] = common.time_ms(fwd, device, warmup=1, iters=args.iters)
            row["fwd_bwd_ms"] = common.time_ms(fwd_bwd, device, warmup=1, iters=args.iters)
            row["fwd_tflops"] = 2 * n * d * v / (row["fwd_ms"] * 1e-3) / 1e12
            row["fwd_bwd_tflops"] = 3 * 2 * n * d * v / (row["fwd_bwd_ms"] * 1e-3) / 1e12
        except Exception as e:  # out of shared memory, a compile failure: recorded, the sweep goes on
            row["error"] = f"{type(e).__name__}: {e}"[:200]
            torch.cuda.empty_cache()
        print("measured", row, flush=True)
        rows.append(row)
        if not args.no_write:  # after every config: a sweep stopped by a time limit keeps what it measured
            payload = {"shape": [n, d, v], "dtype": args.dtype, "iters": args.iters, "rows": rows}
            common.write_results("lce_tiles", device, payload)
    tri.GPU_TILES_OVERRIDE = None
    done = sorted((r for r in rows if "fwd_bwd_ms" in r), key=lambda r: r["fwd_bwd_ms"])
    common.print_table(done, ["block_n", "block_v", "block_d", "num_warps", "num_stages", "fwd_ms", "fwd_bwd_ms",
                              "fwd_tflops", "fwd_bwd_tflops"])  # fmt: skip


if __name__ == "__main__":
    main()
