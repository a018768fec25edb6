"""Properties of the CUDA-only generation path that decide its speed, checked where they can be.

The compiled decode step (`Generator(..., runner="model", compile=True)`, the default on CUDA) is meant to run
as a CUDA graph (`torch.compile(mode="reduce-overhead")`). Inductor records a graph only when every input the
step mutates in place has a static address; the KV cache is mutated every step, so the tensors passed for it
must be the very objects `torch._dynamo.mark_static_address` was called on (a fresh view of them is a new,
non-static input, and inductor then skips CUDA graphs, logging that only under TORCH_LOGS=cudagraphs).
Which inputs are static is decided by dynamo before any device code exists, so it is checked on the CPU here
with a backend that only reads the traced graph; the CUDA test counts the skipped graphs on a real GPU.
"""

from __future__ import annotations

import pytest
import torch

from srlm_fast.engine.generator import Generator, SamplingParams
from srlm_fast.model.config import PRESETS
from srlm_fast.model.llama import build_model

GREEDY = SamplingParams(max_new_tokens=4, temperature=0.0)
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8]]


def _static_inputs_of_decode(gen: Generator) -> dict[str, bool]:
    """Run `gen` with its decode step traced by a recording backend: {graph input source: static?}."""
    seen: dict[str, bool] = {}

    def backend(gm: torch.fx.GraphModule, example_inputs):
        for node in gm.graph.find_nodes(op="placeholder"):
            source = getattr(node, "_dynamo_source", None)
            name = source.name if source is not None else node.name
            seen[name] = bool(node.meta.get("tensor_dict", {}).get("_dynamo_static_input_type"))
        return gm.forward

    runner = gen._runner
    runner._decode = torch.compile(runner._forward, backend=backend, dynamic=False)
    gen.generate(PROMPTS, GREEDY)
    return seen


def test_compiled_decode_gets_the_static_cache_tensors():
    torch._dynamo.reset()
    model = build_model(PRESETS["tiny"], seed=0).eval()
    gen = Generator(model, max_batch=2, runner="model", compile=True, sampler_impl="torch")
    seen = _static_inputs_of_decode(gen)
    # One key and one value tensor per layer (the cache is per-layer so inductor can update it in place).
    cache_inputs = {name: static for name, static in seen.items() if name.startswith(("L['k']", "L['v']"))}
    assert len(cache_inputs) == 2 * model.config.n_layers, seen
    assert all(cache_inputs.values()), seen


def test_compiled_decode_keeps_compiling_past_dynamos_default_limit():
    """One graph per (rows, attended-length bucket): 3 engines × 4 buckets = 12 versions of the decode frame, more
    than dynamo's default limit of 8, past which it would silently run the step uncompiled."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = build_model(PRESETS["tiny"], seed=0).eval()
    for rows in (1, 2, 3):
        gen = Generator(
            model, max_batch=rows, max_len=600, runner="model", compile=True, sampler_impl="torch"
        )
        # the engine's own compile setup (and the limit it raises), traced without inductor to keep this fast
        gen._runner._decode = torch.compile(gen._runner._forward, backend="eager", dynamic=False)
        for length in (10, 100, 200, 400):  # attended-length buckets 64, 128, 256, 512
            gen.generate([[1] * length], GREEDY)
    assert counters["stats"]["unique_graphs"] == 12


@pytest.mark.cuda
def test_cuda_compiled_decode_records_cuda_graphs():
    """On a GPU: the compiled decode step runs as CUDA graphs (no 'skipping cudagraphs due to ...')."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = build_model(PRESETS["tiny"], seed=0, device="cuda").eval()
    gen = Generator(model, max_batch=2)
    assert gen.compiled
    gen.generate(PROMPTS, GREEDY)
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
