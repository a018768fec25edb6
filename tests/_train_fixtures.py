"""Shared test data for the trainer tests: a tokenizer trained on the fly, a tiny random checkpoint, SFT
and DPO JSONL files. Everything is small so CPU runs take seconds."""

from __future__ import annotations

import json
import random
from pathlib import Path

from srlm_fast.model.checkpoint import save_pretrained
from srlm_fast.model.config import ModelConfig
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import Tokenizer

# Smaller than the "tiny" preset: two layers of width 32 keep every step in milliseconds.
TEST_MODEL = ModelConfig(
    vocab_size=384, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=64, max_seq_len=256
)
WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "red",
    "blue",
    "green",
    "fast",
    "slow",
    "runs",
    "jumps",
    "over",
    "under",
    "big",
    "small",
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def make_workspace(root: Path, n_sft: int = 48, n_pairs: int = 24) -> dict[str, Path]:
    """Write sft.jsonl, pairs.jsonl and an `init` checkpoint (with tokenizer) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)

    def words(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    sft = []
    for i in range(n_sft):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if i % 3 == 0:  # the multi-turn format
            msgs = [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": f"add {a} and {b}"},
                {"role": "assistant", "content": f"{a + b}"},
                {"role": "user", "content": f"and {words(2)}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}. {words(rng.randint(1, 6))}"},
            ]
            sft.append({"messages": msgs})
        else:
            sft.append(
                {
                    "prompt": f"add {a} and {b} {words(3)}",
                    "response": f"{a} plus {b} is {a + b}. {words(rng.randint(2, 12))}",
                }
            )
    pairs = []
    for _ in range(n_pairs):
        pairs.append(
            {
                "prompt": f"say something {words(3)}",
                "chosen": f"red blue {words(4)}",
                "rejected": f"cat dog {words(4)}",
            }
        )
    texts = [json.dumps(r) for r in sft + pairs] * 3
    tok = Tokenizer.train_bpe(texts, vocab_size=TEST_MODEL.vocab_size)
    init = save_pretrained(build_model(TEST_MODEL, seed=0), root / "init", tokenizer=tok)
    return {
        "root": root,
        "sft": _write_jsonl(root / "sft.jsonl", sft),
        "pairs": _write_jsonl(root / "pairs.jsonl", pairs),
        "init": init,
    }


def sft_overrides(ws: dict[str, Path], run_dir: Path, **extra) -> list[str]:
    """Command-line style overrides for a short SFT run on the workspace."""
    base = {
        "model.init": str(ws["init"]),
        "data.train": str(ws["sft"]),
        "data.max_seq_len": 96,
        "optim.lr": 3e-3,
        "optim.min_lr": 3e-4,
        "optim.warmup_steps": 2,
        "schedule.max_steps": 8,
        "schedule.micro_batch_size": 4,
        "checkpoint.run_dir": str(run_dir),
        "device": "cpu",
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return _format(base)


def dpo_overrides(ws: dict[str, Path], init: Path, run_dir: Path, **extra) -> list[str]:
    base = {
        "task": "dpo",
        "model.init": str(init),
        "data.train": str(ws["pairs"]),
        "data.max_seq_len": 96,
        "optim.lr": 2e-3,
        "optim.min_lr": 2e-4,
        "schedule.max_steps": 8,
        "schedule.micro_batch_size": 4,
        "checkpoint.run_dir": str(run_dir),
        "device": "cpu",
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return _format(base)


def _format(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        text = json.dumps(v) if isinstance(v, str | bool) else str(v)  # TOML literals: "str", true, 1e-3
        out.append(f"--{k}={text}")
    return out


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """Last record of each step in metrics.jsonl (a resumed run logs the re-run steps again)."""
    out: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec
    return out


def one_thread():
    """Generator for an autouse fixture: tiny matmuls on a busy 2-core machine are ~1000x slower with two
    OpenMP threads contending than with one, so the trainer tests run single-threaded."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
