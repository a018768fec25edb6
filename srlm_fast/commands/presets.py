"""`srlm presets`: the model presets with parameter counts, FLOPs per token and memory estimates."""

from __future__ import annotations

import argparse
import json

from srlm_fast.model.config import PRESETS, ModelConfig

HELP = "list model presets: parameters, FLOPs per token, memory for inference and training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seq-len", type=positive_int, default=2048, help="sequence length for FLOPs (default 2048)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def positive_int(text: str) -> int:
    # Not commands._args, which imports torch for its device check: `srlm presets` stays light.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def describe(name: str, cfg: ModelConfig, seq_len: int) -> dict:
    n = cfg.num_params()
    return {
        "preset": name,
        "params": n,
        "layers": cfg.n_layers,
        "dim": cfg.dim,
        "heads": f"{cfg.n_heads}/{cfg.n_kv_heads}",
        "vocab": cfg.vocab_size,
        "tied": cfg.tie_embeddings,
        # Training: 6N + attention (see ModelConfig.flops_per_token); decoding one token: ~2N.
        "train_flops_per_token": cfg.flops_per_token(seq_len),
        "decode_flops_per_token": 2 * cfg.num_params(include_embedding=False),
        "weights_bf16_gib": 2 * n / 2**30,
        # fp32 master weights + fp32 grads + AdamW's two fp32 moments = 16 bytes/param, summed over
        # all FSDP ranks (activations come on top and depend on batch and checkpointing).
        "train_state_gib": 16 * n / 2**30,
        "kv_cache_mib_per_1k_tokens": cfg.kv_cache_bytes_per_token(2) * 1024 / 2**20,
    }


def main(args: argparse.Namespace) -> int:
    rows = [describe(name, cfg, args.seq_len) for name, cfg in PRESETS.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'preset':<14} {'params':>9} {'layers':>6} {'dim':>5} {'heads':>6} {'vocab':>7} {'tied':>5} "
    header += f"{'train GF/tok':>12} {'bf16 GiB':>9} {'train GiB':>10} {'KV MiB/1k tok':>13}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['preset']:<14} {_human(r['params']):>9} {r['layers']:>6} {r['dim']:>5} {r['heads']:>6} "
            f"{r['vocab']:>7} {'yes' if r['tied'] else 'no':>5} {r['train_flops_per_token'] / 1e9:>12.3f} "
            f"{r['weights_bf16_gib']:>9.2f} {r['train_state_gib']:>10.1f} {r['kv_cache_mib_per_1k_tokens']:>13.1f}"
        )
    print(
        f"\ntrain GF/tok: training FLOPs per token at seq_len={args.seq_len} (6N + attention, PaLM accounting);"
    )
    print(
        "train GiB: fp32 weights + grads + AdamW moments (16 B/param), summed over FSDP ranks, no activations."
    )
    return 0


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
