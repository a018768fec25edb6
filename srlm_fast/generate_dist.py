"""Generation under torchrun: data-parallel over full replicas, or lockstep over an FSDP-sharded model.

* `generate_data_parallel(generator, requests, params)`: every rank holds the full weights (for an FSDP model, build
  one replica with `gather_full_model` first), samples the requests i ≡ rank (mod world) and the results are
  all-gathered back into request order on every rank. Strided slices spread long and short prompts evenly.
* `generate_lockstep(generator, requests, params)`: for models too large for one device. The Generator runs on the
  sharded model (`runner="model"`), each rank on its own slice, but every FSDP forward all-gathers parameters, so
  all ranks must make the same number of forward calls: a rank that ran out of work makes 1-token dummy forwards
  until a per-step all-reduce says every rank is done.

Seeds are resolved before the split (rank 0 draws the missing ones and broadcasts them), so a request's samples are
identical to a single-process run whatever the world size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.distributed as dist

from srlm_fast.generate import GenerationResult, Generator, Request, SamplingParams
from srlm_fast.model import Llama


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
    steps = generator.steps(seqs, prompts)  # every `next` makes exactly one forward call, or ends
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
    return _gather(generator.collect(seqs, prompts), mine, len(requests), group)


def gather_full_model(model: Llama, device: torch.device | str | None = None) -> Llama:
    """A plain (unsharded) replica of an FSDP-sharded `Llama` on every rank: one all-gather of the weights."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    dtype = next(iter(state.values())).dtype
    device = device if device is not None else next(iter(state.values())).device
    with torch.device("meta"):
        replica = Llama(model.config, attn_backend=model.attn_backend)
    replica.to_empty(device=device)
    replica.to(dtype)
    replica.load_state_dict(state)
    replica.init_buffers()
    return replica.eval()
