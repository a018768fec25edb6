"""`srlm tokenizer`: train a byte-level BPE on text files, or show how a tokenizer encodes a chat."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from srlm_fast.model.tokenizer import Tokenizer

HELP = "train a byte-level BPE tokenizer (train) or inspect one (show)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    train = sub.add_parser("train", help="train a byte-level BPE with srlm's special tokens")
    train.add_argument("inputs", nargs="+", type=Path, help="text files (.txt) or JSONL files (.jsonl)")
    train.add_argument("--out", type=Path, required=True, help="output directory (tokenizer.json + config)")
    train.add_argument("--vocab-size", type=int, default=4096)
    train.add_argument("--min-frequency", type=int, default=2)
    show = sub.add_parser("show", help="encode a message with the chat template and show the assistant mask")
    show.add_argument("directory", type=Path, help="a directory with tokenizer.json")
    show.add_argument("--user", default="What is 2 + 3?")
    show.add_argument("--assistant", default="2 + 3 = 5.")
    show.add_argument("--template", default=None, help="override the detected chat template")


def _texts(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        # Every string field of every row is training text (prompts, responses, messages).
                        yield from _strings(json.loads(line))
        else:
            yield from path.read_text(encoding="utf-8").splitlines()


def _strings(obj) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def main(args: argparse.Namespace) -> int:
    if args.action == "train":
        tok = Tokenizer.train_bpe(
            _texts(args.inputs), vocab_size=args.vocab_size, min_frequency=args.min_frequency
        )
        tok.save(args.out)
        print(f"trained a byte-level BPE with {tok.vocab_size} tokens → {args.out}/tokenizer.json")
        return 0
    tok = Tokenizer.from_dir(args.directory, template=args.template)
    messages = [{"role": "user", "content": args.user}, {"role": "assistant", "content": args.assistant}]
    ids, mask = tok.encode_chat(messages)
    print(f"template: {tok.template.name}   vocab: {tok.vocab_size}   stop ids: {tok.stop_ids}")
    for i, m in zip(ids, mask):
        piece = tok.decode([i], skip_special=False)
        print(f"{i:>7}  {'T' if m else ' '}  {piece!r}")
    print("T = assistant target token (counted by the SFT loss)")
    return 0
