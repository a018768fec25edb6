"""Process groups and FSDP2, applied from outside the model.

One code path serves a laptop and a 64-GPU job:

* `init_distributed()` reads the `torchrun` environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
  creates the default process group: NCCL on CUDA, gloo on CPU. Without torchrun it returns a single-process
  `DistInfo` and creates no group (plain, unsharded training), except on CUDA where a one-rank group lets the
  bf16 mixed-precision FSDP path be the only GPU path.
* `shard_model()` follows the torchtitan recipe: the model is built on the meta device, every block is
  `fully_shard`ed, then the root (its embeddings, final norm and LM head form the root's parameter group),
  then `to_empty` materialises only the local shards and `init_weights` / `load_weights` fill them.
* `full_state_dict()` gathers the full weights onto rank 0's CPU for an HF-layout save.

Nothing here keeps global state: the caller holds the `DistInfo`.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn

from srlm_fast.device import default_dtype, resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False  # a default process group exists (created by us or by the caller)
    owns_group: bool = False  # we created it, so `shutdown` destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether the model is wrapped with FSDP2 (any initialised process group, even of size 1)."""
        return self.initialized


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Create (or adopt) the default process group and pick this rank's device.

    device: "auto" (CUDA when available, else CPU), "cpu" or "cuda". Safe to call when a group already
    exists (the self-rewarding loop calls `train()` several times in one process): the group is adopted
    and left alone by `shutdown`.
    """
    use_cuda = resolve_device(device).type == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, True, False)
    backend = "nccl" if use_cuda else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if launched_by_torchrun():
        # device_id binds NCCL communicators eagerly to this GPU (avoids a hang-prone lazy init).
        kwargs = {"device_id": dev} if use_cuda else {}
        dist.init_process_group(backend, timeout=timeout, **kwargs)
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, True, True)
    if use_cuda:
        # One GPU, no launcher: a one-rank group so FSDP2's mixed precision drives bf16 training.
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return DistInfo(0, 1, 0, dev, True, True)
    return DistInfo(0, 1, 0, dev, False, False)


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if `init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def exit_without_teardown(code: int) -> NoReturn:
    """End a torchrun worker whose work is committed: flush, then `os._exit`, skipping interpreter teardown.

    Why: in torch 2.13 a gloo process group outlives `destroy_process_group`. The `DeviceMesh` that FSDP2 shards
    on keeps its groups (`DeviceMesh._pg_registry`), and DTensor's sharding-propagation caches keep the mesh, so
    its worker threads ("pt_gloo_runloop", "gloo_tcp_loop") still run when the interpreter finalises. Destroying
    the group there aborted rank 1 after a complete run ("terminate called without an active exception",
    SIGABRT, with no Python frame on the stack): in 2 of 4 resumed 2-rank loop tests under CPU load, and in CI.
    torchrun then reports the whole job failed. Skipping finalisation is safe: every artifact is written
    atomically and wandb runs are finished explicitly before this point.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken pipe: nothing left to save
            stream.flush()
    logging.shutdown()
    os._exit(code)


def barrier(info: DistInfo) -> None:
    if info.initialized and info.world_size > 1:
        dist.barrier()


def all_reduce_sum(x: Tensor, info: DistInfo) -> Tensor:
    """Sum over ranks, returned on x's device; a no-op in a single process.

    NCCL only reduces CUDA tensors, so host-side counters travel through this rank's device.
    """
    if not (info.initialized and info.world_size > 1):
        return x
    y = x.to(info.device)
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y.to(x.device)


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Rank `src`'s Python object on every rank."""
    if not (info.initialized and info.world_size > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj, info: DistInfo) -> list:
    if not (info.initialized and info.world_size > 1):
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# ---- FSDP2 -------------------------------------------------------------------------------------


def _checkpointed_forward(module: nn.Module, original, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint

    # Non-reentrant checkpointing works with keyword arguments and with FSDP2's hooks.
    return checkpoint(original, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(blocks: nn.ModuleList) -> None:
    """Recompute each block's activations in the backward pass (memory for ~33% more compute).

    The block's `forward` is replaced on the instance rather than wrapping the module, so parameter
    names (and therefore checkpoints) are unchanged.
    """
    for block in blocks:
        original = block.forward
        block.forward = functools.partial(_checkpointed_forward, block, original)


def compile_blocks(blocks: nn.ModuleList) -> None:
    """`torch.compile` each block in place (one compiled graph reused by every layer; names unchanged)."""
    for block in blocks:
        block.compile()


def mixed_precision_policy(
    device: torch.device, param_dtype: torch.dtype | None = None, cast_forward_inputs: bool = True
):
    """Compute in `param_dtype` (default: bf16 on GPU, fp32 on CPU), reduce gradients in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(
        param_dtype=param_dtype or default_dtype(device),
        reduce_dtype=torch.float32,
        cast_forward_inputs=cast_forward_inputs,
    )


def shard_model(
    root: nn.Module,
    blocks: nn.ModuleList,
    info: DistInfo,
    *,
    param_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """`fully_shard` every block, then `root` (which owns the remaining parameters), on a 1-D mesh.

    Call on a meta-device model before `to_empty`. Gradients are *summed* over ranks, not averaged: the
    trainer normalises its losses by global counts itself, so an average would divide by the world twice.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    mp = mixed_precision_policy(info.device, param_dtype)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    # The root's float inputs stay as given: a root forward may take fp32 side inputs (e.g. DPO reference
    # log-probs of magnitude ~100, which bf16 would round by ~0.5). Token ids are integers anyway.
    root_mp = mixed_precision_policy(info.device, param_dtype, cast_forward_inputs=False)
    fully_shard(root, mesh=mesh, mp_policy=root_mp)
    from torch.distributed.fsdp import FSDPModule

    for module in root.modules():  # the setting is per FSDP unit, not inherited from the root
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            # Plain SUM collectives: gloo has no PREMUL_SUM, and NCCL's zero-copy path wants SUM too.
            module.set_force_sum_reduction_for_comms(True)
    return root


def reshard(module: nn.Module) -> None:
    """Free the unsharded parameters FSDP2 keeps after a forward without backward (the root keeps its
    parameters gathered after forward, expecting a backward). Without this, `module.parameters()` would
    return the gathered tensors, not the sharded ones an optimizer must hold."""
    from torch.distributed.fsdp import FSDPModule

    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def full_state_dict(module: nn.Module, info: DistInfo) -> dict[str, Tensor]:
    """Full (unsharded) weights on CPU: on rank 0 under FSDP (other ranks get {}), else the module's own."""
    if not info.sharded:
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(module, options=opts)


def full_tensor(t: Tensor) -> Tensor:
    """The full value of a (possibly DTensor) scalar or tensor; a collective under FSDP."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def load_full_state(module: nn.Module, state_dict: dict[str, Tensor], info: DistInfo) -> None:
    """Fill `module` from a full state dict that only rank 0 needs to hold (others pass {})."""
    if not info.sharded:
        module.load_state_dict(state_dict)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(module, state_dict, options=opts)
