"""`srlm`: the command-line entry point.

Each subcommand is one module in `srlm_fast/commands/` that defines `HELP` (one line),
`add_arguments(parser)` and `main(args) -> int`. Commands are discovered, not listed here, and
only the module of the command being run is imported (so `srlm presets` does not pay for
the imports of `srlm run`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from srlm_fast import commands


def _command_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def _load(name: str):
    return importlib.import_module(f"srlm_fast.commands.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srlm", description="srlm-fast: train self-rewarding language models (SFT, judge, DPO, iterate)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_names():
        if only is not None and name != only:
            continue
        module = _load(name)
        p = sub.add_parser(name.replace("_", "-"), help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = argv[0].replace("-", "_") if argv and not argv[0].startswith("-") else None
    only = wanted if wanted in _command_names() else None
    parser = build_parser(only)
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    # Commands that take `--section.key=value` config overrides declare `ACCEPTS_OVERRIDES = True`.
    if extra:
        if not getattr(args._module, "ACCEPTS_OVERRIDES", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    elif getattr(args._module, "ACCEPTS_OVERRIDES", False):
        args.overrides = []
    try:
        return int(args._module.main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if "SRLM_DEBUG" in os.environ:  # show the traceback
            raise
        print(f"srlm {args.command}{_rank_tag()}: error: {error_message(e)}", file=sys.stderr)
        return 1


def _rank_tag() -> str:
    # Under torchrun every rank usually fails alike; the rank tells the copies apart (and names a lone one).
    try:
        return f" [rank {os.environ['RANK']}]" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    except ValueError:
        return ""


def error_message(e: BaseException) -> str:
    """One line for the user. Our errors (ConfigError, DataError, CheckpointError, OutputError, ...) carry a
    complete message naming the file, line, key or path; an OS error is named with its path; anything else is
    an internal error, named with its type (SRLM_DEBUG=1 shows the traceback)."""
    if isinstance(e, OSError) and e.filename:
        text = f"{e.filename}: {e.strerror or e}" + (f" (and {e.filename2})" if e.filename2 else "")
    elif isinstance(e, ValueError | OSError):
        text = str(e)
    else:
        text = f"internal error ({type(e).__name__}: {e}); set SRLM_DEBUG=1 to see where"
    return " ".join(text.split()) or type(e).__name__


def entry(argv: list[str] | None = None) -> None:
    """The `srlm` console script: `main`, then exit with its code.

    A torchrun worker exits without the interpreter's teardown, where torch's leftover gloo threads can abort
    a finished job (see `distributed.exit_without_teardown`).
    """
    code = main(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun (torch is imported by now)
        from srlm_fast.distributed import exit_without_teardown

        exit_without_teardown(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
