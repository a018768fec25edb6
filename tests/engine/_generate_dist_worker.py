"""Worker for tests/engine/test_engine_distributed.py, run as `torchrun --standalone --nproc_per_node=2 <this> OUT.json`.

Every rank builds the same tiny model, computes the single-process reference itself, then runs the data-parallel
mode, the lockstep mode on an FSDP2-sharded copy, and data-parallel on a replica gathered from the shards. Rank 0
writes all token ids to OUT.json for the test to compare.
"""

import json
import sys

import torch
import torch.distributed as dist

from srlm_fast.distributed import exit_without_teardown
from srlm_fast.engine.distributed import generate_data_parallel, generate_lockstep
from srlm_fast.engine.generator import Generator, SamplingParams
from srlm_fast.model.config import PRESETS
from srlm_fast.model.llama import build_model


def make_model():
    model = build_model(PRESETS["tiny"], seed=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.mul_(5)  # sharper logits: fewer near-ties between runs that round differently
    return model


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (5, 23, 2, 11, 30)]
    params = [
        SamplingParams(max_new_tokens=n, temperature=t, top_p=0.9, n=k, seed=s)
        for n, t, k, s in ((12, 0.0, 1, 0), (3, 1.0, 2, 5), (20, 0.8, 1, 6), (7, 0.0, 1, 0), (1, 1.0, 3, 9))
    ]
    model = make_model()
    ref = Generator(model, sampler_impl="torch").generate(prompts, params)
    dp = generate_data_parallel(Generator(model, sampler_impl="torch", max_batch=2), prompts, params)

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    sharded = make_model()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in sharded.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    lock_gen = Generator(sharded, sampler_impl="torch", max_batch=2)
    assert lock_gen.runner_name == "model"
    lock = generate_lockstep(lock_gen, prompts, params)
    lock2 = generate_lockstep(lock_gen, prompts[:1], params[:1])  # fewer requests than ranks: one rank idles

    def tokens(results):
        return [[s.token_ids for s in r.samples] for r in results]

    if dist.get_rank() == 0:
        out = {
            "ref": tokens(ref),
            "dp": tokens(dp),
            "lockstep": tokens(lock),
            "lockstep_one": tokens(lock2),
            "order": [r.request_index for r in lock],
        }
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    exit_without_teardown(0)  # torch's leftover gloo threads can abort a finished worker at teardown
