"""Generation throughput: our `Generator` against transformers `generate`, shared-prefix reuse, and (with
`--compare REV`) the engine of an earlier revision, all timed round-robin in the same run.

    python bench/bench_generate.py [--preset debug] [--device auto|cpu|cuda] [--iters 3] [--threads 2] [--quick]
                                   [--parts ...] [--compare REV] [--tag TAG]

1. Decode: new tokens per second for batch 1, 16, 64 (prompt 32 random tokens, 128 new tokens; T=0.7 with top-p
   0.9, and plain T=1.0; no stop tokens so every row generates all 128), for our `Generator` and for
   `LlamaForCausalLM.generate` on the same weights (random init, saved with `save_pretrained` and loaded by
   transformers), timed round-robin (ours, transformers, ours, ...) so load changes on a shared machine hit both
   alike.
2. Judge workload (prefix reuse: the rubric is prefilled once and read once per decode step by all rows): 64 judge
   prompts that share the real rubric text of `templates/judge_rubric.txt` as a prefix (~285 tokens) followed by
   40-80 distinct tokens, as the self-rewarding judge sends them:
     sample   k=3 samples per prompt, 48 new tokens (the judge's `sample` mode), T=0.7, top-p 0.9;
     expected one prefill per prompt, next-token logits (the judge's `expected` mode, `prefill_logits`);
   each with prefix reuse on and off, and for transformers on the same prompts (left-padded batches of
   `HF_JUDGE_PROMPTS` prompts: `generate` with `num_return_sequences=3`, or one forward for the next-token logits).
3. `--compare REV` (e.g. 9e3c09a, the engine before the one-forward change): the tree of git revision REV is
   extracted (`git archive REV | tar -x`) into a temporary directory. Two subprocesses of this script serve the
   workloads on the same weights, built by the same functions from their own `Generator`: one with PYTHONPATH at
   this working tree, one at REV's tree (its modules at their paths of then: `srlm_fast.generate`,
   `srlm_fast.model` before the subpackages): processes of one kind, neither holding transformers, so that only
   the engine differs between them (an A/A run, `--compare HEAD`, checks that). Every round of
   the round-robin times ours, the earlier engine right after it (each timed in its process), and transformers
   (in this one), so each row gives both engines' ratio against the same transformers timings.
Medians of wall time are the headline numbers; the minima (`*_min`) and, on a CPU, medians of the process's CPU
time (`*_cpu`) are given too: on a machine shared with other jobs, their time slices only ever stretch a
single-threaded run's wall time, so the fastest run and the CPU time are the least disturbed estimates of the work
(the before/after verdict uses the CPU-time ratio of the two engines' runs paired within each round).
On CUDA the same runs go through the compiled decode step. On every device each decode row gets its fraction of
the two bounds measured in the same run: memory (bytes a step must read, all weights + the KV cache attended,
× steps/s, over a large copy's bandwidth) and compute (a step's matmul FLOPs × steps/s, over a square matmul's
rate in the model's dtype). A real architecture is `--preset smollm2-135m` (random weights: the speed of a
forward does not depend on their values), `--preset llama-3.2-1b` for the 1B goal on a GPU.
Prints tables and writes bench/results/bench_generate-<device>.json (bench_generate-<preset>-<device>.json for a
preset other than `debug`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # bench/common.py: device names, versions, timing, JSON

try:  # this tree: srlm_fast/{engine,model}/
    from srlm_fast.engine import native
    from srlm_fast.engine.generator import Generator, SamplingParams
    from srlm_fast.model.config import PRESETS
    from srlm_fast.model.llama import KVCache, build_model
except ModuleNotFoundError:  # an earlier revision's tree, served by --compare (before the subpackages)
    from srlm_fast import native
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
Workload = Callable[[], None]


def hf_model(model, device: torch.device):
    from transformers import LlamaForCausalLM

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        hf = LlamaForCausalLM.from_pretrained(d, dtype=model.embed_tokens.weight.dtype)
    return hf.to(device).eval()


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Achievable memory bandwidth in bytes/s: a large copy on the device reads and writes every byte."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = common.time_ms(lambda: dst.copy_(src), device, warmup=2, iters=10)
    return 2 * nbytes / (ms / 1e3)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Achievable matmul FLOP/s: an n × n × n product in `dtype`."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    ms = common.time_ms(lambda: a @ b, device, warmup=2, iters=5)
    return 2 * n**3 / (ms / 1e3)


def add_roofline(rows: list[dict], model, bandwidth: float, flops: float) -> None:
    """Each decode row against both bounds. A decode step reads every weight once and each row's KV cache up to its
    position (prompt + half the new tokens on average); it computes 2 FLOPs per weight of the blocks and the LM
    head and 4 per attended (row, slot, query channel) per layer (scores and the weighted sum)."""
    cfg = model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    matmul_weights = model.num_params() - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim)
    kv_per_token = KVCache.bytes_per_token(cfg, model.embed_tokens.weight.dtype)
    for r in rows:
        context = r["prompt_len"] + r["new_tokens"] / 2
        steps_s = r["ours_tok_s"] / r["batch"]
        step_bytes = weight_bytes + r["batch"] * context * kv_per_token
        step_flops = r["batch"] * (
            2 * matmul_weights + 4 * context * cfg.n_heads * cfg.head_size * cfg.n_layers
        )
        r["achieved_GBps"] = steps_s * step_bytes / 1e9
        r["roofline_fraction"] = steps_s * step_bytes / bandwidth
        r["achieved_GFLOPs"] = steps_s * step_flops / 1e9
        r["compute_fraction"] = steps_s * step_flops / flops


# ---- workloads: the same functions build them for this tree's engine and for the `--compare` subprocess's ----


def decode_prompts(vocab: int, batch: int) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(batch))


def decode_workload(model, batch: int, setting: str) -> Workload:
    temperature, top_p = SETTINGS[setting]
    # One engine per batch size: a compiled (CUDA) engine decodes all of its rows every step (static shapes), so
    # one sized for 64 rows would run batch 1 as 64 rows.
    gen = Generator(model, max_batch=batch, max_len=PROMPT_LEN + NEW_TOKENS)
    prompts = decode_prompts(model.config.vocab_size, batch).tolist()
    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=temperature, top_p=top_p, seed=0)

    def run() -> None:
        out = gen.generate(prompts, params)
        assert all(len(r.token_ids) == NEW_TOKENS for r in out)

    return run


def _hf_sample(hf, ids, mask, temperature: float, top_p: float, new_tokens: int, n: int = 1):
    """transformers' sampling with the engine's settings: top-p only, exactly `new_tokens` per sequence (no EOS
    stop), so both sides generate the same number of tokens."""
    return hf.generate(
        ids,
        attention_mask=mask,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        num_return_sequences=n,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        eos_token_id=None,
        pad_token_id=0,
    )


def hf_decode_workload(hf, device, batch: int, setting: str) -> Workload:
    temperature, top_p = SETTINGS[setting]
    prompts = decode_prompts(hf.config.vocab_size, batch).to(device)

    def run() -> None:
        with torch.no_grad():
            out = _hf_sample(hf, prompts, torch.ones_like(prompts), temperature, top_p, NEW_TOKENS)
        assert out.shape == (batch, PROMPT_LEN + NEW_TOKENS)

    return run


def judge_prompts(vocab: int, n: int) -> tuple[list[list[int]], int]:
    """n token-id prompts sharing the rubric as a prefix; the rubric is mapped to ids by bytes (no tokenizer)."""
    rubric = (REPO / "srlm_fast" / "templates" / "judge_rubric.txt").read_text()
    rubric = rubric.split("User: {instruction}")[0]
    # About 4 characters per token, as a BPE would give: hash 4-byte chunks into the vocabulary (crc32: the same
    # ids in every process, unlike the salted `hash`).
    prefix = [zlib.crc32(rubric[i : i + 4].encode()) % vocab for i in range(0, len(rubric), 4)]
    g = torch.Generator().manual_seed(1)
    prompts = []
    for _ in range(n):
        tail = int(torch.randint(40, 80, (1,), generator=g))
        prompts.append(prefix + torch.randint(0, vocab, (tail,), generator=g).tolist())
    return prompts, len(prefix)


def judge_workload(model, n_prompts: int, mode: str, reuse: bool) -> Workload:
    prompts, _ = judge_prompts(model.config.vocab_size, n_prompts)
    params = SamplingParams(
        max_new_tokens=JUDGE_NEW_TOKENS, temperature=TEMPERATURE, top_p=TOP_P, n=JUDGE_SAMPLES, seed=0
    )
    gen = Generator(
        model, max_batch=64, max_len=max(map(len, prompts)) + JUDGE_NEW_TOKENS, prefix_reuse=reuse
    )

    def run() -> None:
        gen._prefix = None  # every timed call pays for its prefix prefill once
        if mode == "sample":
            gen.generate(prompts, params)
        else:
            gen.prefill_logits(prompts)

    return run


def left_padded(prompts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, padded on the left (transformers' generate continues at the right end)."""
    T = max(map(len, prompts))
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :], mask[i, T - len(p) :] = torch.tensor(p), 1
    return ids.to(device), mask.to(device)


def hf_judge_workload(hf, device, n_prompts: int, mode: str) -> Workload:
    """The judge workload on transformers: batches of HF_JUDGE_PROMPTS prompts."""
    prompts, _ = judge_prompts(hf.config.vocab_size, n_prompts)
    batches = [
        left_padded(prompts[i : i + HF_JUDGE_PROMPTS], device) for i in range(0, n_prompts, HF_JUDGE_PROMPTS)
    ]

    def run() -> None:
        for ids, mask in batches:
            with torch.no_grad():
                if mode == "expected":
                    logits = hf(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
                    assert logits.shape == (len(ids), hf.config.vocab_size)
                    continue
                out = _hf_sample(hf, ids, mask, TEMPERATURE, TOP_P, JUDGE_NEW_TOKENS, JUDGE_SAMPLES)
                assert out.shape == (len(ids) * JUDGE_SAMPLES, ids.shape[1] + JUDGE_NEW_TOKENS)

    return run


def build_workload(model, spec: dict) -> Workload:
    if spec["kind"] == "decode":
        return decode_workload(model, spec["batch"], spec["setting"])
    return judge_workload(model, spec["prompts"], spec["mode"], spec["reuse"])


# ---- the earlier engine, in a subprocess ---------------------------------------------------------------------


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


class EngineServer:
    """The engine of `tree`, served by this script in a subprocess (`--serve`) on the given weights:
    `workload(spec)` is a callable that runs the workload there once and returns the (wall, CPU) milliseconds it
    took, as the subprocess measured them."""

    def __init__(self, tree: Path, weights: Path, args, extensions_dir: str | None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--serve-weights", str(weights)]
        cmd += ["--preset", args.preset, "--device", args.device, "--threads", str(args.threads)]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        if extensions_dir:
            env["TORCH_EXTENSIONS_DIR"] = extensions_dir
        self.tree = tree
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.sampler = json.loads(self._reply())["sampler"]  # its native sampling op: built or not

    def _reply(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the engine server of {self.tree} exited (code {self.proc.wait()}); see above"
            )
        return line

    def workload(self, spec: dict) -> Callable[[], tuple[float, float | None]]:
        def run() -> tuple[float, float | None]:
            self.proc.stdin.write(json.dumps(spec) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self._reply())
            return reply["ms"], reply["cpu_ms"]

        run.remote = True  # type: ignore[attr-defined]
        return run

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def serve(model, device) -> None:
    """The `--serve` loop: one JSON workload spec per stdin line, its wall and CPU time in ms per stdout line.
    The last spec's workload is kept (and rebuilt when the spec changes), so repeated runs reuse its engine."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the engine prints must not mix with the replies
    out.write(json.dumps({"sampler": sampler_info()}) + "\n")
    out.flush()
    key, fn = None, None
    for line in sys.stdin:
        spec = json.loads(line)
        if spec != key:
            key, fn = None, None  # free the previous engine first
            key, fn = spec, build_workload(model, spec)
        wall, cpu = time_once(fn, device)
        out.write(json.dumps({"ms": wall, "cpu_ms": cpu}) + "\n")
        out.flush()


def sampler_info() -> dict:
    """Whether this process's engine samples with the native op (built now if not yet): both engines of a
    comparison must, or their T=0.7 top-p rows compare samplers rather than engines."""
    native.available()
    return {**native.build_info(), "torch_extensions_dir": os.environ.get("TORCH_EXTENSIONS_DIR")}


# ---- timing and the rows -------------------------------------------------------------------------------------


def time_once(fn: Workload, device) -> tuple[float, float | None]:
    """(wall ms, CPU ms) of one run of fn. The CPU time of the process (None on CUDA, where work is
    asynchronous) is the work the run did: on a machine shared with other jobs their time slices stretch the
    wall time of a single-threaded run, not its CPU time."""
    if device.type == "cuda":
        return common.time_ms(fn, device, warmup=0, iters=1), None
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


Samples = dict[str, list[tuple[float, float | None]]]


def round_robin(fns: dict[str, Callable], device, warmup: int, iters: int) -> Samples:
    """(wall ms, CPU ms) of every run of each candidate, measured round-robin (a, b, c, a, b, c, ...); a remote
    candidate (from `EngineServer.workload`) reports its own times."""

    def once(fn):
        return fn() if getattr(fn, "remote", False) else time_once(fn, device)

    for fn in fns.values():
        for _ in range(warmup):
            once(fn)
    samples: Samples = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            samples[name].append(once(fn))
    return samples


# Statistics of a candidate's runs: row[<candidate><field>]; ratios get the matching suffix.
STATS = {"": "_ms", "_min": "_ms_min", "_cpu": "_cpu_ms"}  # wall median, wall minimum, CPU-time median


def timings(row: dict, samples: Samples, names: dict[str, str]) -> None:
    """Each candidate's median and minimum wall time and median CPU time (when measured) into `row`."""
    for name, prefix in names.items():
        if name in samples:
            wall = [w for w, _ in samples[name]]
            row[f"{prefix}_ms"] = statistics.median(wall)
            row[f"{prefix}_ms_min"] = min(wall)
            cpu = [c for _, c in samples[name] if c is not None]
            if cpu:
                row[f"{prefix}_cpu_ms"] = statistics.median(cpu)


def paired(row: dict, samples: Samples, ours: str) -> None:
    """row["after_over_before"(_cpu)]: the median over rounds of before's time / ours's in the same round (> 1:
    this tree is faster). Both engines' ratios against transformers share the transformers timings, so their
    change is this speed ratio; pairing the runs of a round takes out most of the load that varies over a run."""
    if "before" not in samples:
        return
    pairs = list(zip(samples[ours], samples["before"]))
    row["after_over_before"] = statistics.median(b[0] / a[0] for a, b in pairs)
    if all(a[1] and b[1] for a, b in pairs):
        row["after_over_before_cpu"] = statistics.median(b[1] / a[1] for a, b in pairs)


def ratios(row: dict, key: str, num: str, den: str) -> None:
    """row[key + suffix] = num's statistic over den's, for each statistic in STATS that both have."""
    for suffix, field in STATS.items():
        if num + field in row and den + field in row:
            row[key + suffix] = row[num + field] / row[den + field]


Factory = Callable[[dict], Callable]  # a workload spec -> the candidate that runs it


def bench_decode(model, hf, device, batches, iters, setting: str, ours: Factory, before: Factory | None):
    rows = []
    for B in batches:
        spec = {"kind": "decode", "batch": B, "setting": setting}
        fns = {"ours": ours(spec)}
        if before is not None:  # right after ours in every round: the pair shares the machine's load
            fns["before"] = before(spec)
        fns["transformers"] = hf_decode_workload(hf, device, B, setting)
        samples = round_robin(fns, device, warmup=1, iters=iters)
        row = {"setting": setting, "batch": B, "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS}
        timings(row, samples, {"ours": "ours", "transformers": "hf", "before": "before"})
        paired(row, samples, "ours")
        new = B * NEW_TOKENS
        row["ours_tok_s"] = new / row["ours_ms"] * 1e3
        row["hf_tok_s"] = new / row["hf_ms"] * 1e3
        ratios(row, "speedup", "hf", "ours")
        line = f"  batch {B}: ours {row['ours_tok_s']:.0f} tok/s, transformers {row['hf_tok_s']:.0f} tok/s"
        if before is not None:
            row["before_tok_s"] = new / row["before_ms"] * 1e3
            ratios(row, "before_speedup", "hf", "before")
            line += f", before {row['before_tok_s']:.0f} tok/s"
        rows.append(row)
        print(line, flush=True)
    return rows


def bench_judge(model, hf, device, n_prompts, iters, ours: Factory, before: Factory | None) -> list[dict]:
    prompts, prefix_len = judge_prompts(model.config.vocab_size, n_prompts)
    rows = []
    for mode in ("sample", "expected"):
        spec = {"kind": "judge", "prompts": n_prompts, "mode": mode, "reuse": True}
        fns = {"reuse": ours(spec)}
        if before is not None:  # the earlier engine with its default, prefix reuse, right after ours
            fns["before"] = before(spec)
        fns["none"] = ours({**spec, "reuse": False})
        fns["transformers"] = hf_judge_workload(hf, device, n_prompts, mode)
        samples = round_robin(fns, device, warmup=1, iters=iters)
        row = {
            "mode": mode,
            "prompts": n_prompts,
            "prefix_tokens": prefix_len,
            "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
            "samples_per_prompt": JUDGE_SAMPLES if mode == "sample" else 1,
            "new_tokens": JUDGE_NEW_TOKENS if mode == "sample" else 0,
            "hf_prompts_per_call": HF_JUDGE_PROMPTS,
        }
        timings(
            row, samples, {"reuse": "reuse", "none": "no_reuse", "transformers": "hf", "before": "before"}
        )
        paired(row, samples, "reuse")
        row["speedup"] = row["no_reuse_ms"] / row["reuse_ms"]
        ratios(row, "speedup_vs_hf", "hf", "reuse")
        line = f"  judge {mode}: reuse {row['reuse_ms']:.0f} ms, none {row['no_reuse_ms']:.0f} ms, "
        line += f"transformers {row['hf_ms']:.0f} ms"
        if before is not None:
            ratios(row, "before_speedup_vs_hf", "hf", "before")
            line += f", before (reuse) {row['before_ms']:.0f} ms"
        rows.append(row)
        print(line, flush=True)
    # What saving the prefix's prefill alone could give the sampled judge: its decode work (k samples of every
    # prompt) is the same with or without reuse. The `expected` runs are exactly the prefill of all prompts.
    sample, expected = rows
    saved = expected["no_reuse_ms"] - expected["reuse_ms"]
    sample["speedup_prefill_only_bound"] = sample["no_reuse_ms"] / (sample["no_reuse_ms"] - saved)
    return rows


def comparison(rows: list[dict]) -> list[dict]:
    """Each row's ratio against transformers for the earlier engine (before) and this tree's (after), and its
    change by each statistic: of the medians, of the minima, of the CPU-time medians, and paired within rounds
    (see `paired`; wall and CPU time). `falls_over_5pct` judges the paired CPU-time change where there is one
    (see `time_once`), else the paired wall-time change."""
    out = []
    for r in rows:
        if "batch" in r:
            name, key = f"decode {r['setting']} batch {r['batch']}", "speedup"
        else:
            name, key = f"judge {r['mode']} (prefix reuse)", "speedup_vs_hf"
        if f"before_{key}" not in r:
            continue
        entry = {"row": name, "before_vs_hf": r[f"before_{key}"], "after_vs_hf": r[key]}
        labels = {"": "change_pct", "_min": "change_pct_of_minima", "_cpu": "change_pct_cpu"}
        for suffix, label in labels.items():
            if key + suffix in r and f"before_{key}{suffix}" in r:
                entry[label] = 100 * (r[key + suffix] / r[f"before_{key}{suffix}"] - 1)
        for suffix in ("", "_cpu"):
            if "after_over_before" + suffix in r:
                entry["change_pct_paired" + suffix] = 100 * (r["after_over_before" + suffix] - 1)
        verdict = entry.get("change_pct_paired_cpu", entry.get("change_pct_paired", entry["change_pct"]))
        entry["falls_over_5pct"] = verdict < -5
        out.append(entry)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    ap.add_argument(
        "--quick", action="store_true", help="batch 16 only, 16 judge prompts (smoke run, no JSON)"
    )
    ap.add_argument("--batches", type=int, nargs="+", help="decode batch sizes (default 1 16 64)")
    ap.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="which parts to run (default all)"
    )
    ap.add_argument(
        "--compare",
        metavar="REV",
        help="also time the engine of git revision REV, round-robin with ours and transformers",
    )
    ap.add_argument(
        "--tag", help="appended to the results file's name, so a run of some parts keeps another run's file"
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the --compare subprocess
    ap.add_argument("--serve-weights", help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = common.pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(PRESETS[args.preset], device=device, dtype=dtype, seed=0).eval()
    if args.serve:
        model.load_state_dict(torch.load(args.serve_weights, map_location=device))
        serve(model, device)
        return
    hf = hf_model(model, device)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    print(f"device: {common.device_name(device)}; threads {torch.get_num_threads()}; load {load0:.1f}")
    cuda = device.type == "cuda"
    bandwidth = copy_bandwidth(device, 1 << 30 if cuda else 1 << 28)
    flops = matmul_rate(device, dtype, 8192 if cuda else 1024)
    print(f"measured copy bandwidth: {bandwidth / 1e9:.1f} GB/s; matmul ({dtype}): {flops / 1e9:.0f} GFLOP/s")
    servers: list[EngineServer] = []
    before = base_commit = None
    if args.compare:
        # Both engines in processes of the same kind (this script serving its workloads, no transformers in
        # them), this tree's from the working tree, REV's from its extracted tree, on the same weights.
        tree, base_commit = extract_tree(args.compare)
        weights = tree.parent / "weights.pt"
        torch.save(model.state_dict(), weights)
        servers = [
            EngineServer(REPO, weights, args, os.environ.get("TORCH_EXTENSIONS_DIR")),
            EngineServer(tree, weights, args, str(tree.parent / "torch_extensions")),
        ]
        ours, before = servers[0].workload, servers[1].workload
        sampler = {"this_tree": servers[0].sampler, "baseline": servers[1].sampler}
        if sampler["this_tree"]["loaded"] != sampler["baseline"]["loaded"]:
            print(
                f"WARNING: native sampling op loaded for this tree: {sampler['this_tree']['loaded']}, for the "
                f"baseline: {sampler['baseline']['loaded']}; the comparison mixes samplers",
                flush=True,
            )
    else:
        sampler = {"this_tree": sampler_info()}

        def ours(spec: dict) -> Workload:
            return build_workload(model, spec)

    batches = tuple(args.batches) if args.batches else (16,) if args.quick else (1, 16, 64)
    decode: list[dict] = []
    judge: list[dict] = []

    # The engine measured is the tree as it is now: after the first part's write the results file itself differs
    # from the commit, which must not mark the engine of later writes "-dirty".
    engine_commit = git("describe", "--always", "--dirty")

    def write() -> Path | None:
        """The results so far: called after every part, so a run stopped by a time limit keeps what it measured."""
        if args.quick:
            return None
        payload = {
            "preset": args.preset,
            "dtype": str(dtype),
            "num_params": model.num_params(),
            "engine_commit": engine_commit,
            "decode_settings": SETTINGS,
            "copy_bandwidth_GBps": bandwidth / 1e9,
            "matmul_GFLOPs": flops / 1e9,
            "judge_sampling": {"temperature": TEMPERATURE, "top_p": TOP_P},
            "native_sampler": sampler,
            "loadavg_before_after": [load0, os.getloadavg()[0]],
            "wall_s": time.perf_counter() - t0,
            "command": "python " + " ".join(sys.argv),
            "complete": set(args.parts) == set(PARTS) and bool(judge),
            "decode": decode,
            "judge": judge,
        }
        if args.compare:
            payload["compare"] = {
                "revision": args.compare,
                "commit": base_commit,
                "how": "its tree from git archive, served by this script in a subprocess with PYTHONPATH there "
                "on the same weights; each round of the round-robin times ours, transformers and it",
                "table": comparison(decode + judge),
            }
        name = "bench_generate" if args.preset == "debug" else f"bench_generate-{args.preset}"
        if args.tag:
            name += f"-{args.tag}"
        return common.write_results(name, device, payload)

    for part in args.parts:
        if part == "judge":
            judge += bench_judge(model, hf, device, 16 if args.quick else 64, args.iters, ours, before)
        else:
            rows = bench_decode(model, hf, device, batches, args.iters, part.split(":", 1)[1], ours, before)
            add_roofline(rows, model, bandwidth, flops)
            decode += rows
        write()
    for server in servers:
        server.close()
    path = write()
    decode_columns = [
        "setting",
        "batch",
        "ours_tok_s",
        "hf_tok_s",
        "speedup",
        "roofline_fraction",
        "compute_fraction",
    ]
    if decode:
        print()
        common.print_table(decode, decode_columns)
    if judge:
        print()
        columns = ["mode", "prompts", "prefix_tokens", "reuse_ms", "no_reuse_ms", "hf_ms", "speedup"]
        common.print_table(judge, [*columns, "speedup_vs_hf"])
        bound = judge[0]["speedup_prefill_only_bound"]
        print(f"sampled judge: saving only the prefix prefill would give at most {bound:.2f}x")
    if before is not None:
        print(
            f"\nratio against transformers, before ({args.compare} = {base_commit[:10]}) and after (this tree):"
        )
        columns = [
            "row",
            "before_vs_hf",
            "after_vs_hf",
            "change_pct",
            "change_pct_of_minima",
            "change_pct_cpu",
        ]
        columns += ["change_pct_paired", "change_pct_paired_cpu", "falls_over_5pct"]
        common.print_table(comparison(decode + judge), columns)
    if path is not None:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
