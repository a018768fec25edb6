"""Generation throughput: srlm_fast.generate.Generator against transformers `generate`, and shared-prefix reuse.

    python bench/bench_generate.py [--preset debug] [--device auto|cpu|cuda] [--iters 3] [--threads 2] [--quick]

1. Decode: new tokens per second for batch 1, 16, 64 (prompt 32 random tokens, 128 new tokens; T=0.7 with top-p 0.9,
   and plain T=1.0; no stop tokens so every row generates all 128), for our `Generator` and for `LlamaForCausalLM.generate` on the
   same weights (random init, saved with `save_pretrained` and loaded by transformers), timed round-robin in the
   same process so load changes on a shared machine hit both alike.
2. Judge workload (prefix reuse: the rubric is prefilled once and read once per decode step by all rows): 64 judge
   prompts that share the real rubric text of `templates/judge_rubric.txt` as a prefix
   (~400 tokens) followed by ~60 distinct tokens, as the self-rewarding judge sends them:
     sample   k=3 samples per prompt, 48 new tokens (the judge's `sample` mode), T=0.7, top-p 0.9;
     expected one prefill per prompt, next-token logits (the judge's `expected` mode, `prefill_logits`);
   each with prefix reuse on and off.
On CUDA the same runs go through the compiled decode step, and every decode row also gets its fraction of the
memory-bandwidth roofline: bytes a step must read (all weights + the KV cache attended) × steps/s, over the
device-to-device copy bandwidth measured in the same run (run `--preset llama-3.2-1b` for the 1B goal).
Prints a table and writes bench/results/bench_generate-<device>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # bench/common.py: device names, versions, timing, JSON

from srlm_fast.engine.generator import Generator, SamplingParams
from srlm_fast.model.config import PRESETS
from srlm_fast.model.llama import KVCache, build_model

PROMPT_LEN, NEW_TOKENS = 32, 128
TEMPERATURE, TOP_P = 0.7, 0.9  # the paper's generation settings (and the judge workload's)
# Decode settings: name -> (temperature, top_p). On a random-init model the logits are nearly flat, so top-p 0.9
# keeps most of the vocabulary: the worst case for any top-p sampler. T=1.0 without filtering isolates the engine.
SETTINGS = {"T0.7-p0.9": (0.7, 0.9), "T1.0": (1.0, 1.0)}


def hf_model(model, device: torch.device):
    from transformers import LlamaForCausalLM

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        hf = LlamaForCausalLM.from_pretrained(d, dtype=model.embed_tokens.weight.dtype)
    return hf.to(device).eval()


def bench_decode(model, hf, device, batches, iters, setting: str) -> list[dict]:
    rows = []
    temperature, top_p = SETTINGS[setting]
    vocab = model.config.vocab_size
    for B in batches:
        # One engine per batch size: a compiled (CUDA) engine decodes all of its rows every step (static shapes),
        # so one sized for 64 rows would run batch 1 as 64 rows.
        gen = Generator(model, max_batch=B, max_len=PROMPT_LEN + NEW_TOKENS)
        g = torch.Generator().manual_seed(B)
        prompts = torch.randint(0, vocab, (B, PROMPT_LEN), generator=g)
        params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=temperature, top_p=top_p, seed=0)

        def ours(prompts=prompts, params=params, gen=gen):
            out = gen.generate(prompts.tolist(), params)
            assert all(len(r.token_ids) == NEW_TOKENS for r in out)

        def theirs(prompts=prompts, B=B):
            with torch.no_grad():
                out = hf.generate(
                    prompts.to(device),
                    attention_mask=torch.ones_like(prompts, device=device),
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=0,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    eos_token_id=None,
                    pad_token_id=0,
                )
            assert out.shape == (B, PROMPT_LEN + NEW_TOKENS)

        ms = common.time_interleaved({"ours": ours, "transformers": theirs}, device, warmup=1, iters=iters)
        new = B * NEW_TOKENS
        row = {
            "setting": setting,
            "batch": B,
            "prompt_len": PROMPT_LEN,
            "new_tokens": NEW_TOKENS,
            "ours_tok_s": new / ms["ours"] * 1e3,
            "hf_tok_s": new / ms["transformers"] * 1e3,
            "ours_ms": ms["ours"],
            "hf_ms": ms["transformers"],
        }
        row["speedup"] = row["ours_tok_s"] / row["hf_tok_s"]
        rows.append(row)
        print(
            f"  batch {B}: ours {row['ours_tok_s']:.0f} tok/s, transformers {row['hf_tok_s']:.0f} tok/s",
            flush=True,
        )
    return rows


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Achievable memory bandwidth in bytes/s: a large device-to-device copy reads and writes every byte."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = common.time_ms(lambda: dst.copy_(src), device, warmup=2, iters=10)
    return 2 * nbytes / (ms / 1e3)


def add_roofline(rows: list[dict], model, bandwidth: float) -> None:
    """Each decode row's fraction of the bandwidth roofline: a decode step reads every weight once and each row's
    KV cache up to its position (prompt + half the new tokens on average)."""
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_per_token = KVCache.bytes_per_token(model.config, model.embed_tokens.weight.dtype)
    for r in rows:
        context = r["prompt_len"] + r["new_tokens"] / 2
        step_bytes = weight_bytes + r["batch"] * context * kv_per_token
        achieved = r["ours_tok_s"] / r["batch"] * step_bytes  # steps/s × bytes/step
        r["roofline_fraction"] = achieved / bandwidth
        r["achieved_GBps"] = achieved / 1e9


def judge_prompts(vocab: int, n: int) -> tuple[list[list[int]], int]:
    """n token-id prompts sharing the rubric as a prefix; the rubric is mapped to ids by bytes (no tokenizer)."""
    rubric = (
        Path(__file__).resolve().parents[1] / "srlm_fast" / "templates" / "judge_rubric.txt"
    ).read_text()
    rubric = rubric.split("User: {instruction}")[0]
    # About 4 characters per token, as a BPE would give: hash 4-byte chunks into the vocabulary.
    prefix = [hash(rubric[i : i + 4]) % vocab for i in range(0, len(rubric), 4)]
    g = torch.Generator().manual_seed(1)
    prompts = []
    for _ in range(n):
        tail = int(torch.randint(40, 80, (1,), generator=g))
        prompts.append(prefix + torch.randint(0, vocab, (tail,), generator=g).tolist())
    return prompts, len(prefix)


def bench_judge(model, device, n_prompts, iters) -> list[dict]:
    prompts, prefix_len = judge_prompts(model.config.vocab_size, n_prompts)
    params = SamplingParams(max_new_tokens=48, temperature=TEMPERATURE, top_p=TOP_P, n=3, seed=0)
    max_len = max(map(len, prompts)) + 48
    reuse = Generator(model, max_batch=64, max_len=max_len, prefix_reuse=True)
    none = Generator(model, max_batch=64, max_len=max_len, prefix_reuse=False)

    def run(gen: Generator, mode: str):
        def fn():
            gen._prefix = None  # every timed call pays for its prefix prefill once
            if mode == "sample":
                gen.generate(prompts, params)
            else:
                gen.prefill_logits(prompts)

        return fn

    rows = []
    for mode in ("sample", "expected"):
        ms = common.time_interleaved(
            {"reuse": run(reuse, mode), "none": run(none, mode)}, device, warmup=1, iters=iters
        )
        row = {
            "mode": mode,
            "prompts": n_prompts,
            "prefix_tokens": prefix_len,
            "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
            "samples_per_prompt": params.n if mode == "sample" else 1,
            "new_tokens": params.max_new_tokens if mode == "sample" else 0,
            "reuse_ms": ms["reuse"],
            "no_reuse_ms": ms["none"],
            "speedup": ms["none"] / ms["reuse"],
        }
        rows.append(row)
        print(f"  judge {mode}: reuse {ms['reuse']:.0f} ms, none {ms['none']:.0f} ms", flush=True)
    # What saving the prefix's prefill alone could give the sampled judge: its decode work (k samples of every
    # prompt) is the same with or without reuse. The `expected` runs are exactly the prefill of all prompts.
    sample, expected = rows
    saved = expected["no_reuse_ms"] - expected["reuse_ms"]
    sample["speedup_prefill_only_bound"] = sample["no_reuse_ms"] / (sample["no_reuse_ms"] - saved)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    ap.add_argument("--quick", action="store_true", help="batch 16 only, 16 judge prompts (smoke run)")
    ap.add_argument("--batches", type=int, nargs="+", help="decode batch sizes (default 1 16 64)")
    args = ap.parse_args()
    device = common.pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(PRESETS[args.preset], device=device, dtype=dtype, seed=0).eval()
    hf = hf_model(model, device)
    batches = tuple(args.batches) if args.batches else (16,) if args.quick else (1, 16, 64)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    print(f"device: {common.device_name(device)}; threads {torch.get_num_threads()}; load {load0:.1f}")
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    if bandwidth is not None:
        print(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s")
    decode: list[dict] = []
    judge: list[dict] = []

    def write() -> Path | None:
        """The results so far: called after every part, so a run stopped by a time limit keeps what it measured."""
        if args.quick:
            return None
        return common.write_results(
            "bench_generate",
            device,
            {
                "preset": args.preset,
                "dtype": str(dtype),
                "num_params": model.num_params(),
                "decode_settings": SETTINGS,
                "copy_bandwidth_GBps": None if bandwidth is None else bandwidth / 1e9,
                "judge_sampling": {"temperature": TEMPERATURE, "top_p": TOP_P},
                "loadavg_before_after": [load0, os.getloadavg()[0]],
                "wall_s": time.perf_counter() - t0,
                "command": "python " + " ".join(sys.argv),
                "complete": bool(judge),
                "decode": decode,
                "judge": judge,
            },
        )

    for setting in SETTINGS:
        rows = bench_decode(model, hf, device, batches, args.iters, setting)
        if bandwidth is not None:
            add_roofline(rows, model, bandwidth)
        decode += rows
        write()
    judge += bench_judge(model, device, 16 if args.quick else 64, args.iters)
    path = write()
    decode_columns = ["setting", "batch", "ours_tok_s", "hf_tok_s", "speedup"]
    if bandwidth is not None:
        decode_columns += ["achieved_GBps", "roofline_fraction"]
    print()
    common.print_table(decode, decode_columns)
    print()
    common.print_table(judge, ["mode", "prompts", "prefix_tokens", "reuse_ms", "no_reuse_ms", "speedup"])
    bound = judge[0]["speedup_prefill_only_bound"]
    print(f"sampled judge: saving only the prefix prefill would give at most {bound:.2f}x")
    if path is not None:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
