"""Benchmark: fused DPO loss from policy hidden states — time and peak memory against the naive path.

    python bench/bench_fused_linear_dpo.py                  # CPU: chunked fused path vs naive
    python bench/bench_fused_linear_dpo.py --preset cuda    # H100: Triton fused path vs naive (and Liger's DPO)

Candidates (each skipped cleanly when it cannot run here):
  naive   logits = h @ Wᵀ materialised, fp32 log-softmax, gather, masked sum, sigmoid DPO (what TRL does)
  fused   srlm_kernels.fused_linear_dpo_loss, impl="auto" (Triton on CUDA, row chunks on CPU)
  liger   liger_kernel.chunked_loss.LigerFusedLinearDPOLoss, when importable
Batches: P pairs of T tokens (2P sequences, chosen first), the first quarter of each sequence a prompt
(ignore_index). The issue's goal: the fused loss faster than naive at ≤10% of its memory.
Results: bench/results/fused_linear_dpo-<device>.json.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch

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

from srlm_kernels import dpo_loss, fused_linear_dpo_loss

PRESETS = {
    # (P, T, D, V)
    "cpu": [(4, 1024, 256, 32000), (4, 256, 256, 4096)],
    "cuda": [(4, 2048, 4096, 128256), (8, 1024, 4096, 128256), (4, 1024, 2048, 32000)],
}
CANDIDATES = ("naive", "fused", "liger")
BETA = 0.1


def _naive(h, w, y, ref_c, ref_r):
    logp = torch.log_softmax((h @ w.T).float(), dim=-1)  # (2P, T, V)
    mask = y != -100
    tok = logp.gather(-1, torch.where(mask, y, 0)[..., None]).squeeze(-1) * mask  # (2P, T)
    seq = tok.sum(-1)
    p = seq.shape[0] // 2
    return dpo_loss(seq[:p], seq[p:], ref_c, ref_r, beta=BETA).loss


def _loss_fn(name: str, device: torch.device) -> Callable | None:
    if name == "naive":
        return _naive
    if name == "fused":
        return lambda h, w, y, rc, rr: fused_linear_dpo_loss(h, w, y, rc, rr, beta=BETA).loss
    if name == "liger":
        try:
            from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
        except ImportError:
            return None
        import inspect

        loss = LigerFusedLinearDPOLoss(beta=BETA, use_ref_model=False)
        # Newer releases take precomputed reference log-probs; older ones (0.8.x) have no such argument and
        # score against a zero reference, which costs the same: time and memory stay comparable.
        takes_ref = "ref_chosen_logps" in inspect.signature(loss.forward).parameters

        def run(h, w, y, rc, rr):
            kw = {"ref_chosen_logps": rc, "ref_rejected_logps": rr} if takes_ref else {}
            out = loss(w, h, y, **kw)
            return out[0] if isinstance(out, tuple) else out

        return run
    raise ValueError(name)


def make_inputs(p: int, t: int, d: int, v: int, dtype: torch.dtype, device: torch.device):
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(2 * p, t, d, device=device, dtype=dtype, generator=gen).requires_grad_()
    w = (torch.randn(v, d, device=device, dtype=dtype, generator=gen) / d**0.5).requires_grad_()
    y = torch.randint(0, v, (2 * p, t), device=device, generator=gen)
    y[:, : t // 4] = -100  # the prompt
    ref = -torch.rand(2, p, device=device, generator=gen) * 10 - 3 * t / 4 * math.log(v)  # ≈ uniform policy
    return h, w, y, ref[0], ref[1]


def _runner(fn: Callable, inputs, passes: str) -> Callable[[], None]:
    h, w = inputs[0], inputs[1]

    def fwd() -> None:
        with torch.no_grad():
            fn(*inputs)

    def fwd_bwd() -> None:
        h.grad = w.grad = None
        fn(*inputs).backward()

    return fwd if passes == "fwd" else fwd_bwd


def child_memory(args: argparse.Namespace) -> None:
    device = torch.device("cpu")
    inputs = make_inputs(*args.child_shape, getattr(torch, args.dtype), device)
    run = _runner(_loss_fn(args.child, device), inputs, args.child_passes)
    mark = rss_mark()
    run()
    report_rss_growth(mark)


def main() -> None:
    ap = kernel_bench_parser(__doc__, PRESETS, CANDIDATES, ("P", "T", "D", "V"))
    args = ap.parse_args()
    if args.child:
        child_memory(args)
        return
    run_cfg = kernel_run(args, PRESETS)
    device, dtype, shapes = run_cfg.device, run_cfg.dtype, run_cfg.shapes

    rows = []
    for p, t, d, v in shapes:
        fns = {}
        for name in args.candidates:
            fn = _loss_fn(name, device)
            if fn is None:
                print(f"skip {name}: not importable", file=sys.stderr)
            else:
                fns[name] = fn
        inputs = make_inputs(p, t, d, v, dtype, device)
        h, w = inputs[0], inputs[1]

        def clear_grads(h=h, w=w) -> None:
            h.grad = w.grad = None

        for passes in ("fwd+bwd", "fwd"):  # the goal's pass first
            base = {"P": p, "T": t, "D": d, "V": v, "dtype": args.dtype, "pass": passes}
            child = [
                "--child-shape",
                *map(str, (p, t, d, v)),
                "--child-passes",
                passes,
                "--dtype",
                args.dtype,
            ]
            measured = measure_candidates(
                {name: _runner(fn, inputs, passes) for name, fn in fns.items()},
                base,
                run_cfg,
                reset=clear_grads,
                child_args=lambda name, child=child: ["--child", name, *child],
                script=__file__,
                tolerate=("liger",),  # an optional package whose API may differ from the one we call
            )
            rows += measured
            for row in measured:
                if "ms" not in row:
                    continue
                tokens = 2 * p * t
                row["tflops"] = 2 * tokens * d * v * (1 if passes == "fwd" else 3) / (row["ms"] * 1e-3) / 1e12
            write_kernel_results(args, "fused_linear_dpo", run_cfg, rows)
        del inputs, h, w
    naive = {
        (r["P"], r["T"], r["D"], r["V"], r["pass"]): r for r in rows if r["impl"] == "naive" and "ms" in r
    }
    for r in rows:
        e = naive.get((r["P"], r["T"], r["D"], r["V"], r["pass"]))
        if e and "ms" in r and "peak_mb" in r:
            r["time_vs_naive"] = r["ms"] / e["ms"]
            r["mem_vs_naive"] = r["peak_mb"] / e["peak_mb"] if e["peak_mb"] > 0 else None
    print_table(
        rows, ["P", "T", "D", "V", "impl", "pass", "ms", "peak_mb", "tflops", "time_vs_naive", "mem_vs_naive"]
    )
    path = write_kernel_results(args, "fused_linear_dpo", run_cfg, rows)
    if path is not None:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
