"""Argument types shared by the subcommands: every count, size, rate and device is checked when the command
line is parsed, before any work, and a bad value is one argparse error naming the flag."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from srlm_fast.device import resolve_device
from srlm_fast.io import read_text
from srlm_fast.recipe.judge import JudgeTemplate


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _within(text: str, kind: type, ok: Callable[[float], bool], rule: str) -> int | float:
    value = _number(text, kind)
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{rule}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _within(text, int, lambda v: v >= 1, "must be at least 1")


def nonnegative_int(text: str) -> int:
    return _within(text, int, lambda v: v >= 0, "must be 0 or more")


def nonnegative_float(text: str) -> float:
    return _within(text, float, lambda v: v >= 0, "must be 0 or more")


def positive_float(text: str) -> float:
    return _within(text, float, lambda v: v > 0, "must be more than 0")


def probability(text: str) -> float:
    """A top-p: in (0, 1]."""
    return _within(text, float, lambda v: 0 < v <= 1, "must be in (0, 1]")


def device(text: str) -> str:
    """A device name the one device rule accepts (auto, cpu, cuda, cuda:N present on this machine)."""
    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--overwrite", action="store_true", help=f"replace an existing {what} (without it, one is refused)"
    )


def judge_template(spec: str) -> JudgeTemplate:
    """The judge template `spec` names ("compact", "full" or a file), read now: a bad file is an error before
    any model is loaded (bytes that are not UTF-8 are named with file:line)."""
    if spec in ("compact", "full"):
        return JudgeTemplate.from_spec(spec)
    return JudgeTemplate(read_text(spec).strip("\n"), name=str(spec))
