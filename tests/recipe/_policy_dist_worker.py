"""Worker for tests/recipe/test_policy_dist.py, run as `torchrun --standalone --nproc_per_node=2 <this> SPEC.json`.

Every rank loads the same checkpoint twice: whole (data-parallel `Policy`) and FSDP-sharded (lockstep `Policy`),
makes the calls of `policy_calls` with both, and scores the reference log-probs of the pairs on 2 ranks. Rank 0
writes everything to the spec's `out` file; the test compares it with one process's results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from srlm_fast.distributed import exit_without_teardown
from srlm_fast.recipe import selfinstruct as SI
from srlm_fast.recipe.judge import JudgeConfig, JudgeTemplate
from srlm_fast.recipe.policy import Policy

JUDGE_RESPONSES = ["red blue the cat", "7", "cat dog sat on the mat " * 3, "", "2 plus 5 is 7."]


def policy_calls(policy: Policy, prompts: list[str]) -> dict:
    """Every kind of call the loop makes, as JSON-able results."""
    tpl = JudgeTemplate.from_spec("compact")
    items = [(p, r) for p in prompts[:4] for r in JUDGE_RESPONSES[:3]]
    out: dict = {}
    with policy.progress("candidates", interval_s=0.0):
        out["candidates"] = policy.generate(
            prompts, n=3, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5
        )
    out["greedy"] = policy.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=10, seed=0)
    sample = policy.judge(items, tpl, JudgeConfig(mode="sample", k=2, max_new_tokens=12), seed=3)
    out["judge_sample"] = [[r.score, r.n_valid, r.n_invalid, list(r.judgments)] for r in sample]
    # Two items repeated: identical judge prompts are scored once, so they get exactly equal scores.
    expected = policy.judge(items + items[:2], tpl, JudgeConfig(mode="expected", max_new_tokens=12), seed=3)
    out["judge_expected"] = [r.score for r in expected]
    out["score_probs"] = policy.score_probs([tpl.render(i, r) for i, r in items], max_new_tokens=12)
    # Self-instruct: rounds of generate calls, each with its own seed, until enough prompts are kept.
    si_cfg = SI.SelfInstructConfig(
        batch_size=5, max_new_tokens=16, min_words=1, min_chars=1, max_words=40, n_seed=2, max_rounds=3
    )
    kept, stats = SI.generate_prompts(policy.generate, prompts, 6, si_cfg, seed=7)
    out["selfinstruct"] = [kept, stats.rounds]
    # Small chunks: per-request seeds make the results independent of chunking.
    policy.chunk_requests = 3
    out["candidates_chunked"] = policy.generate(
        prompts, n=3, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5
    )
    policy.chunk_requests = None
    out["skipped_too_long"] = policy.skipped_too_long
    return out


def main() -> None:
    from srlm_fast.train.reference import compute_reference_logprobs

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    spec = json.loads(Path(sys.argv[1]).read_text())
    result: dict = {}
    for mode in ("data_parallel", "lockstep"):
        policy = Policy.load(spec["checkpoint"], device="cpu", sharded=mode == "lockstep", max_batch=4)
        assert policy.mode == mode, policy.mode
        result[mode] = policy_calls(policy, spec["prompts"])
        policy.close()
    ref = compute_reference_logprobs(
        spec["checkpoint"], spec["pairs"], spec["ref_out"], max_seq_len=96, batch_size=4, device="cpu"
    )
    if dist.get_rank() == 0:
        result["ref_out"] = str(ref)
        Path(spec["out"]).write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    exit_without_teardown(0)  # torch's leftover gloo threads can abort a finished worker at teardown
