"""Generation throughput: our `Generator` against transformers `generate`, shared-prefix reuse, and (with
`--compare REV`) the engine of an earlier revision against the same transformers, in the same run.

    python bench/bench_generate.py [--preset debug] [--device auto|cpu|cuda] [--iters 3] [--threads 2] [--quick]
                                   [--compare REV]

1. Decode: new tokens per second for batch 1, 16, 64 (prompt 32 random tokens, 128 new tokens; T=0.7 with top-p 0.9,
   and plain T=1.0; no stop tokens so every row generates all 128), for our `Generator` and for `LlamaForCausalLM.generate` on the
   same weights (random init, saved with `save_pretrained` and loaded by transformers), timed round-robin in the
   same process so load changes on a shared machine hit both alike.
2. Judge workload (prefix reuse: the rubric is prefilled once and read once per decode step by all rows): 64 judge
   prompts that share the real rubric text of `templates/judge_rubric.txt` as a prefix
   (~400 tokens) followed by ~60 distinct tokens, as the self-rewarding judge sends them:
     sample   k=3 samples per prompt, 48 new tokens (the judge's `sample` mode), T=0.7, top-p 0.9;
     expected one prefill per prompt, next-token logits (the judge's `expected` mode, `prefill_logits`);
   each with prefix reuse on and off, and for transformers on the same prompts (left-padded batches of
   `HF_JUDGE_PROMPTS` prompts: `generate` with `num_return_sequences=3`, or one forward for the next-token logits).
3. `--compare REV`: the tree of git revision REV is extracted (`git archive REV | tar -x`) into a temporary
   directory, and after each part above this same script runs that part again in a subprocess with
   PYTHONPATH there, on the same weights (its modules at their paths of then: `srlm_fast.generate`,
   `srlm_fast.model` before the subpackages). Each side's ratio against transformers is measured in its own
   process (timed round-robin with transformers there), so a load change between the two processes cancels out
   of the comparison; the table gives both ratios and their change.
On CUDA the same runs go through the compiled decode step, and every decode row also gets its fraction of the
memory-bandwidth roofline: bytes a step must read (all weights + the KV cache attended) × steps/s, over the
device-to-device copy bandwidth measured in the same run (run `--preset llama-3.2-1b` for the 1B goal).
Prints a table and writes bench/results/bench_generate-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # bench/common.py: device names, versions, timing, JSON

try:  # this tree: srlm_fast/{engine,model}/
    from srlm_fast.engine.generator import Generator, SamplingParams
    from srlm_fast.model.config import PRESETS
    from srlm_fast.model.llama import KVCache, build_model
except ModuleNotFoundError:  # an earlier revision's tree, run by `--compare` (modules before the subpackages)
    from srlm_fast.config import PRESETS
    from srlm_fast.generate import Generator, SamplingParams
    from srlm_fast.model import KVCache, build_model

REPO = Path(__file__).resolve().parents[1]

PROMPT_LEN, NEW_TOKENS = 32, 128
TEMPERATURE, TOP_P = 0.7, 0.9  # the paper's generation settings (and the judge workload's)
# Decode settings: name -> (temperature, top_p). On a random-init model the logits are nearly flat, so top-p 0.9
# keeps most of the vocabulary: the worst case for any top-p sampler. T=1.0 without filtering isolates the engine.
SETTINGS = {"T0.7-p0.9": (0.7, 0.9), "T1.0": (1.0, 1.0)}
JUDGE_SAMPLES, JUDGE_NEW_TOKENS = 3, 48
HF_JUDGE_PROMPTS = 16  # prompts per transformers call in the judge workload (48 rows when sampling 3 each)
PARTS = [f"decode:{s}" for s in SETTINGS] + ["judge"]


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


def left_padded(prompts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, padded on the left (transformers' generate continues at the right end)."""
    T = max(map(len, prompts))
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :], mask[i, T - len(p) :] = torch.tensor(p), 1
    return ids.to(device), mask.to(device)


def hf_judge(hf, prompts: list[list[int]], mode: str, device) -> None:
    """The judge workload on transformers: batches of HF_JUDGE_PROMPTS prompts."""
    for lo in range(0, len(prompts), HF_JUDGE_PROMPTS):
        ids, mask = left_padded(prompts[lo : lo + HF_JUDGE_PROMPTS], device)
        with torch.no_grad():
            if mode == "expected":
                logits = hf(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
                assert logits.shape == (len(ids), hf.config.vocab_size)
                continue
            out = hf.generate(
                ids,
                attention_mask=mask,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                top_k=0,
                num_return_sequences=JUDGE_SAMPLES,
                max_new_tokens=JUDGE_NEW_TOKENS,
                min_new_tokens=JUDGE_NEW_TOKENS,
                eos_token_id=None,
                pad_token_id=0,
            )
            assert out.shape == (len(ids) * JUDGE_SAMPLES, ids.shape[1] + JUDGE_NEW_TOKENS)


def bench_judge(model, hf, device, n_prompts, iters) -> list[dict]:
    prompts, prefix_len = judge_prompts(model.config.vocab_size, n_prompts)
    params = SamplingParams(
        max_new_tokens=JUDGE_NEW_TOKENS, temperature=TEMPERATURE, top_p=TOP_P, n=JUDGE_SAMPLES, seed=0
    )
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
        fns = {"reuse": run(reuse, mode), "none": run(none, mode)}
        fns["transformers"] = lambda mode=mode: hf_judge(hf, prompts, mode, device)
        ms = common.time_interleaved(fns, device, warmup=1, iters=iters)
        row = {
            "mode": mode,
            "prompts": n_prompts,
            "prefix_tokens": prefix_len,
            "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
            "samples_per_prompt": params.n if mode == "sample" else 1,
            "new_tokens": params.max_new_tokens if mode == "sample" else 0,
            "reuse_ms": ms["reuse"],
            "no_reuse_ms": ms["none"],
            "hf_ms": ms["transformers"],
            "hf_prompts_per_call": HF_JUDGE_PROMPTS,
            "speedup": ms["none"] / ms["reuse"],
            "speedup_vs_hf": ms["transformers"] / ms["reuse"],
        }
        rows.append(row)
        print(
            f"  judge {mode}: reuse {ms['reuse']:.0f} ms, none {ms['none']:.0f} ms, "
            f"transformers {ms['transformers']:.0f} ms",
            flush=True,
        )
    # What saving the prefix's prefill alone could give the sampled judge: its decode work (k samples of every
    # prompt) is the same with or without reuse. The `expected` runs are exactly the prefill of all prompts.
    sample, expected = rows
    saved = expected["no_reuse_ms"] - expected["reuse_ms"]
    sample["speedup_prefill_only_bound"] = sample["no_reuse_ms"] / (sample["no_reuse_ms"] - saved)
    return rows


def run_part(part: str, model, hf, device, args) -> list[dict]:
    """One part of the benchmark ("decode:<setting>" or "judge") on the engine this process imported."""
    if part == "judge":
        return bench_judge(model, hf, device, 16 if args.quick else 64, args.iters)
    batches = tuple(args.batches) if args.batches else (16,) if args.quick else (1, 16, 64)
    return bench_decode(model, hf, device, batches, args.iters, part.split(":", 1)[1])


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def extract_tree(rev: str) -> tuple[Path, str]:
    """The tree of `rev`, extracted with `git archive` into a temporary directory kept for later runs (with the
    native sampling op it builds there); returns (its directory, the full commit id)."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    home = Path(tempfile.gettempdir()) / f"srlm-bench-{commit[:12]}"
    tree = home / "tree"
    if not tree.is_dir():
        partial = home / "tree.partial"
        subprocess.run(["rm", "-rf", str(partial)], check=True)
        partial.mkdir(parents=True)
        archive = subprocess.Popen(["git", "archive", commit], cwd=REPO, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(partial)], stdin=archive.stdout, check=True)
        archive.stdout.close()
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {commit} failed")
        partial.rename(tree)
    return tree, commit


def run_baseline_part(tree: Path, part: str, weights: Path, args) -> list[dict]:
    """`part` measured by this script in a subprocess that imports the engine from `tree`."""
    out = tree.parent / f"result-{part.replace(':', '_')}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--preset", args.preset, "--device", args.device]
    cmd += ["--iters", str(args.iters), "--threads", str(args.threads)]
    cmd += ["--child-part", part, "--child-weights", str(weights), "--child-out", str(out)]
    if args.quick:
        cmd.append("--quick")
    if args.batches:
        cmd += ["--batches", *map(str, args.batches)]
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "TORCH_EXTENSIONS_DIR": str(tree.parent / "torch_extensions"),
    }
    print(f"  [{part}] the engine of {tree.parent.name}:", flush=True)
    subprocess.run(cmd, env=env, check=True)
    return json.loads(out.read_text())


def comparison(current: list[dict], baseline: list[dict]) -> list[dict]:
    """Each row's ratio against transformers, before (baseline) and after (this tree), and the change."""
    out = []
    for c in current:
        if "batch" in c:
            b = next(r for r in baseline if r.get("setting") == c["setting"] and r.get("batch") == c["batch"])
            name, key = f"decode {c['setting']} batch {c['batch']}", "speedup"
        else:
            b = next(r for r in baseline if r.get("mode") == c["mode"])
            name, key = f"judge {c['mode']} (prefix reuse)", "speedup_vs_hf"
        change = c[key] / b[key] - 1
        out.append(
            {
                "row": name,
                "before_vs_hf": b[key],
                "after_vs_hf": c[key],
                "change_pct": 100 * change,
                "falls_over_5pct": change < -0.05,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    ap.add_argument("--quick", action="store_true", help="batch 16 only, 16 judge prompts (smoke run)")
    ap.add_argument("--batches", type=int, nargs="+", help="decode batch sizes (default 1 16 64)")
    ap.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="which parts to run (default all)"
    )
    ap.add_argument(
        "--compare",
        metavar="REV",
        help="also run every part on the engine of git revision REV (e.g. 9e3c09a, before the one-forward "
        "change) and report both sides' ratios against transformers",
    )
    # Internal: the subprocess of --compare runs one part and writes its rows to --child-out.
    ap.add_argument("--child-part", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--child-weights", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = common.pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(PRESETS[args.preset], device=device, dtype=dtype, seed=0).eval()
    if args.child_part:
        model.load_state_dict(torch.load(args.child_weights, map_location=device))
        rows = run_part(args.child_part, model, hf_model(model, device), device, args)
        Path(args.child_out).write_text(json.dumps(rows))
        return
    hf = hf_model(model, device)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    print(f"device: {common.device_name(device)}; threads {torch.get_num_threads()}; load {load0:.1f}")
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    if bandwidth is not None:
        print(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s")
    tree = weights = None
    base_commit = None
    if args.compare:
        tree, base_commit = extract_tree(args.compare)
        weights = tree.parent / "weights.pt"
        torch.save(model.state_dict(), weights)  # both sides run the same weights
    decode: list[dict] = []
    judge: list[dict] = []
    base: list[dict] = []

    def write() -> Path | None:
        """The results so far: called after every part, so a run stopped by a time limit keeps what it measured."""
        if args.quick:
            return None
        payload = {
            "preset": args.preset,
            "dtype": str(dtype),
            "num_params": model.num_params(),
            "engine_commit": git("describe", "--always", "--dirty"),
            "decode_settings": SETTINGS,
            "copy_bandwidth_GBps": None if bandwidth is None else bandwidth / 1e9,
            "judge_sampling": {"temperature": TEMPERATURE, "top_p": TOP_P},
            "loadavg_before_after": [load0, os.getloadavg()[0]],
            "wall_s": time.perf_counter() - t0,
            "command": "python " + " ".join(sys.argv),
            "decode": decode,
            "judge": judge,
        }
        payload["complete"] = (
            set(args.parts) == set(PARTS) and bool(judge) and (not args.compare or bool(base))
        )
        if args.compare:
            payload["compare"] = {
                "revision": args.compare,
                "commit": base_commit,
                "how": "the same script and weights, run in a subprocess on `git archive <commit>`; each side "
                "timed round-robin with transformers in its own process",
                "decode": [r for r in base if "batch" in r],
                "judge": [r for r in base if "batch" not in r],
                "table": comparison(decode + judge, base) if base else [],
            }
        return common.write_results("bench_generate", device, payload)

    for part in args.parts:
        rows = run_part(part, model, hf, device, args)
        if tree is not None:
            base_rows = run_baseline_part(tree, part, weights, args)
            if bandwidth is not None and part != "judge":
                add_roofline(base_rows, model, bandwidth)
            base += base_rows
        if bandwidth is not None and part != "judge":
            add_roofline(rows, model, bandwidth)
        (judge if part == "judge" else decode).extend(rows)
        write()
    path = write()
    decode_columns = ["setting", "batch", "ours_tok_s", "hf_tok_s", "speedup"]
    if bandwidth is not None:
        decode_columns += ["achieved_GBps", "roofline_fraction"]
    if decode:
        print()
        common.print_table(decode, decode_columns)
    if judge:
        print()
        common.print_table(
            judge,
            [
                "mode",
                "prompts",
                "prefix_tokens",
                "reuse_ms",
                "no_reuse_ms",
                "hf_ms",
                "speedup",
                "speedup_vs_hf",
            ],
        )
        bound = judge[0]["speedup_prefill_only_bound"]
        print(f"sampled judge: saving only the prefix prefill would give at most {bound:.2f}x")
    if base:
        table = comparison(decode + judge, base)
        print(
            f"\nratio against transformers, before ({args.compare} = {base_commit[:10]}) and after (this tree):"
        )
        common.print_table(table, ["row", "before_vs_hf", "after_vs_hf", "change_pct", "falls_over_5pct"])
    if path is not None:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
