"""Benchmark: fused linear cross-entropy (LM head + CE) — time, peak memory, TFLOP/s — against eager torch.

    python bench/bench_fused_linear_cross_entropy.py                 # CPU: chunked vs eager (the issue's CPU goal)
    python bench/bench_fused_linear_cross_entropy.py --preset cuda   # H100: Triton vs eager, compiled chunking,
                                                                     # Liger and Cut Cross-Entropy when importable

Candidates (each skipped cleanly when it cannot run here):
  eager      F.cross_entropy((h @ Wᵀ).float(), y): materialises the (N, V) logits (what HF models do)
  chunked    srlm_kernels impl="chunked" (the CPU path)
  triton     srlm_kernels impl="triton" (CUDA only: the interpreter is not a benchmark)
  triton_filtered  the same with grad_filter_eps=2⁻¹² (backward tiles of negligible gradient skipped; CUDA)
  triton_lowmem    the same with low_memory=True (dh in a second pass over row slices: no fp32 (N, D) dh; CUDA)
  compiled   a torch.compile'd per-chunk loss-and-gradient step (the torchtune/Liger-style baseline; CUDA, or --compile)
  liger      liger_kernel's LigerFusedLinearCrossEntropyFunction
  cce        cut_cross_entropy.linear_cross_entropy
TFLOP/s count 2·N·D·V per matmul pass: 1 pass forward, 3 for forward + backward (recomputation not counted).
Peak memory is the extra memory above the inputs (gradients included); on CPU it is measured in a fresh
subprocess per candidate (peak RSS growth). Results: bench/results/fused_linear_cross_entropy-<device>.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    kernel_bench_parser,
    kernel_run,
    measure_candidates,
    print_table,
    report_rss_growth,
    rss_mark,
    write_kernel_results,
)

from srlm_kernels import fused_linear_cross_entropy

PRESETS = {
    # (N, D, V): the CPU goal shape, and a small one
    "cpu": [(8192, 256, 32000), (2048, 256, 4096)],
    # the Llama-3-8B head at 4k–32k tokens, and a small head
    "cuda": [
        (4096, 4096, 128256),
        (8192, 4096, 128256),
        (16384, 4096, 128256),
        (32768, 4096, 128256),
        (8192, 2048, 32000),
    ],
}
# The order runs are measured in: the goal's comparisons first, so a run stopped by a time limit keeps those.
CANDIDATES = ("eager", "triton", "liger", "cce", "compiled", "triton_filtered", "triton_lowmem", "chunked")
# Backward-only variants of `triton`: their forward is triton's own, so the forward pass does not time them again.
BACKWARD_VARIANTS = ("triton_filtered", "triton_lowmem")
FILTER_EPS = 2.0**-12  # below bf16's resolution of a gradient of order 1 (2⁻⁸)
COMPILED_CHUNK_ROWS = 1024


def _eager(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((h @ w.T).float(), y)


_compiled_step: Callable | None = None


def _chunk_step(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, scale: float):
    """Loss, dh and dW of one row chunk, written for torch.compile to fuse the softmax-gradient epilogue."""
    logits = (h @ w.T).float()  # (C, V)
    lse = logits.logsumexp(-1)
    loss = (lse - logits.gather(1, y[:, None]).squeeze(1)).sum() * scale
    grad = torch.softmax(logits, -1).scatter_add(1, y[:, None], -torch.ones_like(lse)[:, None]) * scale
    grad = grad.to(h.dtype)
    return loss, grad @ w, grad.T @ h


class _CompiledChunkedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, y):
        global _compiled_step
        if _compiled_step is None:
            _compiled_step = torch.compile(_chunk_step, dynamic=False)
        n = h.shape[0]
        dh = torch.empty_like(h)
        dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        for a in range(0, n, COMPILED_CHUNK_ROWS):
            lc, dhc, dwc = _compiled_step(
                h[a : a + COMPILED_CHUNK_ROWS], w, y[a : a + COMPILED_CHUNK_ROWS], 1.0 / n
            )
            loss += lc
            dh[a : a + COMPILED_CHUNK_ROWS] = dhc
            dw += dwc
        ctx.save_for_backward(dh, dw.to(w.dtype))
        return loss

    @staticmethod
    def backward(ctx, go):
        dh, dw = ctx.saved_tensors
        return dh * go.to(dh.dtype), dw * go.to(dw.dtype), None


def _loss_fn(name: str, device: torch.device) -> Callable | None:
    """The candidate's loss(h, w, y) → scalar mean CE, or None when it cannot run here."""
    if name == "eager":
        return _eager
    if name == "chunked":
        return lambda h, w, y: fused_linear_cross_entropy(h, w, y, impl="chunked")
    if name == "triton":
        return (
            (lambda h, w, y: fused_linear_cross_entropy(h, w, y, impl="triton"))
            if device.type == "cuda"
            else None
        )
    if name == "triton_filtered":
        if device.type != "cuda":
            return None
        return lambda h, w, y: fused_linear_cross_entropy(h, w, y, impl="triton", grad_filter_eps=FILTER_EPS)
    if name == "triton_lowmem":
        if device.type != "cuda":
            return None
        return lambda h, w, y: fused_linear_cross_entropy(h, w, y, impl="triton", low_memory=True)
    if name == "compiled":
        return _CompiledChunkedCE.apply
    if name == "liger":
        try:
            from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction
        except ImportError:
            return None

        def liger(h, w, y):
            out = LigerFusedLinearCrossEntropyFunction.apply(h, w, y)
            return out[0] if isinstance(out, tuple) else out  # 0.8.x returns (loss, z_loss, accuracy, …)

        return liger
    if name == "cce":
        try:
            from cut_cross_entropy import linear_cross_entropy
        except ImportError:
            return None
        return (lambda h, w, y: linear_cross_entropy(h, w, y)) if device.type == "cuda" else None
    raise ValueError(name)


def make_inputs(n: int, d: int, v: int, dtype: torch.dtype, device: torch.device):
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(n, d, device=device, dtype=dtype, generator=gen).requires_grad_()
    w = (torch.randn(v, d, device=device, dtype=dtype, generator=gen) / d**0.5).requires_grad_()
    y = torch.randint(0, v, (n,), device=device, generator=gen)
    return h, w, y


def _runner(fn: Callable, h, w, y, passes: str) -> Callable[[], None]:
    def fwd() -> None:
        with torch.no_grad():
            fn(h, w, y)

    def fwd_bwd() -> None:
        h.grad = w.grad = None
        fn(h, w, y).backward()

    return fwd if passes == "fwd" else fwd_bwd


def child_memory(args: argparse.Namespace) -> None:
    """Subprocess entry: build inputs, then report the RSS growth of one run of one candidate."""
    device = torch.device("cpu")
    n, d, v = args.child_shape
    h, w, y = make_inputs(n, d, v, getattr(torch, args.dtype), device)
    run = _runner(_loss_fn(args.child, device), h, w, y, args.child_passes)
    base = rss_mark()
    run()
    report_rss_growth(base)


def main() -> None:
    ap = kernel_bench_parser(__doc__, PRESETS, CANDIDATES, ("N", "D", "V"))
    ap.add_argument("--compile", action="store_true", help="also run the torch.compile'd baseline on CPU")
    args = ap.parse_args()
    if args.child:
        child_memory(args)
        return
    run_cfg = kernel_run(args, PRESETS)
    device, cuda, dtype, shapes = run_cfg.device, run_cfg.cuda, run_cfg.dtype, run_cfg.shapes
    candidates = [c for c in args.candidates if c != "compiled" or cuda or args.compile]

    rows = []
    for n, d, v in shapes:
        fns = {}
        for name in candidates:
            fn = _loss_fn(name, device)
            if fn is None:
                print(f"skip {name}: not available on {device.type}", file=sys.stderr)
            else:
                fns[name] = fn
        h, w, y = make_inputs(n, d, v, dtype, device)

        def clear_grads(h=h, w=w) -> None:
            h.grad = w.grad = None

        for passes in ("fwd+bwd", "fwd"):  # the goal's pass first
            base = {"N": n, "D": d, "V": v, "dtype": args.dtype, "pass": passes}
            child = ["--child-shape", str(n), str(d), str(v), "--child-passes", passes, "--dtype", args.dtype]
            runs = {
                name: _runner(fn, h, w, y, passes)
                for name, fn in fns.items()
                if passes == "fwd+bwd" or name not in BACKWARD_VARIANTS
            }
            measured = measure_candidates(
                runs,
                base,
                run_cfg,
                reset=clear_grads,
                child_args=lambda name, child=child: ["--child", name, *child],
                script=__file__,
                tolerate=("liger", "cce"),  # optional packages: an API change there must not stop the run
            )
            rows += measured
            for row in measured:
                if "ms" not in row:
                    continue
                flops = 2 * n * d * v * (1 if passes == "fwd" else 3)
                row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
                grads_mb = (n * d + v * d) * torch.finfo(dtype).bits / 8 / 2**20
                row["peak_over_dh_dw"] = row["peak_mb"] / grads_mb if passes == "fwd+bwd" else None
            write_kernel_results(args, "fused_linear_cross_entropy", run_cfg, rows)
        del h, w, y
    _add_ratios(rows)
    print_table(
        rows,
        [
            "N",
            "D",
            "V",
            "impl",
            "pass",
            "ms",
            "peak_mb",
            "tflops",
            "peak_over_dh_dw",
            "time_vs_eager",
            "mem_vs_eager",
        ],
    )
    path = write_kernel_results(args, "fused_linear_cross_entropy", run_cfg, rows)
    if path is not None:
        print(f"wrote {path}")


def _add_ratios(rows: list[dict]) -> None:
    """time and peak memory of each candidate relative to eager at the same shape and pass."""
    eager = {(r["N"], r["D"], r["V"], r["pass"]): r for r in rows if r["impl"] == "eager" and "ms" in r}
    for r in rows:
        e = eager.get((r["N"], r["D"], r["V"], r["pass"]))
        if e and "ms" in r:
            r["time_vs_eager"] = r["ms"] / e["ms"]
            r["mem_vs_eager"] = r["peak_mb"] / e["peak_mb"] if e["peak_mb"] > 0 else None


if __name__ == "__main__":
    main()
