"""`srlm generate --checkpoint DIR (--prompt TEXT ... | --prompts FILE.jsonl) [--out FILE.jsonl]`: sample completions.

Prompts are wrapped in the checkpoint tokenizer's chat template (one user turn, then the assistant header) unless
`--raw`. A JSONL prompts file has one object per line with "prompt" (a string) or "messages" (a chat list).
Output: JSONL (to --out, written atomically, or stdout) with the index, the prompt and the n completions.
An existing --out is replaced only with --overwrite, and never when it is the prompts file. Progress goes to
stderr: a bar on a terminal, else a line every 30 s (done/total, rate, ETA).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from srlm_fast.commands._args import (
    add_overwrite,
    device,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    probability,
)
from srlm_fast.device import default_dtype, resolve_device
from srlm_fast.engine.generator import Generator, SamplingParams
from srlm_fast.io import DataError, check_output, looks_like_jsonl, read_jsonl, write_jsonl_atomic
from srlm_fast.model.checkpoint import is_checkpoint_dir
from srlm_fast.model.llama import Llama
from srlm_fast.model.tokenizer import load_tokenizer
from srlm_fast.progress import Progress

HELP = "sample completions from a checkpoint (KV-cached, batched)"


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with `srlm chat`."""
    parser.add_argument(
        "--checkpoint", required=True, help="HF-layout checkpoint directory (with tokenizer.json)"
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=256)
    parser.add_argument("--temperature", type=nonnegative_float, default=0.7, help="0 = greedy")
    parser.add_argument("--top-p", type=probability, default=0.9)
    parser.add_argument("--top-k", type=nonnegative_int, default=0, help="0 = no top-k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--system", default=None, help="system prompt for the chat template")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu or cuda")
    parser.add_argument("--max-batch", type=positive_int, default=64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    src.add_argument("--prompts", help='JSONL file: one {"prompt": ...} or {"messages": [...]} per line')
    parser.add_argument("--out", help="output JSONL (default: print to stdout)")
    add_overwrite(parser, "--out file")
    parser.add_argument("--n", type=positive_int, default=1, help="samples per prompt")
    parser.add_argument("--raw", action="store_true", help="no chat template: continue the text as is")
    parser.add_argument("--logprobs", action="store_true", help="include per-token log-probs")
    add_sampling_arguments(parser)


def load_generator(args: argparse.Namespace):
    """(Generator, Tokenizer) for `args.checkpoint` on `args.device` (bf16 on CUDA, fp32 on CPU)."""

    device = resolve_device(args.device)
    dtype = default_dtype(device)
    if not is_checkpoint_dir(args.checkpoint):
        what = "no such directory" if not os.path.exists(args.checkpoint) else "not a checkpoint"
        raise ValueError(f"--checkpoint: {args.checkpoint}: {what} (config.json + model.safetensors)")
    tokenizer = load_tokenizer(args.checkpoint)
    model = Llama.from_pretrained(args.checkpoint, dtype=dtype, device=device).eval()
    return Generator(model, tokenizer, max_batch=args.max_batch), tokenizer


def sampling_params(args: argparse.Namespace, n: int = 1):
    if any(not s for s in args.stop):
        raise ValueError("--stop: an empty stop string would end every completion at once")
    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        n=n,
        seed=args.seed,
        stop=tuple(args.stop),
        logprobs=getattr(args, "logprobs", False),
    )


def _read_prompts(args: argparse.Namespace) -> list[dict]:
    if args.prompt:
        return [{"prompt": p} for p in args.prompt]

    def check(row: dict) -> str | None:
        if isinstance(row.get("prompt"), str) or isinstance(row.get("messages"), list):
            return None
        return 'needs "prompt" (a string) or "messages" (a list of {role, content})'

    rows, _ = read_jsonl(args.prompts, validate=check)
    if not rows:
        raise DataError(f"{args.prompts}: no prompts in the file")
    return rows


def run_with_progress(
    gen: Generator, requests: list, params: SamplingParams, desc: str, interval_s: float = 30.0
):
    """`gen.generate(requests, params)`, reporting finished samples on stderr as it goes (a bar on a terminal,
    else a line every `interval_s` seconds with done/total, rate and ETA)."""
    seqs, prompts = gen.prepare(requests, params)
    samples = [s for group in seqs for s in group]
    # Progress lines go to stderr: stdout may be the JSONL output itself.
    with Progress(desc, interval_s=interval_s, unit="samples", stream=sys.stderr) as progress:
        progress.add_total(len(samples))
        done, last = 0, time.perf_counter()
        for _ in gen.steps(seqs, prompts):
            now = time.perf_counter()
            if now - last >= 0.5:
                last = now
                finished = sum(s.finish is not None for s in samples)
                progress.update(finished - done)
                done = finished
        progress.update(len(samples) - done)
    return gen.collect(seqs, prompts)


def main(args: argparse.Namespace) -> int:
    if args.out:  # before any work: an output that would lose something is refused now, not after sampling
        check_output(args.out, kind="JSONL file", overwrite=args.overwrite, inputs=[args.prompts, args.checkpoint],
                     is_kind=looks_like_jsonl)  # fmt: skip
    rows = _read_prompts(args)
    gen, tok = load_generator(args)
    requests = []
    for row in rows:
        if "messages" in row:
            requests.append(tok.encode_chat(row["messages"], add_generation_prompt=True)[0])
        elif args.raw:
            requests.append(tok.encode(row["prompt"]))
        else:
            requests.append(tok.encode_prompt(row["prompt"], system=args.system))
    results = run_with_progress(gen, requests, sampling_params(args, args.n), "generating")
    out_rows = []
    for row, r in zip(rows, results):
        completions = []
        for s in r.samples:
            c = {"text": s.text, "finish_reason": s.finish_reason, "num_tokens": len(s.token_ids)}
            if s.logprobs is not None:
                c["logprobs"] = s.logprobs
            completions.append(c)
        out_rows.append({"index": r.request_index, **row, "completions": completions})
    if args.out:
        check_output(
            args.out,
            kind="JSONL file",
            overwrite=args.overwrite,
            inputs=[args.prompts],
            is_kind=looks_like_jsonl,
        )  # fmt: skip  (again: it may have appeared meanwhile)
        write_jsonl_atomic(args.out, out_rows)
        print(f"wrote {len(out_rows)} results to {args.out}", file=sys.stderr)
    else:
        for o in out_rows:
            print(json.dumps(o, ensure_ascii=False))
    return 0
