"""TOML job configs: SFT, DPO and the self-rewarding loop are dataclasses loaded from TOML with
`--section.key=value` command-line overrides; unknown keys and wrong types are errors naming the key, never
silently ignored. (A model's own `config.json` is `srlm_fast.model.config.ModelConfig`.)
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from srlm_fast.io import read_text


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key or file."""


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict; unknown keys and wrong types are `ConfigError`s naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        name = where or cls.__name__
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def _describe(value: Any) -> str:
    """A value and its type in words, for error messages (`True (a boolean)`)."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             tuple: "a list", dict: "a table", type(None): "nothing"}  # fmt: skip
    kind = kinds.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({kind})"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a table"
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "a boolean (true or false)",
        Path: "a path",
    }
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """`value` checked against the annotation `tp` (int, float, bool, str, Path, Literal, enum, list/tuple, dict,
    Optional/Union, nested dataclass, Any); a wrong type is a `ConfigError` naming `where`. No silent
    conversions: `True` is not an integer, `"3"` is not a number, `1.5` is not an integer (an integer is a
    number), and a float that is NaN is refused."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got nothing")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                # A nested error (inside a table or list) is more precise than "expected X or Y".
                if str(e).split(":", 1)[0] != where:
                    raise
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where=where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[A, B]: a fixed length
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected a list of {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_describe(value)}")
        args = typing.get_args(tp)
        if len(args) == 2:
            return {
                _coerce(args[0], k, f"{where} (key {k!r})"): _coerce(args[1], v, f"{where}.{k}")
                for k, v in value.items()
            }
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value is member or (type(value) is type(member.value) and value == member.value):
                return member
        choices = ", ".join(repr(m.value) for m in tp)
        raise ConfigError(f"{where}: expected one of {choices}, got {_describe(value)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"{where}: expected a number, got nan")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        return Path(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    return value


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`["--train.lr=1e-4", "--model.preset=debug"]` → nested dict. Values are TOML literals, else strings."""
    out: dict[str, Any] = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"override {arg!r} must look like --section.key=value")
        key, raw = arg[2:].split("=", 1)
        if not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"override {arg!r} must look like --section.key=value (an empty key)")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a string
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {arg!r} conflicts with another override")
        node[leaf] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file as a dict; a missing file, undecodable bytes and bad TOML are errors naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a TOML file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except ValueError as e:  # DataError: bytes that are not UTF-8, with file:line
        raise ConfigError(str(e)) from None


def load_job_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Load job config `cls` from an optional TOML file plus `--section.key=value` overrides.

    Types are checked here (`_coerce`); a config class with a `validate()` method has its values (counts,
    sizes, intervals, paths) checked by the caller before any work, once it is complete."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
    data = merge(data, parse_overrides(list(overrides)))
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def changed_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (e.g. `to_dict` of two configs)."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += changed_keys(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(prefix + key)
    return out


def require(ok: bool, key: str, message: str, value: Any = ...) -> None:
    """`ConfigError(f"{key}: {message}, got {value}")` unless `ok`: the one shape of a value check."""
    if not ok:
        got = "" if value is ... else f", got {value!r}"
        raise ConfigError(f"{key}: {message}{got}")


def finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def to_dict(obj: Any) -> Any:
    """Dataclass → plain nested dict (None values dropped, so the result is valid TOML)."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_toml(obj: Any) -> str:
    """Serialise a (nested) dataclass config as TOML (the resolved config saved beside a run)."""
    data = to_dict(obj)
    lines: list[str] = []

    def emit(table: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        if scalars:
            lines.append("")
        for k, v in subtables.items():
            emit(v, f"{prefix}.{k}" if prefix else k)

    emit(data, "")
    return "\n".join(lines).rstrip() + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} as TOML")


__all__ = [
    "ConfigError",
    "changed_keys",
    "finite",
    "from_dict",
    "load_job_config",
    "merge",
    "parse_overrides",
    "read_toml",
    "require",
    "to_dict",
    "to_toml",
]
