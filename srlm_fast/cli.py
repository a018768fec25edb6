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
    except (ValueError, FileNotFoundError) as e:
        # Our errors (ConfigError, DataError, CheckpointError, ...) carry a complete message already.
        if "SRLM_DEBUG" in os.environ:  # show the traceback
            raise
        # Under torchrun every rank usually fails alike; the rank tells the copies apart (and names a lone one).
        rank = f" [rank {os.environ['RANK']}]" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"srlm {args.command}{rank}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
