"""`Policy` under a real 2-process torchrun (gloo on CPU) returns what one process returns on the same checkpoint:
data-parallel replicas and an FSDP-sharded model in lockstep, for every kind of call the loop makes (candidates,
greedy answers, both judge modes, self-instruct rounds, small chunks); and the reference log-probs scored on 2
ranks equal one process's. One launch serves all (torchrun startup is the slow part)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from srlm_fast.model.checkpoint import save_pretrained
from srlm_fast.model.llama import Llama
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.recipe.policy import Policy
from srlm_fast.train.reference import compute_reference_logprobs
from tests._train_fixtures import make_workspace
from tests.helpers import torchrun
from tests.recipe._policy_dist_worker import policy_calls

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("_policy_dist_worker.py")
PROMPTS = [
    "add 3 and 4 the cat",
    "say something red blue",
    "add 9 and 1",
    "the dog sat on the mat and then",
    "big small fast slow",
    "add 2 and 5 over under",
    "jumps " * 300,  # longer than the model's context: skipped on every rank, counted once
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policy_dist")
    ws = make_workspace(root)
    # Sharper logits than a random init's: sampled tokens then do not hinge on fp32 rounding, which differs
    # with the batch a request shares (and so with the rank that serves it).
    model = Llama.from_pretrained(ws["init"])
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.mul_(4)
    ws["sharp"] = save_pretrained(model, root / "sharp", tokenizer=Tokenizer.from_dir(ws["init"]))
    return ws


@pytest.fixture(scope="module")
def two_ranks(ws) -> tuple[dict, str]:
    spec = ws["root"] / "spec.json"
    out = ws["root"] / "out.json"
    spec.write_text(
        json.dumps({"checkpoint": str(ws["sharp"]), "prompts": PROMPTS, "pairs": str(ws["pairs"]),
                    "ref_out": str(ws["root"] / "ref2.jsonl"), "out": str(out)})
    )  # fmt: skip
    proc = torchrun(str(WORKER), str(spec))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.fixture(scope="module")
def one_process(ws) -> dict:
    torch.set_num_threads(1)
    policy = Policy.load(ws["sharp"], device="cpu")
    assert policy.mode == "local"
    return json.loads(json.dumps(policy_calls(policy, PROMPTS)))  # the same JSON round trip as the worker's


def _assert_same(got: dict, want: dict) -> None:
    for key in (
        "candidates",
        "greedy",
        "judge_sample",
        "selfinstruct",
        "candidates_chunked",
        "skipped_too_long",
    ):
        assert got[key] == want[key], key
    # Probabilities: a request's logits come from a batch of other shapes on another rank, so they may differ in
    # the last fp32 bit (1e-7 relative); every sampled token above is identical.
    assert got["judge_expected"] == pytest.approx(want["judge_expected"], rel=1e-5)
    assert got["judge_expected"][-2:] == got["judge_expected"][:2]  # repeated items: exactly equal scores
    assert len(got["score_probs"]) == len(want["score_probs"])
    for a, b in zip(got["score_probs"], want["score_probs"]):
        assert a.keys() == b.keys()
        assert list(a.values()) == pytest.approx(list(b.values()), rel=1e-5, abs=1e-9)


def test_single_process_results_are_sensible(one_process):
    """Guards the comparison below against vacuous equality (everything empty or identical)."""
    cands = one_process["candidates"]
    assert len(cands) == len(PROMPTS) and all(len(c) == 3 for c in cands)
    assert cands[-1] == ["", "", ""] and one_process["skipped_too_long"] > 0  # the overlong prompt
    texts = {t for c in cands[:-1] for t in c}
    assert len(texts) > 10 and all(texts)  # different samples per request and per prompt
    assert one_process["candidates_chunked"] == cands
    assert any(s is not None for s in one_process["judge_expected"])
    assert len({round(s, 6) for s in one_process["judge_expected"] if s is not None}) > 1


def test_data_parallel_policy_equals_one_process(two_ranks, one_process):
    _assert_same(two_ranks[0]["data_parallel"], one_process)


def test_lockstep_sharded_policy_equals_one_process(two_ranks, one_process):
    _assert_same(two_ranks[0]["lockstep"], one_process)


def test_progress_lines_come_from_rank_0_only(two_ranks):
    # interval 0: a line per chunk; two Policies (data-parallel, lockstep) of one chunk each, printed by rank 0 only.
    lines = re.findall(r"^    candidates: (\d+)/(\d+) requests", two_ranks[1], re.M)
    assert lines == [(str(len(PROMPTS)), str(len(PROMPTS)))] * 2


def test_progress_reports_every_chunk_of_every_call_in_its_scope(ws, capsys):
    policy = Policy.load(ws["sharp"], device="cpu")
    policy.chunk_requests = 3
    with policy.progress("judge", interval_s=0.0):
        # Chunks of 3 and 2 requests. All rows of a chunk retire together after its last forward, so each chunk
        # is counted at its end, in one line.
        policy.generate(PROMPTS[:5], n=1, max_new_tokens=2)
        policy.score_probs(PROMPTS[:2], max_new_tokens=2)
    policy.generate(PROMPTS[:2], n=1, max_new_tokens=2)  # outside the scope: silent
    lines = re.findall(r"^    judge: (\d+/\d+) requests", capsys.readouterr().out, re.M)
    assert lines == ["3/5", "5/5", "7/7"]


def test_progress_counts_requests_as_they_finish_inside_one_chunk(ws, capsys):
    # Two cache rows and one chunk (up to 16 requests): rows free up and refill, and the bar moves with them.
    policy = Policy.load(ws["sharp"], device="cpu", max_batch=2)
    with policy.progress("gen", interval_s=0.0):
        policy.generate(PROMPTS[:5], n=1, max_new_tokens=2)
    with policy.progress("judge", interval_s=0.0):  # a justification written counts half, its score the rest
        policy.score_probs(PROMPTS[:5], max_new_tokens=2)
    out = capsys.readouterr().out
    assert re.findall(r"^    gen: (\d+/\d+) requests", out, re.M) == ["2/5", "4/5", "5/5"]
    assert re.findall(r"^    judge: (\d+/\d+) requests", out, re.M) == ["1/5", "2/5", "5/5"]


def test_progress_counts_each_sample_as_a_share_of_its_request(ws, capsys):
    # Two rows, two samples per request: each finished sample counts half a request.
    policy = Policy.load(ws["sharp"], device="cpu", max_batch=2)
    with policy.progress("gen", interval_s=0.0):
        policy.generate(PROMPTS[:3], n=2, max_new_tokens=2)
    assert re.findall(r"^    gen: (\d+/\d+) requests", capsys.readouterr().out, re.M) == ["1/3", "2/3", "3/3"]


def test_a_nested_progress_scope_mutes_the_enclosing_one(ws, capsys):
    policy = Policy.load(ws["sharp"], device="cpu")
    with policy.progress("evaluate", interval_s=0.0) as outer:
        with policy.progress("judging", interval_s=0.0):
            assert outer.muted
            policy.generate(PROMPTS[:2], n=1, max_new_tokens=2)
        assert not outer.muted
    out = capsys.readouterr().out
    assert re.findall(r"^    judging: (\d+/\d+) requests", out, re.M) == ["2/2"]
    assert "evaluate:" not in out


def test_reference_logprobs_on_two_ranks_equal_one_process(ws, two_ranks, tmp_path):
    one = compute_reference_logprobs(ws["sharp"], ws["pairs"], tmp_path / "ref1.jsonl", max_seq_len=96,
                                     batch_size=4, device="cpu")  # fmt: skip
    rows1 = [json.loads(x) for x in one.read_text().splitlines()]
    rows2 = [json.loads(x) for x in Path(two_ranks[0]["ref_out"]).read_text().splitlines()]
    assert len(rows1) == len(rows2) > 0
    for a, b in zip(rows2, rows1):
        assert {k: v for k, v in a.items() if "logp" not in k} == {
            k: v for k, v in b.items() if "logp" not in k
        }
        # Each pair's forward sees the same full weights (gathered from the shards), only its batch differs.
        assert a["ref_chosen_logp"] == pytest.approx(b["ref_chosen_logp"], rel=1e-6)
        assert a["ref_rejected_logp"] == pytest.approx(b["ref_rejected_logp"], rel=1e-6)
