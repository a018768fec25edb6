"""Single stages of `srlm run`, each called alone on a hand-made run directory with a scripted stand-in policy.

The stand-in records what each stage asks of the model, so the tests check both the artifact a stage writes and
that it passes the config's settings and the iteration's seed. No model is built or trained here.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
from safetensors.torch import load_file

from srlm_fast.config import ConfigError, load_job_config
from srlm_fast.io import read_jsonl, write_jsonl_atomic
from srlm_fast.model.checkpoint import read_model_config
from srlm_fast.model.config import get_preset
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.recipe import grounding as G
from srlm_fast.recipe import stages as S
from srlm_fast.recipe import task_eft, tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.judge import JudgeResult, JudgeTemplate
from srlm_fast.recipe.loop import run_iteration
from srlm_fast.recipe.rundir import RunDir

NEW_PROMPTS = [
    "Name three rivers that flow through Germany.",
    "Explain why the sky looks blue on a clear day.",
    "Write a haiku about autumn leaves falling.",
    "Translate the word 'house' into French and Spanish.",
    "List four prime numbers greater than fifty.",
    "Describe how the gears of a bicycle work.",
    "Suggest a name for a small bakery in Paris.",
]
SEED_PROMPTS = ["Give me a synonym for the word happy.", "Summarize the plot of Hamlet in one sentence."]


class ScriptedPolicy:
    """A stand-in for `Policy`: `generate` returns `outputs` in order (one per request, then ""); `judge` scores a
    response by `score_of`. Every call is recorded."""

    def __init__(self, outputs=(), score_of=lambda prompt, response: 3.0) -> None:
        self.outputs = list(outputs)
        self.score_of = score_of
        self.generate_calls: list[dict] = []
        self.judge_calls: list[dict] = []
        self.closed = 0

    def generate(self, prompts, n=1, temperature=0.7, top_p=0.9, max_new_tokens=64, seed=0, stop=()):
        self.generate_calls.append(dict(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                        seed=seed, prompts=list(prompts)))  # fmt: skip
        if self.outputs:
            return [[self.outputs.pop(0) if self.outputs else "" for _ in range(n)] for _ in prompts]
        return [[f"{p} / answer {j}" for j in range(n)] for p in prompts]

    def judge(self, items, template, config, seed=0):
        self.judge_calls.append(dict(items=list(items), template=template, config=config, seed=seed))
        out = []
        for prompt, response in items:
            s = self.score_of(prompt, response)
            out.append(
                JudgeResult(s, int(s is not None), int(s is None), () if s is None else (s,), ("Score: ?",))
            )
        return out

    def close(self) -> None:
        self.closed += 1


def make_iteration(tmp_path: Path, policy: ScriptedPolicy, *overrides: str, t: int = 1):
    """Iteration t of a fresh run under tmp_path; the factory hands out `policy` and records the paths asked."""
    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=run", "--seed=3", *overrides])
    run = RunDir(cfg)
    run.iteration(t).mkdir(parents=True)
    loaded: list[Path] = []

    def factory(path: Path) -> ScriptedPolicy:
        loaded.append(Path(path))
        return policy

    return S.Iteration.resume(cfg, run, t, factory), loaded


def stats_of(it) -> dict:
    return json.loads((it.dir / "stats.json").read_text())


def test_self_instruct_filters_the_stub_policys_prompts(tmp_path):
    outputs = [f"Task: {SEED_PROMPTS[0]}", "Hi", *NEW_PROMPTS]  # a seed duplicate and a too-short one first
    policy = ScriptedPolicy(outputs)
    it, loaded = make_iteration(tmp_path, policy, "--selfinstruct.n_prompts=5", "--selfinstruct.batch_size=4",
                                "--selfinstruct.temperature=0.5", "--selfinstruct.max_new_tokens=20")  # fmt: skip
    write_jsonl_atomic(it.run.seed / "seed_prompts.jsonl", [{"prompt": p} for p in SEED_PROMPTS])
    S.self_instruct(it)
    kept = [r["prompt"] for r in read_jsonl(it.dir / "prompts.jsonl")[0]]
    assert kept == NEW_PROMPTS[:5]  # round 1 keeps 2 of 4, round 2 all 4: one surplus dropped
    assert loaded == [it.model] and policy.closed == 0  # M_t generates, and stays loaded for the next stages
    assert [c["seed"] for c in policy.generate_calls] == [3001, 3002]  # iteration seed (3·1000 + 1) + round
    assert {(c["temperature"], c["max_new_tokens"], c["n"]) for c in policy.generate_calls} == {(0.5, 20, 1)}
    assert all(SEED_PROMPTS[0] in p or SEED_PROMPTS[1] in p for p in policy.generate_calls[0]["prompts"])
    counts = stats_of(it)["prompts"]
    assert counts["generated"] == 8 and counts["kept"] == 5
    assert counts["removed"] == {"too_short": 1, "duplicate": 1, "surplus": 1}
    assert counts["task_world_parseable"] == sum(tasks.parse_prompt(p) is not None for p in kept)


def test_self_instruct_shape_filter_drops_prompts_worded_like_no_seed(tmp_path):
    seeds = ["Give me a synonym for the word happy.", "Give me a synonym for the word tall.",
             "Summarize the plot of Hamlet in one sentence.", "Summarize the plot of Macbeth in one sentence."]  # fmt: skip
    wanted = ["Give me a synonym for the word quick.", "Summarize the plot of Othello in one sentence."]
    policy = ScriptedPolicy([wanted[0], NEW_PROMPTS[0], "Give me a synonym for cats", wanted[1]])
    it, _ = make_iteration(tmp_path, policy, "--selfinstruct.n_prompts=2", "--selfinstruct.batch_size=4",
                           "--selfinstruct.shape_min_count=2")  # fmt: skip
    write_jsonl_atomic(it.run.seed / "seed_prompts.jsonl", [{"prompt": p} for p in seeds])
    S.self_instruct(it)
    assert [r["prompt"] for r in read_jsonl(it.dir / "prompts.jsonl")[0]] == wanted
    assert stats_of(it)["prompts"]["removed"] == {"off_shape": 2}


def test_self_instruct_with_a_fixed_generator_leaves_m_t_unloaded(tmp_path):
    policy = ScriptedPolicy(NEW_PROMPTS)
    gen = tmp_path / "generator"
    it, loaded = make_iteration(tmp_path, policy, "--selfinstruct.n_prompts=3", "--selfinstruct.batch_size=4",
                                f"--selfinstruct.generator={gen}")  # fmt: skip
    write_jsonl_atomic(it.run.seed / "seed_prompts.jsonl", [{"prompt": p} for p in SEED_PROMPTS])
    S.self_instruct(it)
    assert loaded == [gen] and policy.closed == 1  # the fixed generator is closed after use
    assert len(read_jsonl(it.dir / "prompts.jsonl")[0]) == 3


def test_self_instruct_from_the_seed_pool_generates_nothing_and_never_draws_a_prompt_twice(tmp_path):
    pool = [f"Give me a synonym for the word {w}." for w in ("happy", "tall", "quick", "small", "bright")]
    policy = ScriptedPolicy(NEW_PROMPTS)
    drawn = []
    for t in (1, 2, 3):
        it, loaded = make_iteration(
            tmp_path, policy, "--selfinstruct.n_prompts=2", "--selfinstruct.source=seed", t=t
        )
        write_jsonl_atomic(it.run.seed / "seed_prompts.jsonl", [{"prompt": p} for p in pool])
        S.self_instruct(it)
        drawn.append([r["prompt"] for r in read_jsonl(it.dir / "prompts.jsonl")[0]])
        assert loaded == [] and policy.generate_calls == []  # no model is loaded or sampled
    assert [len(d) for d in drawn] == [2, 2, 1] and sorted(p for d in drawn for p in d) == sorted(pool)
    assert it.stats["prompts"] == {"source": "seed", "pool": 1, "kept": 1, "task_world_parseable": 0}


class FixedEvidence(G.Grounding):
    """A grounding whose retriever is a stand-in: every question's evidence is its own fact first, then another."""

    def __init__(self) -> None:
        super().__init__(retriever=None, k=2, max_words=64)

    def passages(self, questions):
        return [[f"The fact of {q}.", f"Another fact {i}."] for i, q in enumerate(questions)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_candidates_see_their_evidence_in_the_retrievers_order_or_shuffled(tmp_path, monkeypatch, shuffle):
    monkeypatch.setattr(S.G, "load_grounding", lambda cfg, run: FixedEvidence())
    policy = ScriptedPolicy()
    it, _ = make_iteration(tmp_path, policy, "--retrieval.task_corpus=true", "--retrieval.candidates=true",
                           f"--retrieval.shuffle_candidates={str(shuffle).lower()}")  # fmt: skip
    questions = [f"q{i}" for i in range(40)]
    write_jsonl_atomic(it.dir / "prompts.jsonl", [{"prompt": q} for q in questions])
    S.sample_candidates(it)
    shown = policy.generate_calls[0]["prompts"]
    first = [p.split("\n")[0] for p in shown]
    assert all(sorted(p.split("\n")[:2]) == sorted(f"Evidence: {x}" for x in ev)
               for p, ev in zip(shown, FixedEvidence().passages(questions)))  # fmt: skip
    own_first = sum(line.startswith("Evidence: The fact of") for line in first)
    if shuffle:
        assert 10 < own_first < 30  # about half the prompts have their fact second
    else:
        assert own_first == 40
    rows = read_jsonl(it.dir / "candidates.jsonl")[0]
    assert [r["prompt"] for r in rows] == shown and [r["question"] for r in rows] == questions


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_judge_sees_its_evidence_in_the_retrievers_order_or_shuffled(tmp_path, monkeypatch, shuffle):
    from tests.recipe.test_grounding import GroundedPolicy

    monkeypatch.setattr(S.G, "load_grounding", lambda cfg, run: FixedEvidence())
    policy = GroundedPolicy()
    it, _ = make_iteration(tmp_path, policy, "--retrieval.task_corpus=true", "--retrieval.judge=true",
                           "--candidates.n=2", f"--retrieval.shuffle_judge={str(shuffle).lower()}")  # fmt: skip
    questions = [f"q{i}" for i in range(20)]
    write_jsonl_atomic(it.dir / "prompts.jsonl", [{"prompt": q} for q in questions])
    S.sample_candidates(it)
    assert policy.generate_calls[0]["prompts"] == questions  # the candidates read no evidence
    S.judge_candidates(it)
    items = policy.judge_calls[0]["items"]
    retrieved = FixedEvidence().passages([f"{q} {r}" for q, r, _ in items])
    assert [sorted(ev) for _, _, ev in items] == [sorted(ev) for ev in retrieved]
    own_first = sum(ev[0].startswith("The fact of") for _, _, ev in items)
    if shuffle:
        assert 10 < own_first < 30  # about half the judge prompts have the passage retrieved first second
    else:
        assert own_first == 40
    rows = read_jsonl(it.dir / "judgments.jsonl")[0]
    assert [ev for r in rows for ev in r["judge_evidence"]] == [
        ev for _, _, ev in items
    ]  # as the judge read it


def test_candidates_then_judge_load_m_t_once_and_write_their_rows(tmp_path):
    policy = ScriptedPolicy(score_of=lambda p, r: None if r.endswith("answer 2") else float(len(r) % 6))
    it, loaded = make_iteration(tmp_path, policy, "--candidates.n=3", "--candidates.temperature=0.9",
                                "--judge.k=2", "--judge.template=full", "--judge.max_new_tokens=30")  # fmt: skip
    write_jsonl_atomic(it.dir / "prompts.jsonl", [{"prompt": "p1"}, {"prompt": "p2"}])
    S.sample_candidates(it)
    S.judge_candidates(it)
    assert loaded == [it.model]  # one load for both stages
    (gen,) = policy.generate_calls
    assert (gen["n"], gen["temperature"], gen["seed"], gen["prompts"]) == (3, 0.9, 3001, ["p1", "p2"])
    candidates = read_jsonl(it.dir / "candidates.jsonl")[0]
    assert candidates == [
        {"prompt": p, "responses": [f"{p} / answer {j}" for j in range(3)]} for p in ("p1", "p2")
    ]

    (call,) = policy.judge_calls
    assert call["items"] == [(r["prompt"], x) for r in candidates for x in r["responses"]]
    assert (call["config"].k, call["config"].max_new_tokens, call["seed"]) == (2, 30, 3001)
    assert call["template"] == JudgeTemplate.full()
    judged = read_jsonl(it.dir / "judgments.jsonl")[0]
    assert [r["responses"] for r in judged] == [r["responses"] for r in candidates]
    want = [
        [float(len(x) % 6) if not x.endswith("answer 2") else None for x in r["responses"]]
        for r in candidates
    ]
    assert [r["scores"] for r in judged] == want
    assert [r["n_invalid"] for r in judged] == [[0, 0, 1], [0, 0, 1]]
    stats = stats_of(it)
    assert list(stats) == ["candidates", "judge"]
    checker = stats["candidates"].pop("checker")  # the task world grades candidates (never fed back)
    assert stats["candidates"] == {"prompts": 2, "responses": 6, "mean_chars": 13.0}
    assert checker["tasks"] == 0  # "p1" and "p2" are no task-world tasks
    assert stats["judge"] == {"candidates": 6, "judgments_valid": 4, "judgments_invalid": 2,
                              "unscored_candidates": 2}  # fmt: skip
    it.close_policy()
    it.close_policy()
    assert policy.closed == 1


def test_select_pairs_from_a_hand_written_judgments_file(tmp_path):
    a, b, c = tasks.eval_prompts(3, seed=5)
    rng = random.Random(0)
    right_a, wrong_a = task_eft.candidate(a, "correct", rng), task_eft.candidate(a, "wrong", rng)
    right_b, wrong_b = task_eft.candidate(b, "correct", rng), task_eft.candidate(b, "wrong", rng)
    assert tasks.check(a.prompt, right_a).correct and not tasks.check(a.prompt, wrong_a).correct
    assert tasks.check(b.prompt, right_b).correct and not tasks.check(b.prompt, wrong_b).correct
    rows = [
        {"prompt": a.prompt, "responses": [wrong_a, right_a, "…"], "scores": [1.0, 5.0, None]},  # right
        {"prompt": b.prompt, "responses": [right_b, wrong_b], "scores": [2.0, 4.0]},  # the judge got it wrong
        {"prompt": c.prompt, "responses": ["x", "y"], "scores": [3.0, 3.0]},  # tie
        {"prompt": "Write a poem about the sea.", "responses": ["waves", "sand"], "scores": [None, 4.0]},
    ]
    it, _ = make_iteration(tmp_path, ScriptedPolicy())
    write_jsonl_atomic(it.dir / "judgments.jsonl", rows)
    (it.dir / "stats.json").write_text(json.dumps({"prompts": {"kept": 4}}))
    it = S.Iteration.resume(it.cfg, it.run, 1, it.policy_factory)  # a resumed iteration keeps earlier counts
    S.select_pairs(it)
    pairs = read_jsonl(it.dir / "pairs.jsonl")[0]
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        (a.prompt, right_a, wrong_a), (b.prompt, wrong_b, right_b),
    ]  # fmt: skip
    assert pairs[0]["margin"] == 4.0 and pairs[0]["scores"] == [1.0, 5.0, None]
    stats = stats_of(it)
    assert stats["prompts"] == {"kept": 4}
    assert stats["pairs"] == {
        "prompts": 4, "pairs": 2, "dropped": {"fewer_than_2_valid": 1, "tie": 1, "below_margin": 0, "same_text": 0, "few_votes": 0, "chosen_below": 0},
        "verdicts": 0,
        "checker": {"right": 1, "wrong": 1, "both_correct": 0, "both_wrong": 0, "unparseable": 0},
    }  # fmt: skip


@pytest.mark.parametrize("source", ["sft", "ift"])
def test_replay_adds_seed_examples_as_nll_only_rows_beside_the_pairs(tmp_path, source):
    a = tasks.eval_prompts(1, seed=5)[0]
    rng = random.Random(0)
    right, wrong = task_eft.candidate(a, "correct", rng), task_eft.candidate(a, "wrong", rng)
    it, _ = make_iteration(
        tmp_path,
        ScriptedPolicy(),
        "--pairs.replay=3",
        f"--pairs.replay_source={source}",
        "--dpo.dpo.nll_weight=1.0",
    )
    files = {  # disjoint, so the rows show which file they came from
        "ift": [{"prompt": f"What is {i} plus 1?", "response": str(i + 1)} for i in range(5)],
        "sft": [
            {"prompt": f"Judge the response.\nInstruction: q{i}", "response": "Score: 5"} for i in range(5)
        ],
    }
    it.run.seed.mkdir(parents=True)
    for name, rows in files.items():
        write_jsonl_atomic(it.run.seed / f"{name}.jsonl", rows)
    seed = files[source]
    write_jsonl_atomic(
        it.dir / "judgments.jsonl", [{"prompt": a.prompt, "responses": [wrong, right], "scores": [1.0, 5.0]}]
    )
    S.select_pairs(it)
    rows = read_jsonl(it.dir / "pairs.jsonl")[0]
    replay = [r for r in rows if r.get("replay")]
    assert len(rows) == 4 and len(replay) == 3
    assert all(
        r["chosen"] == r["rejected"] and {"prompt": r["prompt"], "response": r["chosen"]} in seed
        for r in replay
    )
    assert [(r["chosen"], r["rejected"]) for r in rows if not r.get("replay")] == [(right, wrong)]
    pairs = stats_of(it)["pairs"]
    assert (
        pairs["replay"] == 3 and pairs["pairs"] == 1 and pairs["checker"]["right"] == 1
    )  # pair stats: real pairs only


def test_replay_needs_the_nll_term():
    """The embedded default's DPO carries the NLL term, so replay is valid there as it stands; with the term off
    replay is refused before any work."""
    load_job_config(LoopConfig, None, ["--pairs.replay=10"]).validate(S.train_table)
    cfg = load_job_config(LoopConfig, None, ["--pairs.replay=10", "--dpo.dpo.nll_weight=0"])
    with pytest.raises(ConfigError, match="pairs.replay: replay rows train only through the NLL term"):
        cfg.validate(S.train_table)


def test_the_from_scratch_dpo_has_the_nll_term_and_a_config_can_turn_it_off():
    resolved = S.train_table("dpo", load_job_config(LoopConfig, None, []))
    assert resolved["dpo"] == {"nll_weight": 1.0}
    off = S.train_table("dpo", load_job_config(LoopConfig, None, ["--dpo.dpo.nll_weight=0"]))
    assert off["dpo"] == {"nll_weight": 0.0} and off["optim"] == resolved["optim"]


def test_select_pairs_with_length_control_and_files_seed_data_has_no_checker(tmp_path):
    rows = [{"prompt": "p", "responses": ["long good answer", "ok", "bad", "very long bad answer"],
             "scores": [5.0, 5.0, 1.0, 1.0]}]  # fmt: skip
    it, _ = make_iteration(
        tmp_path, ScriptedPolicy(), "--pairs.length_control=true", "--seed_data.source=files"
    )
    write_jsonl_atomic(it.dir / "judgments.jsonl", rows)
    S.select_pairs(it)
    (pair,) = read_jsonl(it.dir / "pairs.jsonl")[0]
    assert (pair["chosen"], pair["rejected"]) == (
        "ok",
        "very long bad answer",
    )  # shortest best, longest worst
    assert "checker" not in stats_of(it)["pairs"]


def test_select_pairs_reject_verdicts_from_the_command_line(tmp_path):
    rows = [{"prompt": "p", "responses": ["Score: 5", "Paris", "Score: 1"], "scores": [5.0, 4.0, 3.0]}]
    it, _ = make_iteration(
        tmp_path, ScriptedPolicy(), "--pairs.reject_verdicts=true", "--seed_data.source=files"
    )
    write_jsonl_atomic(it.dir / "judgments.jsonl", rows)
    S.select_pairs(it)
    (pair,) = read_jsonl(it.dir / "pairs.jsonl")[0]
    assert (pair["chosen"], pair["rejected"], pair["rejected_score"]) == ("Paris", "Score: 5", 0.0)
    assert stats_of(it)["pairs"]["verdicts"] == 2
    # judgments.jsonl keeps the judge's own scores: the rule acts on the pairs only.
    assert read_jsonl(it.dir / "judgments.jsonl")[0][0]["scores"] == [5.0, 4.0, 3.0]


def test_without_pairs_reference_is_empty_and_dpo_copies_m_t(tmp_path):
    it, _ = make_iteration(tmp_path, ScriptedPolicy())
    it.model.mkdir()
    (it.model / "model.safetensors").write_bytes(b"weights of M1")
    write_jsonl_atomic(it.dir / "pairs.jsonl", [])
    S.reference_logprobs(it)
    assert (it.dir / "pairs.ref.jsonl").read_text() == ""
    S.train_dpo(it)
    assert (it.next_model / "model.safetensors").read_bytes() == b"weights of M1"


def test_an_iteration_with_only_ties_runs_every_stage_without_a_model(tmp_path, capsys):
    """The driver's iteration on the stand-in: every artifact appears in order, M2 = M1 (no pairs), and a second
    call skips every stage."""
    policy = ScriptedPolicy(NEW_PROMPTS * 2, score_of=lambda p, r: 3.0)
    it, loaded = make_iteration(tmp_path, policy, "--selfinstruct.n_prompts=4", "--selfinstruct.batch_size=4")
    write_jsonl_atomic(it.run.seed / "seed_prompts.jsonl", [{"prompt": p} for p in SEED_PROMPTS])
    it.model.mkdir()
    (it.model / "config.json").write_text("{}")
    run_iteration(it)
    for name in ("prompts.jsonl", "candidates.jsonl", "judgments.jsonl", "pairs.jsonl", "pairs.ref.jsonl"):
        assert (it.dir / name).is_file(), name
    assert (it.next_model / "config.json").read_text() == "{}"
    assert loaded == [it.model] and policy.closed == 1  # closed before the training stages
    assert stats_of(it)["pairs"]["dropped"]["tie"] == 4
    out = capsys.readouterr().out
    assert out.count("  ▶ ") == 6 and "no pairs: M2 = M1" in out

    again = S.Iteration.resume(it.cfg, it.run, 1, it.policy_factory)
    run_iteration(again)
    assert capsys.readouterr().out.count("  ✓ ") == 6
    assert again.stats == stats_of(it) and len(loaded) == 1


def test_train_table_merges_the_from_scratch_defaults_under_the_config():
    scratch = load_job_config(LoopConfig, None, ["--sft.optim.lr=0.01", "--model.max_seq_len=128"])
    table = S.train_table("sft", scratch)
    assert table["optim"] == {**S.FROM_SCRATCH["sft"]["optim"], "lr": 0.01}
    assert table["data"] == {"max_seq_len": 128}
    real = load_job_config(LoopConfig, None, ["--model.checkpoint=/some/ckpt", "--dpo.schedule.epochs=3.0"])
    assert S.train_table("dpo", real) == {"schedule": {"epochs": 3.0}}  # the trainer's own (paper) defaults


def test_train_table_caps_the_row_length_at_a_checkpoints_context(tmp_path):
    """From a checkpoint with a 256-token context, the trainer's 1024-token default rows would be refused at the
    first training stage; the table caps them, and the config's own setting still wins."""
    model = build_model(dataclasses.replace(get_preset("tiny"), max_seq_len=256), seed=0)
    model.save_pretrained(tmp_path / "ckpt")
    cfg = load_job_config(LoopConfig, None, [f"--model.checkpoint={tmp_path / 'ckpt'}"])
    assert S.train_table("dpo", cfg) == {"data": {"max_seq_len": 256}}
    own = load_job_config(
        LoopConfig, None, [f"--model.checkpoint={tmp_path / 'ckpt'}", "--sft.data.max_seq_len=64"]
    )
    assert S.train_table("sft", own)["data"] == {"max_seq_len": 64}


@pytest.mark.parametrize("tie", [None, True, False])
def test_build_m0_ties_the_embeddings_as_asked_else_as_the_preset(tmp_path, tie):
    overrides = ["--model.preset=tiny", "--model.max_seq_len=64"]
    if tie is not None:
        overrides.append(f"--model.tie_embeddings={str(tie).lower()}")
    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=run", *overrides])
    run = RunDir(cfg)
    Tokenizer.train_bpe(["Which is larger, 37 or 82?", "82"] * 20, vocab_size=300).save(run.tokenizer)
    S.build_m0(cfg, run)
    m0 = read_model_config(run.model(0))
    assert m0.tie_embeddings is (get_preset("tiny").tie_embeddings if tie is None else tie)
    shapes = {k: tuple(v.shape) for k, v in load_file(run.model(0) / "model.safetensors").items()}
    assert ("lm_head.weight" in shapes) is not m0.tie_embeddings


def test_tie_embeddings_is_refused_with_a_checkpoint(tmp_path):
    model = build_model(get_preset("tiny"), seed=0)
    model.save_pretrained(tmp_path / "ckpt")
    cfg = load_job_config(
        LoopConfig, None, [f"--model.checkpoint={tmp_path / 'ckpt'}", "--model.tie_embeddings=true"]
    )
    with pytest.raises(ConfigError, match="model.tie_embeddings"):
        cfg.validate()


@pytest.mark.parametrize("name", ["prompts.jsonl", "candidates.jsonl"])
def test_a_stage_reads_only_its_inputs(tmp_path, name):
    """A missing input is a clear file error, not a silent empty stage."""
    it, _ = make_iteration(tmp_path, ScriptedPolicy())
    stage = S.sample_candidates if name == "prompts.jsonl" else S.judge_candidates
    with pytest.raises(FileNotFoundError, match=name):
        stage(it)


# ---- the reward arms, the meta-judge and the checker's reports (issue 15) ----------------------------------------

TASK_ROWS = [
    {"prompt": "What is 2 plus 3?", "responses": ["5", "6", "7", "5"]},
    {"prompt": "Which is larger, 17 or 71?", "responses": ["17", "71", "17", "17"]},
    {"prompt": "Write a poem about the sea.", "responses": ["waves", "salt", "blue", "deep"]},
]


def _candidates(it, rows=TASK_ROWS):
    write_jsonl_atomic(it.dir / "candidates.jsonl", rows)


def test_candidates_report_pass_at_1_and_pass_at_n_of_the_tasks(tmp_path):
    policy = ScriptedPolicy(outputs=[x for r in TASK_ROWS for x in r["responses"]])
    it, _ = make_iteration(tmp_path, policy, "--candidates.n=4")
    write_jsonl_atomic(it.dir / "prompts.jsonl", [{"prompt": r["prompt"]} for r in TASK_ROWS])
    S.sample_candidates(it)
    c = json.loads((it.dir / "stats.json").read_text())["candidates"]["checker"]
    # 2 of 3 prompts are tasks; right: 2 of 4 and 1 of 4 → pass@1 = (0.5 + 0.25) / 2, both have one right.
    assert c == {"tasks": 2, "n": 4, "pass_at_1": 0.375, "pass_at_n": 1.0, "mixed": 2}


@pytest.mark.parametrize("reward", ["self", "random", "oracle"])
def test_judge_stage_takes_its_reward_from_the_arm(tmp_path, reward):
    # The self-judge here prefers long answers, i.e. never the correct short one.
    policy = ScriptedPolicy(score_of=lambda p, r: float(len(r)))
    it, _ = make_iteration(tmp_path, policy, f"--judge.reward={reward}")
    _candidates(it)
    S.judge_candidates(it)
    rows = read_jsonl(it.dir / "judgments.jsonl")[0]
    scores = [r["scores"] for r in rows]
    if reward == "oracle":
        assert not policy.judge_calls  # the checker, not the model
        assert scores == [[5.0, 1.0, 1.0, 5.0], [1.0, 5.0, 1.0, 1.0], [None] * 4]
    else:
        assert len(policy.judge_calls) == 1
        own = [[float(len(x)) for x in r["responses"]] for r in TASK_ROWS]
        if reward == "self":
            assert scores == own
        else:  # the same scores per prompt, dealt to other candidates
            assert [sorted(s) for s in scores] == [sorted(s) for s in own]


def test_meta_judge_stage_writes_judge_pairs_that_select_pairs_adds(tmp_path):
    def judge(prompt, response):
        if "\nResponse: " in prompt:  # a meta item (judged instruction and response): a "Score: 5" is best
            return 5.0 if response.startswith("Score: 5") else 2.0
        return 3.0

    policy = ScriptedPolicy(score_of=judge)
    it, _ = make_iteration(tmp_path, policy, "--judge.meta=true", "--judge.meta_candidates=2")
    probs = [[0.0, 0.5, 0.0, 0.0, 0.0, 0.5]] * 4
    rows = [{**r, "scores": [3.0, 3.0, 1.0, 2.0], "probs": probs} for r in TASK_ROWS[:2]]
    write_jsonl_atomic(it.dir / "judgments.jsonl", rows)
    S.meta_judge(it)
    meta_call = policy.judge_calls[-1]
    assert meta_call["template"].name == "meta" and len(meta_call["items"]) == 4  # 2 candidates x 2 judgments
    judge_pairs = read_jsonl(it.dir / "judge_pairs.jsonl")[0]
    assert len(judge_pairs) == 2 and all(
        p["chosen"] == "Score: 5" and p["rejected"] == "Score: 1" for p in judge_pairs
    )
    stats = json.loads((it.dir / "stats.json").read_text())["meta"]
    assert stats["meta_judged"] == 2 and stats["with_alternatives"] == 8
    assert sum(stats["checker"].values()) == 2
    S.select_pairs(it)
    pairs = read_jsonl(it.dir / "pairs.jsonl")[0]
    assert sum(p["prompt"].startswith("Judge the response") for p in pairs) == 2
    assert json.loads((it.dir / "stats.json").read_text())["pairs"]["judge_pairs"] == 2


def test_meta_needs_expected_mode():
    with pytest.raises(Exception, match="judge.meta"):
        load_job_config(LoopConfig, None, ["--judge.meta=true", "--judge.mode=sample"])
