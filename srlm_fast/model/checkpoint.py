"""Checkpoints in the Hugging Face Llama layout.

A checkpoint directory holds `config.json`, the weights as `model.safetensors` (or shards
`model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`) and, when there is one,
`tokenizer.json`. `transformers.LlamaForCausalLM.from_pretrained` loads what we save and we load
what it saves.

Loading streams: tensors are read one at a time from memory-mapped safetensors files, shard by
shard, straight into the (already allocated) parameters. A parameter that is an FSDP2 `DTensor`
sharded on dim 0 reads only its own rows from disk, so no rank ever holds the whole model.
Saving writes into a temporary directory that is renamed into place, so a killed save never leaves
a half-written checkpoint behind the real name. It never replaces what is not a checkpoint: an existing
path is refused unless it is an empty directory, or a checkpoint and `overwrite=True`; and the output may
not be (or contain) one of the save's inputs (the tokenizer's source directory, `inputs=`).

This module knows tensors, names and `config.json`, never the network: `Llama.from_pretrained` builds a model
and fills it through `load_weights`, so the dependency points one way (model → checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from srlm_fast.io import check_output, write_json_atomic
from srlm_fast.model.config import ModelConfig

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Tensors some published checkpoints carry that are derived, not learned.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file or tensor."""


def hf_name(name: str) -> str:
    """Our parameter name → the HF `LlamaForCausalLM` state-dict key."""
    return name if name.startswith("lm_head.") else f"model.{name}"


def our_name(key: str) -> str:
    return key.removeprefix("model.")


class CheckpointReader:
    """Lazy, memory-mapped access to the tensors of an HF checkpoint directory."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir}: no such checkpoint directory")
        index = self.dir / INDEX_FILE
        single = self.dir / SINGLE_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        elif single.is_file():
            weight_map = dict.fromkeys(self._open(single).keys(), SINGLE_FILE)
        else:
            raise CheckpointError(f"{self.dir}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
        self._file_of = {
            our_name(k): (self.dir / f, k) for k, f in weight_map.items() if not k.endswith(_IGNORED_SUFFIXES)
        }
        self._handles: dict[Path, object] = {}

    @staticmethod
    def _open(path: Path):
        if not path.is_file():
            raise CheckpointError(f"{path}: shard listed in the index is missing")
        try:
            return safe_open(str(path), framework="pt", device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({e})") from None

    def _handle(self, path: Path):
        if path not in self._handles:
            self._handles[path] = self._open(path)
        return self._handles[path]

    def names(self) -> list[str]:
        return list(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def shape(self, name: str) -> tuple[int, ...]:
        path, key = self._file_of[name]
        return tuple(self._handle(path).get_slice(key).get_shape())

    def get(self, name: str) -> Tensor:
        path, key = self._file_of[name]
        return self._handle(path).get_tensor(key)

    def get_rows(self, name: str, start: int, end: int) -> Tensor:
        """Rows [start, end) of dim 0, read without loading the rest of the tensor."""
        path, key = self._file_of[name]
        return self._handle(path).get_slice(key)[start:end]

    def close(self) -> None:
        self._handles.clear()


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    """A directory that holds an HF checkpoint (config.json plus safetensors weights or their index)."""
    path = Path(path)
    return (
        path.is_dir()
        and (path / "config.json").is_file()
        and ((path / SINGLE_FILE).is_file() or (path / INDEX_FILE).is_file())
    )


def check_checkpoint_output(
    directory: str | os.PathLike, *, overwrite: bool = False, inputs=(), flag: str = "--overwrite"
) -> Path:
    """Refuse, before any work, a checkpoint output that would lose something (see `io.check_output`): a
    file or a non-checkpoint directory at `directory`, an existing checkpoint without `overwrite`, or an
    output that is or contains one of `inputs` (e.g. the directory of the source checkpoint)."""
    return check_output(
        directory, kind="checkpoint", directory=True, overwrite=overwrite, inputs=inputs,
        is_kind=is_checkpoint_dir, flag=flag,
    )  # fmt: skip


def read_model_config(directory: str | os.PathLike) -> ModelConfig:
    return ModelConfig.from_hf_json(Path(directory) / "config.json")


def checkpoint_dtype(directory: str | os.PathLike) -> torch.dtype:
    reader = CheckpointReader(directory)
    return reader.get_rows(reader.names()[0], 0, 1).dtype


def name_mismatch(missing: Sequence[str], unexpected: Sequence[str], *, most: int, noun: str = "") -> str:
    """'missing<noun> a, b; unexpected<noun> c' over the first `most` names of each (the parts that are empty
    are left out): why a set of saved names does not fit what a model expects."""
    parts = []
    if missing:
        parts.append(f"missing{noun} {', '.join(missing[:most])}")
    if unexpected:
        parts.append(f"unexpected{noun} {', '.join(unexpected[:most])}")
    return "; ".join(parts)


@torch.no_grad()
def load_weights(model: nn.Module, directory: str | os.PathLike) -> None:
    """Copy the checkpoint's tensors into `model`'s allocated parameters, one tensor at a time.

    Every parameter must be present with its exact shape; extra tensors are an error too (they mean
    the config does not describe the checkpoint). Sharded (DTensor) parameters read only their rows.
    """
    reader = CheckpointReader(directory)
    params = dict(model.named_parameters())
    tied = getattr(model.config, "tie_embeddings", False)
    missing = [n for n in params if n not in reader]
    unexpected = [n for n in reader.names() if n not in params and not (tied and n == "lm_head.weight")]
    if missing or unexpected:
        missing, unexpected = [hf_name(n) for n in missing], [hf_name(n) for n in unexpected]
        why = name_mismatch(missing, unexpected, most=8, noun=" tensor(s):")
        raise CheckpointError(f"{reader.dir}: checkpoint does not match config.json; {why}")
    for name, param in params.items():
        file_shape = reader.shape(name)
        if tuple(param.shape) != file_shape:
            raise CheckpointError(
                f"{reader.dir}: tensor {hf_name(name)} has shape {list(file_shape)} in the checkpoint "
                f"but the config expects {list(param.shape)}"
            )
        _copy_into(param, reader, name)
    reader.close()


def _copy_into(param: Tensor, reader: CheckpointReader, name: str) -> None:
    from torch.distributed.tensor import DTensor, Shard

    if isinstance(param, DTensor):
        local = param.to_local()
        placements = param.placements
        if len(placements) != 1 or placements[0] != Shard(0):
            # Anything but plain FSDP dim-0 sharding: read the whole tensor, let DTensor slice it.
            from torch.distributed.tensor import distribute_tensor

            full = reader.get(name).to(device=local.device, dtype=local.dtype)
            local.copy_(distribute_tensor(full, param.device_mesh, placements).to_local())
            return
        # FSDP2 splits dim 0 like torch.chunk: ceil(n / world) rows per rank, the last ones shorter.
        n, world = param.shape[0], param.device_mesh.size()
        rank = param.device_mesh.get_local_rank()
        rows = -(-n // world)
        start, end = min(rank * rows, n), min((rank + 1) * rows, n)
        if end > start:
            local.copy_(reader.get_rows(name, start, end))
        return
    param.copy_(reader.get(name))


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    tokenizer=None,
    state_dict: dict[str, Tensor] | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 5 * 2**30,
    overwrite: bool = False,
    inputs=(),
) -> Path:
    """Write `model` (or a full `state_dict` with our names) in the HF layout, atomically.

    Under FSDP, gather a full state dict first (e.g. `get_model_state_dict(..., full_state_dict=True,
    cpu_offload=True)`) and call this on rank 0 with `state_dict=`. An existing checkpoint at `directory`
    is replaced only with `overwrite=True`; anything else there is never replaced (see
    `check_checkpoint_output`; the tokenizer's source directory counts as an input).
    """
    directory = Path(directory)
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    source = getattr(tokenizer, "source_dir", None)
    check_checkpoint_output(directory, overwrite=overwrite, inputs=[*inputs, source])
    config: ModelConfig = model.config
    if state_dict is None:
        state_dict = {n: p.detach() for n, p in model.named_parameters()}
    tensors: dict[str, Tensor] = {}
    for name, t in state_dict.items():
        if config.tie_embeddings and name == "lm_head.weight":
            continue
        t = t.detach().to("cpu", dtype=dtype or t.dtype).contiguous()
        tensors[hf_name(name)] = t.clone() if t.untyped_storage().size() != t.numel() * t.itemsize else t

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        _write_weights(tensors, tmp, max_shard_bytes)
        hf_config = config.to_hf_dict()
        any_tensor = next(iter(tensors.values()))
        hf_config["torch_dtype"] = hf_config["dtype"] = str(any_tensor.dtype).removeprefix("torch.")
        write_json_atomic(tmp / "config.json", hf_config)
        if tokenizer is not None:
            tokenizer.save(tmp)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _write_weights(tensors: dict[str, Tensor], directory: Path, max_shard_bytes: int) -> None:
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE_FILE), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.itemsize for t in tensors.values())
    write_json_atomic(directory / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})


def _replace_dir(src: Path, dst: Path) -> None:
    for f in src.iterdir():  # make the files durable before the rename publishes them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if dst.is_dir() and any(dst.iterdir()):
        # Only a checkpoint the caller may overwrite gets here (save_pretrained checked). It is moved aside to a
        # fresh name of our own, the new one renamed in, then the old one deleted.
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.parent))
        os.replace(dst, old / dst.name)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)  # a rename onto an empty directory replaces it


def iter_tensor_shapes(directory: str | os.PathLike) -> Iterator[tuple[str, tuple[int, ...], torch.dtype]]:
    """(HF key, shape, dtype) of every tensor, for `srlm checkpoint inspect`."""
    reader = CheckpointReader(directory)
    for name in reader.names():
        yield hf_name(name), reader.shape(name), reader.get_rows(name, 0, 1).dtype
