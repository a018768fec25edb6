"""Training-step benchmark: our SFT and DPO steps against transformers baselines, tokens/s and peak memory.

    python bench/bench_train.py                       # CPU: the debug model (5.2M params), fp32
    python bench/bench_train.py --preset llama-3.2-1b # GPU: bf16 compute, MFU reported

Candidates (each a full optimizer step: forward, backward, AdamW):
  sft/ours      `LMWithLoss` (fused linear cross-entropy, never materialises logits); FSDP2 on GPU
  sft/hf        transformers `LlamaForCausalLM` + torch cross-entropy on materialised logits
  dpo/ours      chosen + rejected in one forward, fused DPO loss, reference log-probs precomputed
  dpo/naive     transformers policy + a frozen transformers reference model in memory, materialised
                logits, log-softmax + gather (what a straightforward DPO trainer does)

Peak memory: CUDA allocator peak on GPU; on CPU the peak-RSS growth of a fresh subprocess that builds the
model(s), optimizer and runs two steps (the whole training footprint, reference model included).
GPU goals (issue 5): SFT >= 40% MFU for a 1B model in bf16; DPO <= 50% of the naive peak memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common

from srlm_fast import distributed as D
from srlm_fast.model.config import ModelConfig, get_preset
from srlm_fast.train.losses import build_lm
from srlm_fast.train.metrics import peak_tflops

IGNORE = -100


def make_batch(cfg: ModelConfig, batch: int, seq: int, device, seed: int = 0):
    """Token ids and shifted targets with the first quarter of each row a prompt (ignored targets)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = IGNORE
    targets[:, : seq // 4] = IGNORE
    return ids.to(device), targets.to(device)


def hf_model(cfg: ModelConfig, device, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k not in ("architectures", "dtype")})
    hf_cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlamaForCausalLM(hf_cfg).to(dtype)
    return model


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# ---- steps -----------------------------------------------------------------------------------------


def ours_setup(cfg: ModelConfig, info: D.DistInfo, compile: bool = False):
    lm = build_lm(cfg, info, compile=compile)
    fused = info.device.type == "cuda"
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-5, fused=fused, foreach=None if fused else True)
    return lm, opt


def ours_sft_step(lm, opt, ids, targets):
    n = int((targets != IGNORE).sum())
    out = lm(ids, targets, mode="sft")
    (out["loss_sum"] / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def ours_dpo_step(lm, opt, ids, targets, ref_c, ref_r):
    out = lm(ids, targets, mode="dpo", ref_chosen=ref_c, ref_rejected=ref_r, dpo_options={"beta": 0.1})
    out["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def hf_setup(cfg: ModelConfig, device, with_reference: bool = False):
    model = hf_model(cfg, device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused, foreach=None if fused else True)
    ref = None
    if with_reference:
        ref = hf_model(cfg, device, torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
        ref.requires_grad_(False)
    return model, opt, ref


def hf_sft_step(model, opt, ids, targets):
    with _autocast(ids.device):
        logits = model(input_ids=ids).logits  # (B, T, V) materialised
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _seq_logps(logits, targets):
    logp = logits.float().log_softmax(-1)  # (2P, T, V)
    mask = targets != IGNORE
    tok = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (2P, T)
    return (tok * mask).sum(-1)


def naive_dpo_step(model, ref, opt, ids, targets, beta: float = 0.1):
    p = ids.shape[0] // 2
    with torch.no_grad(), _autocast(ids.device):
        ref_logps = _seq_logps(ref(input_ids=ids).logits, targets)
    with _autocast(ids.device):
        logits = model(input_ids=ids).logits
    pol = _seq_logps(logits, targets)
    u = (pol[:p] - ref_logps[:p]) - (pol[p:] - ref_logps[p:])
    loss = -F.logsigmoid(beta * u).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


# ---- measurement --------------------------------------------------------------------------------


def build_candidate(name: str, cfg: ModelConfig, info: D.DistInfo, batch: int, seq: int, compile: bool):
    """A zero-argument step function for candidate `name` (setup included in the call to this)."""
    dev = info.device
    if name.startswith("sft"):
        ids, targets = make_batch(cfg, batch, seq, dev)
    else:
        ids, targets = make_batch(cfg, 2 * batch, seq, dev)  # `batch` pairs = 2*batch sequences
    ref_c = torch.full((batch,), -100.0, device=dev)
    ref_r = torch.full((batch,), -100.0, device=dev)
    if name == "sft/ours":
        lm, opt = ours_setup(cfg, info, compile)
        return lambda: ours_sft_step(lm, opt, ids, targets)
    if name == "dpo/ours":
        lm, opt = ours_setup(cfg, info, compile)
        return lambda: ours_dpo_step(lm, opt, ids, targets, ref_c, ref_r)
    if name == "sft/hf":
        model, opt, _ = hf_setup(cfg, dev)
        return lambda: hf_sft_step(model, opt, ids, targets)
    if name == "dpo/naive":
        model, opt, ref = hf_setup(cfg, dev, with_reference=True)
        return lambda: naive_dpo_step(model, ref, opt, ids, targets)
    raise ValueError(name)


def child_memory(args) -> None:
    """Subprocess mode (CPU): peak RSS growth of setup + two steps of one candidate."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    cfg = get_preset(args.preset)
    info = D.init_distributed("cpu")
    import transformers  # noqa: F401  (import cost is not training memory)

    import srlm_kernels  # noqa: F401

    mark = common.rss_mark()
    step = build_candidate(args.child, cfg, info, args.batch, args.seq, False)
    step()
    step()
    common.report_rss_growth(mark)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="model preset (default: debug on CPU, llama-3.2-1b on GPU)")
    p.add_argument("--batch", type=int, default=None, help="SFT rows / DPO pairs per step")
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    p.add_argument("--compile", action="store_true", help="torch.compile our blocks")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    device = common.pick_device(args.device)
    gpu = device.type == "cuda"
    args.preset = args.preset or ("llama-3.2-1b" if gpu else "debug")
    args.batch = args.batch or (4 if gpu else 8)
    args.seq = args.seq or (2048 if gpu else 256)
    if args.child:
        child_memory(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset)
    info = D.init_distributed(device.type)
    peak = peak_tflops(device)
    names = ["sft/ours", "sft/hf", "dpo/ours", "dpo/naive"]

    rows = []

    def write(rows: list[dict], complete: bool) -> None:
        """Results so far (after each task too: a GPU step stopped by its time limit keeps the SFT rows)."""
        if args.no_write:
            return
        payload = {
            "preset": args.preset,
            "params": cfg.num_params(),
            "shapes": {"batch": args.batch, "seq": args.seq, "dpo_pairs": args.batch},
            "dtype": "bf16 compute, fp32 master (FSDP2 / autocast)" if gpu else "fp32",
            "compile": args.compile,
            "iters": args.iters,
            "complete": complete,
            "results": rows,
        }
        path = common.write_results("bench_train", device, payload)
        if complete:
            print(path)

    for task in ("sft", "dpo"):
        pair = [n for n in names if n.startswith(task)]
        steps = {}
        mem = {}
        for n in pair:
            if gpu:
                torch.cuda.empty_cache()
                mem[n] = common.cuda_peak_mb(
                    lambda n=n, steps=steps: steps.setdefault(n, _first_steps(n, cfg, info, args)), device
                )
            else:
                steps[n] = build_candidate(n, cfg, info, args.batch, args.seq, args.compile)
        ms = common.time_interleaved(steps, device, warmup=1, iters=args.iters)
        for n in pair:
            if not gpu:
                mem[n] = common.cpu_peak_rss_mb(
                    Path(__file__),
                    ["--child", n, "--preset", args.preset, "--batch", str(args.batch), "--seq", str(args.seq),
                     "--threads", str(args.threads), "--device", "cpu"],
                )  # fmt: skip
            seqs = args.batch * (2 if task == "dpo" else 1)
            tokens = seqs * args.seq
            tps = tokens / (ms[n] / 1e3)
            row = {"candidate": n, "ms_per_step": ms[n], "tokens_per_s": tps, "peak_mb": mem[n]}
            if peak is not None:
                row["mfu"] = cfg.flops_per_token(args.seq) * tps / (peak * 1e12)
            rows.append(row)
        write(rows, complete=False)
        steps.clear()  # free this task's models before the next task's
        if gpu:
            torch.cuda.empty_cache()
    for task in ("sft", "dpo"):
        ours = next(r for r in rows if r["candidate"] == f"{task}/ours")
        base = next(r for r in rows if r["candidate"].startswith(task) and r is not ours)
        ours["speedup_vs_baseline"] = base["ms_per_step"] / ours["ms_per_step"]
        ours["memory_vs_baseline"] = ours["peak_mb"] / base["peak_mb"]
    cols = [
        "candidate",
        "ms_per_step",
        "tokens_per_s",
        "peak_mb",
        "speedup_vs_baseline",
        "memory_vs_baseline",
    ]
    common.print_table(rows, cols + (["mfu"] if peak is not None else []))
    write(rows, complete=True)
    D.shutdown(info)


def _first_steps(name, cfg, info, args):
    """GPU: build a candidate and run two steps inside the peak-memory window; return its step function."""
    step = build_candidate(name, cfg, info, args.batch, args.seq, args.compile)
    step()
    step()
    return step


if __name__ == "__main__":
    main()
