"""`srlm tokenizer`: train a byte-level BPE on text files, or show how a tokenizer encodes a chat.

`train --out DIR` writes tokenizer.json and tokenizer_config.json into DIR: a new or empty directory, or (with
`--overwrite`) one that holds a tokenizer and no model; never a checkpoint (its model would no longer match).
Inputs are read as bytes: a line that is not UTF-8, or a JSONL line that is not JSON, is named with file:line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from srlm_fast.commands._args import add_overwrite, positive_int
from srlm_fast.io import DataError, check_output, iter_lines
from srlm_fast.model.checkpoint import INDEX_FILE, SINGLE_FILE
from srlm_fast.model.tokenizer import SPECIAL_TOKENS, Tokenizer

# A byte-level BPE starts from the 256 byte symbols plus our special tokens.
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)

HELP = "train a byte-level BPE tokenizer (train) or inspect one (show)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    train = sub.add_parser("train", help="train a byte-level BPE with srlm's special tokens")
    train.add_argument("inputs", nargs="+", type=Path, help="text files (.txt) or JSONL files (.jsonl)")
    train.add_argument("--out", type=Path, required=True, help="output directory (tokenizer.json + config)")
    add_overwrite(train, "tokenizer in --out")
    train.add_argument("--vocab-size", type=positive_int, default=4096, help=f"at least {MIN_VOCAB}")
    train.add_argument("--min-frequency", type=positive_int, default=2)
    show = sub.add_parser("show", help="encode a message with the chat template and show the assistant mask")
    show.add_argument("directory", type=Path, help="a directory with tokenizer.json")
    show.add_argument("--user", default="What is 2 + 3?")
    show.add_argument("--assistant", default="2 + 3 = 5.")
    show.add_argument("--template", default=None, help="override the detected chat template")


def _texts(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        for lineno, line, problem in iter_lines(path):
            if problem is not None:
                raise DataError(f"{path}:{lineno}: {problem}")
            if path.suffix != ".jsonl":
                yield line
            elif line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(
                        f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})"
                    ) from None
                # Every string field of every row is training text (prompts, responses, messages).
                yield from _strings(row)


def is_tokenizer_dir(path: Path) -> bool:
    """A directory with a tokenizer.json and no model weights (a checkpoint's tokenizer is not ours to replace)."""
    return (path / "tokenizer.json").is_file() and not any(
        (path / n).exists() for n in (SINGLE_FILE, INDEX_FILE)
    )


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
        if args.vocab_size < MIN_VOCAB:
            raise ValueError(f"--vocab-size must be at least {MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special "
                             f"tokens), got {args.vocab_size}")  # fmt: skip
        for path in args.inputs:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file")
        check_output(args.out, kind="tokenizer directory", directory=True, overwrite=args.overwrite,
                     inputs=args.inputs, is_kind=is_tokenizer_dir)  # fmt: skip
        texts = list(_texts(args.inputs))  # read (and checked) completely before training
        if not any(t.strip() for t in texts):
            raise DataError(f"no text in {', '.join(map(str, args.inputs))}")
        tok = Tokenizer.train_bpe(texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tokenizer.", dir=args.out) as tmp:
            tok.save(tmp)  # complete files first, then each renamed into place
            for f in sorted(Path(tmp).iterdir()):
                os.replace(f, args.out / f.name)
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
