"""The training state on disk without pickle: safetensors per rank + JSON.

A resume reads files an attacker may have planted (a shared run directory, a downloaded checkpoint), so no
load path unpickles anything: `torch.distributed.checkpoint` keeps its metadata as a pickle, and `torch.load`
of anything but weights runs code. Instead, a checkpoint's `state/` holds

    index.json                          format, world size, and for every entry of the model + optimizer
                                        state dict: a tensor's global shape, dtype and how the ranks hold it
                                        (each rank's rows of dim 0, or a full copy), or a plain JSON value
    rank-00000-of-00002.safetensors     each rank's local tensors (its FSDP shards), its RNG states

safetensors is a header of JSON plus raw bytes: reading it runs no code. Loading fills a template state dict
(the one `get_state_dict` gives for the freshly built model and optimizer) in place, so every key, shape and
dtype is checked against what this run expects, and an FSDP shard reads only its rows. The world size may
change between save and resume: rows are re-cut from whichever files hold them (FSDP2 splits dim 0 like
`torch.chunk`). Non-tensor entries (the optimizer's param groups) come from JSON, keeping the template's
types (a tuple stays a tuple).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from srlm_fast import distributed as D
from srlm_fast.io import read_json, write_json_atomic
from srlm_fast.model.checkpoint import CheckpointError, name_mismatch

FORMAT = "srlm-train-state/1"
INDEX = "index.json"
_SEP = "/"
_RNG_KEYS = ("rng/torch", "rng/cuda")


def rank_file(rank: int, world: int) -> str:
    return f"rank-{rank:05d}-of-{world:05d}.safetensors"


# ---- flattening ------------------------------------------------------------------------------------


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → {"a/b/c": leaf}; lists and tuples are leaves (the optimizer's param groups)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            key = str(k)
            if _SEP in key:
                raise ValueError(f"state key {key!r} contains {_SEP!r}")
            out.update(_flatten(v, f"{prefix}{key}{_SEP}"))
        return out
    return {prefix.removesuffix(_SEP): tree}


def _set_flat(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(_SEP)
    node = tree
    for p in parents:
        node = (
            node[p] if p in node else node[int(p)]
        )  # optimizer state is keyed by int in some torch versions
    if leaf in node:
        node[leaf] = value
    else:
        node[int(leaf)] = value


def _layout(t: torch.Tensor, rank: int) -> tuple[str, tuple[int, ...], int, int, torch.Tensor]:
    """(layout, global shape, first row, rows, local tensor) of one state tensor on this rank."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    if isinstance(t, DTensor):
        local = t.to_local()
        placements = tuple(t.placements)
        if placements == (Shard(0),):
            n, world = t.shape[0], t.device_mesh.size()
            per = -(-n // world)
            start = min(rank * per, n)
            return "shard0", tuple(t.shape), start, local.shape[0], local
        if all(isinstance(p, Replicate) for p in placements):
            return "replicate", tuple(t.shape), 0, t.shape[0] if t.ndim else 0, local
        raise CheckpointError(
            f"cannot save a tensor placed as {placements} (only FSDP's Shard(0) or Replicate)"
        )
    return "replicate", tuple(t.shape), 0, t.shape[0] if t.ndim else 0, t


def _to_json(value: Any, key: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": str(value)}
    if isinstance(value, list | tuple):
        return [_to_json(v, key) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v, key) for k, v in value.items()}
    raise CheckpointError(f"state entry {key}: cannot store a {type(value).__name__} without pickle")


def _from_json(value: Any, template: Any, key: str, where: str) -> Any:
    """A JSON value shaped like `template` (tuples stay tuples; the types must agree)."""
    if isinstance(value, dict) and set(value) == {"float"} and not isinstance(template, dict):
        try:
            return float(value["float"])
        except (TypeError, ValueError):
            raise CheckpointError(f"{where}: entry {key}: bad float {value['float']!r}") from None
    if isinstance(template, tuple | list):
        if not isinstance(value, list) or len(value) != len(template):
            raise CheckpointError(f"{where}: entry {key} should be a list of {len(template)} items")
        items = [_from_json(v, t, f"{key}[{i}]", where) for i, (v, t) in enumerate(zip(value, template))]
        return tuple(items) if isinstance(template, tuple) else items
    if isinstance(template, dict):
        if not isinstance(value, dict) or set(value) != {str(k) for k in template}:
            raise CheckpointError(f"{where}: entry {key} does not have the keys this optimizer has")
        return {k: _from_json(value[str(k)], t, f"{key}.{k}", where) for k, t in template.items()}
    if template is None or value is None:
        return value
    if isinstance(template, bool) != isinstance(value, bool):
        raise CheckpointError(f"{where}: entry {key} should be {type(template).__name__}, got {value!r}")
    if isinstance(template, int | float) and isinstance(value, int | float):
        return type(template)(value)
    if type(template) is not type(value):
        raise CheckpointError(f"{where}: entry {key} should be {type(template).__name__}, got {value!r}")
    return value


# ---- save ------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, torch.Tensor]:
    state = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng/cuda"] = torch.cuda.get_rng_state()
    return state


def save_state(state: dict, directory: Path, info: D.DistInfo) -> None:
    """Write `state` (model + optimizer state dict, possibly sharded) into `directory` (collective)."""
    directory.mkdir(parents=True, exist_ok=True)
    flat = _flatten(state)
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, Any] = {}
    for key, value in flat.items():
        if isinstance(value, torch.Tensor):
            layout, shape, start, rows, local = _layout(value, info.rank)
            local = local.detach().to("cpu").contiguous()
            if local.untyped_storage().size() != local.numel() * local.itemsize:
                local = local.clone()  # safetensors writes whole storages: no shared views
            tensors[key] = local
            entries[key] = {"layout": layout, "shape": list(shape), "dtype": str(value.dtype).removeprefix("torch."),
                            "rows": [start, rows]}  # fmt: skip
        else:
            entries[key] = {"value": _to_json(value, key)}
    tensors.update(rng_state())
    save_file(tensors, str(directory / rank_file(info.rank, info.world_size)), metadata={"format": FORMAT})
    gathered = D.all_gather_objects({k: e["rows"] for k, e in entries.items() if "rows" in e}, info)
    if info.is_main:
        for key, entry in entries.items():
            if "rows" in entry:
                entry["rows"] = [part[key] for part in gathered]
        write_json_atomic(
            directory / INDEX, {"format": FORMAT, "world_size": info.world_size, "entries": entries}
        )
    D.barrier(info)


# ---- load -----------------------------------------------------------------------------------------------


_DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                                       torch.int64, torch.int32, torch.uint8, torch.bool)}  # fmt: skip


def _read_index(directory: Path) -> dict:
    where = directory / INDEX
    index = read_json(where)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a training state of format {FORMAT}")
    world, entries = index.get("world_size"), index.get("entries")
    if isinstance(world, bool) or not isinstance(world, int) or world < 1 or not isinstance(entries, dict):
        raise CheckpointError(f"{where}: bad world_size or entries")
    for key, e in entries.items():
        if not isinstance(e, dict) or not ("value" in e or _valid_tensor_entry(e, world)):
            raise CheckpointError(f"{where}: entry {key} is malformed")
    return index


def _valid_tensor_entry(e: dict, world: int) -> bool:
    def ints(x, n=None):
        return (
            isinstance(x, list)
            and (n is None or len(x) == n)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in x)
        )

    return (
        e.get("layout") in ("shard0", "replicate")
        and ints(e.get("shape"))
        and e.get("dtype") in _DTYPES
        and isinstance(e.get("rows"), list)
        and len(e["rows"]) == world
        and all(ints(r, 2) for r in e["rows"])
    )


class _Files:
    """Open safetensors files of one state directory, by rank."""

    def __init__(self, directory: Path, world: int) -> None:
        self.dir, self.world = directory, world
        self._open: dict[int, Any] = {}

    def get(self, rank: int):
        if rank not in self._open:
            path = self.dir / rank_file(rank, self.world)
            if not path.is_file():
                raise CheckpointError(f"{path}: missing (the checkpoint is incomplete)")
            try:
                self._open[rank] = safe_open(str(path), framework="pt", device="cpu")
            except (SafetensorError, OSError, ValueError) as e:
                raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({e})") from None
        return self._open[rank]

    def rows(self, rank: int, key: str, lo: int, hi: int) -> torch.Tensor:
        f = self.get(rank)
        try:
            return f.get_slice(key)[lo:hi]
        except (SafetensorError, KeyError, ValueError) as e:
            raise CheckpointError(f"{self.dir / rank_file(rank, self.world)}: tensor {key}: {e}") from None

    def full(self, rank: int, key: str) -> torch.Tensor:
        f = self.get(rank)
        try:
            return f.get_tensor(key)
        except (SafetensorError, KeyError, ValueError) as e:
            raise CheckpointError(f"{self.dir / rank_file(rank, self.world)}: tensor {key}: {e}") from None


def _wanted_rows(t: torch.Tensor, rank: int) -> tuple[int, int, torch.Tensor]:
    """(first row, end row, local tensor to fill) of template tensor `t` on this rank."""
    layout, shape, start, rows, local = _layout(t, rank)
    if layout == "shard0":
        return start, start + rows, local
    return 0, (shape[0] if shape else 0), local


def _read_rows(files: _Files, key: str, entry: dict, lo: int, hi: int, rank: int) -> torch.Tensor:
    """Rows [lo, hi) of dim 0 of the saved tensor `key`, from whichever rank files hold them."""
    shape = entry["shape"]
    if not shape:  # a scalar (e.g. the optimizer's step count): every rank holds it
        return files.full(rank if rank < files.world else 0, key)
    if entry["layout"] == "replicate":
        src = rank if rank < files.world else 0
        return files.rows(src, key, lo, hi)
    parts = []
    for r, (start, n) in enumerate(entry["rows"]):
        a, b = max(lo, start), min(hi, start + n)
        if a < b:
            parts.append(files.rows(r, key, a - start, b - start))
    if sum(p.shape[0] for p in parts) != hi - lo:
        raise CheckpointError(f"{files.dir}: tensor {key}: the ranks' rows do not cover [{lo}, {hi})")
    if not parts:
        return torch.empty((0, *shape[1:]), dtype=_DTYPES[entry["dtype"]])
    return torch.cat(parts) if len(parts) > 1 else parts[0]


@torch.no_grad()
def load_state(template: dict, directory: Path, info: D.DistInfo, *, restore_rng: bool = True) -> None:
    """Fill `template` (a model + optimizer state dict shaped for this run) in place from `directory`.

    Every key of the template must be in the checkpoint with the same global shape and dtype (and the other
    way round): a different model or optimizer is an error naming the entry. With `restore_rng`, this rank's
    RNG states are restored when the world size is the one saved (data order does not depend on them)."""
    index = _read_index(directory)
    entries, world = index["entries"], index["world_size"]
    files = _Files(directory, world)
    flat = _flatten(template)
    missing = sorted(set(flat) - set(entries))
    unexpected = sorted(set(entries) - set(flat))
    if missing or unexpected:
        why = name_mismatch(missing, unexpected, most=5)
        raise CheckpointError(
            f"{directory}: the saved training state does not match this model and optimizer ({why})"
        )
    for key, tmpl in flat.items():
        entry = entries[key]
        if not isinstance(tmpl, torch.Tensor):
            if "value" not in entry:
                raise CheckpointError(
                    f"{directory}: entry {key} should be a value, the checkpoint has a tensor"
                )
            _set_flat(template, key, _from_json(entry["value"], tmpl, key, str(directory / INDEX)))
            continue
        if "value" in entry:
            raise CheckpointError(f"{directory}: entry {key} should be a tensor, the checkpoint has a value")
        want_dtype = str(tmpl.dtype).removeprefix("torch.")
        if list(tmpl.shape) != entry["shape"] or want_dtype != entry["dtype"]:
            raise CheckpointError(
                f"{directory}: tensor {key} is {entry['dtype']} {entry['shape']} in the checkpoint but this run "
                f"has {want_dtype} {list(tmpl.shape)}"
            )
        lo, hi, local = _wanted_rows(tmpl, info.rank)
        src = _read_rows(files, key, entry, lo, hi, info.rank)
        if tuple(src.shape) != tuple(local.shape) or src.dtype != local.dtype:
            raise CheckpointError(f"{directory}: tensor {key}: stored rows have shape {list(src.shape)}")
        local.copy_(src)
    if restore_rng and world == info.world_size:
        f = files.get(info.rank)
        keys = set(f.keys())
        if "rng/torch" in keys:
            torch.set_rng_state(_rng_tensor(files, info.rank, "rng/torch"))
        if "rng/cuda" in keys and torch.cuda.is_available():
            torch.cuda.set_rng_state(_rng_tensor(files, info.rank, "rng/cuda"))


def _rng_tensor(files: _Files, rank: int, key: str) -> torch.Tensor:
    t = files.full(rank, key)
    if t.dtype != torch.uint8 or t.ndim != 1:
        raise CheckpointError(f"{files.dir}: {key} is not an RNG state (uint8 vector)")
    return t


# ---- format detection -------------------------------------------------------------------------------------


_OLD_FORMAT_FILES = (".metadata",)


def is_old_format(checkpoint: Path) -> bool:
    """A checkpoint written by srlm-fast before the pickle-free format (torch.distributed.checkpoint state with
    a pickled `.metadata`, RNG states as `rng-rank*.pt`)."""
    state = checkpoint / "state"
    return not (state / INDEX).is_file() and (
        any((state / n).exists() for n in _OLD_FORMAT_FILES) or any(checkpoint.glob("rng-rank*.pt"))
    )


STEP_DIR = re.compile(r"step-\d{6,}")


def valid_step_name(name: str) -> bool:
    return bool(STEP_DIR.fullmatch(name)) and os.sep not in name
