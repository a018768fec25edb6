"""Generation under torchrun: data-parallel over full replicas, or lockstep over an FSDP-sharded model.

* `generate_data_parallel(generator, requests, params)`: every rank holds the full weights, samples the requests i ≡ rank (mod world) and the results are
  all-gathered back into request order on every rank. Strided slices spread long and short prompts evenly.
* `generate_lockstep(generator, requests, params)`: for models too large for one device. The Generator runs on the
  sharded model (`runner="model"`), each rank on its own slice, but every FSDP forward all-gathers parameters, so
  all ranks must make the same number of forward calls: a rank that ran out of work makes 1-token dummy forwards
  until a per-step all-reduce says every rank is done.

* `prefill_logits_data_parallel` / `prefill_logits_lockstep`: the same two modes for `Generator.prefill_logits` (the
  expected-score judge reads the next-token distribution after a forced `Score:`). A row-wise `transform` runs on
  each rank's slice before the exchange, so a caller that reads a few columns of a 128k vocabulary sends only those.
* `load_sharded_model(directory, device, dtype)`: an HF checkpoint loaded FSDP2-sharded for lockstep generation (each
  rank reads only its rows of every tensor).

Seeds are resolved before the split (rank 0 draws the missing ones and broadcasts them), so a request's samples are
identical to a single-process run whatever the world size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import torch
import torch.distributed as dist

from srlm_fast import distributed as D
from srlm_fast.engine.generator import GenerationResult, Generator, Request, SamplingParams
from srlm_fast.model.checkpoint import load_weights, read_model_config
from srlm_fast.model.llama import Llama, materialize


def _resolve(
    requests: Sequence[Request], params: SamplingParams | Sequence[SamplingParams] | None, group
) -> list[SamplingParams]:
    params = params if params is not None else SamplingParams()
    plist = [params] * len(requests) if isinstance(params, SamplingParams) else list(params)
    if len(plist) != len(requests):
        raise ValueError(f"got {len(plist)} SamplingParams for {len(requests)} requests")
    seeds = None
    if dist.get_rank(group) == 0:
        seeds = [p.seed if p.seed is not None else int(torch.randint(0, 2**62, ()).item()) for p in plist]
    box = [seeds]
    dist.broadcast_object_list(
        box, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group
    )
    return [replace(p, seed=s) for p, s in zip(plist, box[0])]


def _gather(local: list[GenerationResult], mine: list[int], n: int, group) -> list[GenerationResult]:
    world = dist.get_world_size(group)
    parts: list = [None] * world
    dist.all_gather_object(parts, (mine, local), group=group)
    out: list[GenerationResult | None] = [None] * n
    for idx, results in parts:
        for i, r in zip(idx, results):
            r.request_index = i
            out[i] = r
    return out  # type: ignore[return-value]


def _split(n: int, group) -> list[int]:
    return list(range(dist.get_rank(group), n, dist.get_world_size(group)))


def generate_data_parallel(
    generator: Generator,
    requests: Sequence[Request],
    params: SamplingParams | Sequence[SamplingParams] | None = None,
    *,
    group=None,
) -> list[GenerationResult]:
    """Each rank samples its strided slice on its full replica; every rank returns all results in request order."""
    plist = _resolve(requests, params, group)
    mine = _split(len(requests), group)
    local = generator.generate([requests[i] for i in mine], [plist[i] for i in mine]) if mine else []
    return _gather(local, mine, len(requests), group)


@torch.no_grad()
def generate_lockstep(
    generator: Generator,
    requests: Sequence[Request],
    params: SamplingParams | Sequence[SamplingParams] | None = None,
    *,
    group=None,
) -> list[GenerationResult]:
    """Like `generate_data_parallel` on a sharded model: all ranks make the same number of forward calls."""
    plist = _resolve(requests, params, group)
    mine = _split(len(requests), group)
    seqs, prompts = generator.prepare([requests[i] for i in mine], [plist[i] for i in mine])
    _run_lockstep(generator, generator.steps(seqs, prompts), group)
    return _gather(generator.collect(seqs, prompts), mine, len(requests), group)


def _run_lockstep(generator: Generator, steps: Iterator[None], group) -> None:
    """Drive `steps` (one forward call per `next`) until every rank's is exhausted, padding with dummy forwards."""
    done = False
    flag = torch.zeros(1, dtype=torch.long, device=generator.device)
    while True:
        if not done:
            try:
                next(steps)
            except StopIteration:
                done = True
        if done:
            generator.dummy_forward()
        flag.fill_(0 if done else 1)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        if int(flag.item()) == 0:
            break


# A row-wise map applied to each rank's (n_local, V) logits before they are exchanged.
Transform = Callable[[torch.Tensor], torch.Tensor]


def _gather_rows(local: torch.Tensor, mine: list[int], n: int, group) -> torch.Tensor:
    parts: list = [None] * dist.get_world_size(group)
    # Objects travel through the host for any backend; rows are few (one per request) and usually narrow.
    dist.all_gather_object(parts, (mine, local.cpu()), group=group)
    width = parts[0][1].shape[1:]
    out = torch.empty((n, *width), dtype=local.dtype)
    for idx, rows in parts:
        if idx:
            out[idx] = rows
    return out.to(local.device)


@torch.no_grad()
def prefill_logits_data_parallel(
    generator: Generator, requests: Sequence[Request], *, transform: Transform | None = None, group=None
) -> torch.Tensor:
    """`generator.prefill_logits(requests)` (optionally mapped by `transform`), each rank prefilling its strided
    slice on its full replica; every rank returns all rows in request order."""
    mine = _split(len(requests), group)
    local = generator.prefill_logits([requests[i] for i in mine])
    return _gather_rows(transform(local) if transform else local, mine, len(requests), group)


@torch.no_grad()
def prefill_logits_lockstep(
    generator: Generator, requests: Sequence[Request], *, transform: Transform | None = None, group=None
) -> torch.Tensor:
    """Like `prefill_logits_data_parallel` on a sharded model: all ranks make the same number of forward calls."""
    mine = _split(len(requests), group)
    local = torch.empty(len(mine), generator.config.vocab_size, dtype=torch.float32, device=generator.device)
    _run_lockstep(generator, generator.prefill_steps([requests[i] for i in mine], local), group)
    return _gather_rows(transform(local) if transform else local, mine, len(requests), group)


def load_sharded_model(
    directory: str | os.PathLike, *, device: torch.device | str, dtype: torch.dtype, group=None
) -> Llama:
    """An HF checkpoint as an FSDP2-sharded `Llama` over the default process group, for lockstep generation.

    Weights are stored and computed in `dtype` (no fp32 master copy: nothing trains this model) and every rank
    reads only its own rows of each tensor, so a model larger than one device loads without ever being whole.
    """
    if not dist.is_initialized():
        raise RuntimeError("load_sharded_model needs a process group (run under torchrun)")
    if group is not None:
        raise NotImplementedError("load_sharded_model shards over the default process group only")
    device = torch.device(device)
    info = D.DistInfo(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), device, True, False
    )
    config = read_model_config(directory)
    model = materialize(
        lambda: Llama(config),
        device=device,
        dtype=dtype,
        prepare=lambda m: D.shard_model(m, m.layers, info, param_dtype=dtype),
    )
    with torch.no_grad():
        load_weights(model, directory)
    return model.eval()
