"""`[retrieval]` in the loop: off changes nothing; on, evidence reaches the candidate and judge prompts in the
documented format (recipe/evidence.py); bad settings are config errors before any work."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from srlm_fast.config import ConfigError, load_job_config
from srlm_fast.io import read_jsonl, write_jsonl_atomic
from srlm_fast.recipe import experiment as X
from srlm_fast.recipe import grounding as G
from srlm_fast.recipe import passage_instruct as PI
from srlm_fast.recipe import rewards as R
from srlm_fast.recipe import stages as S
from srlm_fast.recipe import task_knowledge, tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.evidence import NO_EVIDENCE, question_of, split_evidence, with_evidence
from srlm_fast.recipe.judge import DEFAULT_TEMPLATE_PATH, GROUNDED_VARIANT, JudgeResult, JudgeTemplate
from srlm_fast.recipe.rundir import RunDir
from tests.recipe.test_stages import ScriptedPolicy, make_iteration

PLACE, CAPITAL = next(iter(task_knowledge.CAPITAL_OF.items()))
RIVER, KM = next(iter(task_knowledge.RIVER_KM.items()))
QUESTIONS = [f"Which city is the capital of {PLACE}?", f"How long is the {RIVER} river?", "What is 2 plus 3?"]
ON = [
    "--retrieval.task_corpus=true",
    "--retrieval.candidates=true",
    "--retrieval.judge=true",
    "--retrieval.k=2",
]


class GroundedPolicy(ScriptedPolicy):
    """ScriptedPolicy whose judge also takes (instruction, response, evidence) items."""

    def judge(self, items, template, config, seed=0):
        self.judge_calls.append(dict(items=list(items), template=template, config=config, seed=seed))
        return [JudgeResult(3.0, 1, 0, (3.0,), ("Score: 3",)) for _ in items]


# ---- the format ---------------------------------------------------------------------------------------------


def test_evidence_prompt_format_and_reading_it_back() -> None:
    p = with_evidence("What is 2 plus 3?", ["First  passage\nwith a newline.", "Second."])
    assert p == "Evidence: First passage with a newline.\nEvidence: Second.\nQuestion: What is 2 plus 3?"
    assert split_evidence(p) == (["First passage with a newline.", "Second."], "What is 2 plus 3?")
    assert (
        with_evidence("Q?", []) == f"{NO_EVIDENCE}\nQuestion: Q?"
        and question_of(with_evidence("Q?", [])) == "Q?"
    )
    for plain in ("What is 2 plus 3?", "Evidence: x", "Evidence: x\nNot a question", "Question: y"):
        assert split_evidence(plain) == ([], plain)


def test_grounded_judge_template() -> None:
    g = JudgeTemplate.from_spec("grounded")
    out = g.render("Q?", "A.", ["p one", "p two"])
    assert out.startswith(g.prefix) and "Supported" in g.prefix
    assert "\nEvidence: p one\nEvidence: p two\nInstruction: Q?\nResponse: A." in out
    assert NO_EVIDENCE in g.render("Q?", "A.")
    with pytest.raises(ValueError, match="no {evidence} placeholder"):
        JudgeTemplate.compact().render("Q?", "A.", ["p"])
    with pytest.raises(ValueError, match="at most one {evidence}"):
        JudgeTemplate("Rubric.\n{evidence}{evidence}\n{instruction}\n{response}")
    with pytest.raises(ValueError, match="at most one {evidence}"):
        JudgeTemplate("Rubric.\n{instruction}\n{evidence}\n{response}")


def test_full_grounded_template_is_the_full_rubric_reading_evidence() -> None:
    full, grounded = JudgeTemplate.full(), JudgeTemplate.from_spec("full_grounded")
    assert not full.is_grounded and grounded.is_grounded and grounded.name == "full_grounded"
    out = grounded.render("Q?", "A.", ["p one", "p two"])
    assert out.startswith(grounded.prefix) and "supported by the evidence" in grounded.prefix
    assert "\nEvidence: p one\nEvidence: p two\n\nUser: Q?\n\nResponse: A.\n" in out
    # The same five additive points and the same closing line as the full rubric: the scale stays 0-5.
    for text in (full.text, grounded.text):
        assert [f"Add {n} point" in text for n in ("1", "a 2nd", "a 3rd", "a 4th", "a 5th")] == [True] * 5
        assert text.rstrip().endswith('"Score: <total points>".')
    assert {name: JudgeTemplate.from_spec(v).is_grounded for name, v in GROUNDED_VARIANT.items()} == {
        "compact": True,
        "full": True,
    }


@pytest.mark.parametrize("rubric", ["compact", "full"])
def test_retrieval_judge_switches_a_shipped_rubric_to_its_grounded_variant(rubric: str) -> None:
    cfg = load_job_config(LoopConfig, None, [f"--judge.template={rubric}"])
    assert G.judge_spec(cfg).template == rubric  # retrieval off: the rubric as configured
    cfg = load_job_config(
        LoopConfig,
        None,
        [f"--judge.template={rubric}", "--retrieval.task_corpus=true", "--retrieval.judge=true"],
    )
    cfg.validate()
    assert G.judge_spec(cfg).template == GROUNDED_VARIANT[rubric]


def test_a_grounded_rubric_without_retrieval_is_refused() -> None:
    for name in GROUNDED_VARIANT.values():
        cfg = load_job_config(LoopConfig, None, [f"--judge.template={name}"])
        with pytest.raises(ConfigError, match=f"judge.template: '{name}' reads retrieved evidence"):
            cfg.validate()


# ---- retrieval off: nothing changes ---------------------------------------------------------------------------

# sha256 of seed/sft.jsonl for these settings, made by the code before [retrieval] existed (commit b5cfc7a), with
# the meta-EFT fix of 6c862d6 (its 30 meta-judge rows show score-only judgments; every other row is unchanged).
SFT_BEFORE = "8f762208ed6d53263a12bbe9505dde6018acdddcb077a444228157a67f5869ad"
EVAL_BEFORE = "109ab7dbbfd66f5bef2eb6a42e6ff8ab6e5b71e4a4e0288c15fb1d833c689139"


def test_retrieval_off_the_seed_data_and_eval_prompts_are_byte_identical_to_before() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_job_config(LoopConfig, None, [
            f"--runs_dir={tmp}", "--name=g", "--seed_data.n_ift=300", "--seed_data.n_eft=120",
            "--seed_data.n_meft=30", "--seed_data.n_selfinstruct=20", "--seed_data.n_seed_prompts=30",
        ])  # fmt: skip
        run = RunDir(cfg)
        run.seed.mkdir(parents=True)
        S.build_seed_data(cfg, run)
        assert hashlib.sha256((run.seed / "sft.jsonl").read_bytes()).hexdigest() == SFT_BEFORE
        assert not (run.root / "retrieval").exists()
    prompts = json.dumps([t.prompt for t in tasks.eval_prompts(100, 0)]).encode()
    assert hashlib.sha256(prompts).hexdigest() == EVAL_BEFORE


def _prompts(it, prompts=QUESTIONS) -> None:
    write_jsonl_atomic(it.dir / "prompts.jsonl", [{"prompt": p} for p in prompts])


def test_retrieval_off_candidates_and_judge_prompts_are_the_plain_prompts(tmp_path) -> None:
    policy = GroundedPolicy()
    it, _ = make_iteration(tmp_path, policy, "--candidates.n=2")
    _prompts(it)
    S.sample_candidates(it)
    assert policy.generate_calls[0]["prompts"] == QUESTIONS
    rows = read_jsonl(it.dir / "candidates.jsonl")[0]
    assert [sorted(r) for r in rows] == [["prompt", "responses"]] * 3 and [
        r["prompt"] for r in rows
    ] == QUESTIONS
    S.judge_candidates(it)
    call = policy.judge_calls[0]
    assert call["template"].name == "compact" and all(len(x) == 2 for x in call["items"])
    assert "judge_evidence" not in read_jsonl(it.dir / "judgments.jsonl")[0][0]


# ---- retrieval on ----------------------------------------------------------------------------------------------


def _grounded_iteration(tmp_path: Path, *flags: str):
    policy = GroundedPolicy()
    it, _ = make_iteration(tmp_path, policy, "--candidates.n=2", *flags)
    it.cfg.validate()
    G.build_index(it.cfg, it.run)
    _prompts(it)
    return it, policy


def test_candidates_get_the_prompts_evidence_in_the_documented_format(tmp_path) -> None:
    it, policy = _grounded_iteration(tmp_path, "--retrieval.task_corpus=true", "--retrieval.candidates=true")
    S.sample_candidates(it)
    seen = policy.generate_calls[0]["prompts"]
    assert seen[0].startswith(f"Evidence: {CAPITAL} is the capital of {PLACE}.\nEvidence: ")
    assert seen[0].endswith(f"\nQuestion: {QUESTIONS[0]}") and seen[0].count("Evidence: ") == 2
    assert seen[1].startswith(f"Evidence: The {RIVER} river is {KM} km long.\n")
    rows = read_jsonl(it.dir / "candidates.jsonl")[0]
    assert [r["prompt"] for r in rows] == seen and [r["question"] for r in rows] == QUESTIONS
    # The checker grades the evidence prompts as their questions.
    assert it.stats["candidates"]["checker"]["tasks"] == 3
    # The judge (off here) reads the plain question, with the compact rubric.
    S.judge_candidates(it)
    call = policy.judge_calls[0]
    assert call["template"].name == "compact" and [x[0] for x in call["items"][::2]] == QUESTIONS


def test_the_judge_gets_evidence_for_prompt_and_response(tmp_path) -> None:
    it, policy = _grounded_iteration(tmp_path, "--retrieval.task_corpus=true", "--retrieval.judge=true")
    S.sample_candidates(it)
    assert policy.generate_calls[0]["prompts"] == QUESTIONS  # generation evidence is off
    S.judge_candidates(it)
    call = policy.judge_calls[0]
    assert call["template"].name == "grounded"
    ins, resp, evidence = call["items"][0]
    assert ins == QUESTIONS[0] and f"{CAPITAL} is the capital of {PLACE}." in evidence and len(evidence) == 2
    prompt = call["template"].render(ins, resp, evidence)
    assert f"\nEvidence: {CAPITAL} is the capital of {PLACE}.\n" in prompt and prompt.index(
        "Evidence:"
    ) < prompt.index("Instruction:")
    rows = read_jsonl(it.dir / "judgments.jsonl")[0]
    assert rows[0]["judge_evidence"][0] == evidence


def test_the_meta_judge_reads_what_the_grounded_judge_read(tmp_path) -> None:
    it, policy = _grounded_iteration(tmp_path, *ON, "--judge.meta=true", "--judge.meta_candidates=6")
    S.sample_candidates(it)
    S.judge_candidates(it)
    rows = read_jsonl(it.dir / "judgments.jsonl")[0]
    probs = [0.0, 0.5, 0.0, 0.0, 0.0, 0.5]  # the judge hesitated between 1 and 5: two judgments to meta-judge
    write_jsonl_atomic(
        it.dir / "judgments.jsonl", [{**r, "probs": [probs] * len(r["responses"])} for r in rows]
    )
    S.meta_judge(it)
    call = policy.judge_calls[-1]
    assert call["template"].name == "meta_grounded" and len(call["items"]) == 12  # 6 candidates x 2 judgments
    judged = {
        (r["question"], resp): ev for r in rows for resp, ev in zip(r["responses"], r["judge_evidence"])
    }
    for meta_instruction, judgment, evidence in call["items"]:
        question, _, response = meta_instruction.partition("\nResponse: ")
        assert evidence == judged[(question, response)]  # the judge's own evidence, not the candidate's
        assert judgment in ("Score: 1", "Score: 5")
    # The scripted meta-judge scores every judgment 3: ties, so no pair; with a preference the pair's prompt is the
    # grounded judge prompt the judge read (rewards.meta_judge_pairs, below).
    assert read_jsonl(it.dir / "judge_pairs.jsonl")[0] == []
    grounded = JudgeTemplate.grounded()
    (question, response), evidence = next(iter(judged.items()))
    pairs, _ = R.meta_judge_pairs(
        [(question, response)], [[1, 5]], [[2.0, 5.0]], grounded, evidence=[evidence]
    )
    assert pairs[0].prompt == grounded.render(question, response, evidence) and pairs[0].chosen == "Score: 5"
    assert f"\nEvidence: {evidence[0]}\n" in pairs[0].prompt


def build_seed_run(cfg: LoopConfig) -> RunDir:
    """A run directory holding `cfg`'s index (when it has one) and seed data, as the loop's first stages make them."""
    cfg.validate()
    run = RunDir(cfg)
    run.seed.mkdir(parents=True)
    if cfg.retrieval.builds_index:
        G.build_index(cfg, run)
    S.build_seed_data(cfg, run)
    return run


def test_grounded_eft_examples_hold_the_evidence(tmp_path) -> None:
    cfg = load_job_config(LoopConfig, None, [
        f"--runs_dir={tmp_path}", "--name=e", "--seed_data.n_ift=40", "--seed_data.n_eft=30", "--seed_data.n_meft=5",
        "--seed_data.n_selfinstruct=5", "--seed_data.n_seed_prompts=10", '--seed_data.families=["kb_capital"]', *ON,
    ])  # fmt: skip
    run = build_seed_run(cfg)
    eft = [
        r["prompt"]
        for r in read_jsonl(run.seed / "eft.jsonl")[0]
        if r["prompt"].startswith("Judge the response by")
    ]
    ift = [r["prompt"] for r in read_jsonl(run.seed / "ift.jsonl")[0]]
    assert len(eft) == 30 and all(
        "\nEvidence: " in p and "\nInstruction: " in p and "capital of" in p for p in eft
    )
    assert len(ift) == 40 and all(p.startswith("Evidence: ") and "\nQuestion: " in p for p in ift)
    # The meta-judge examples read the evidence too, under the grounded meta rubric.
    meta = [
        r["prompt"]
        for r in read_jsonl(run.seed / "eft.jsonl")[0]
        if r["prompt"].startswith("Judge the judgment")
    ]
    assert len(meta) == 5 and all(
        p.startswith(JudgeTemplate.meta_grounded().prefix) and "\nEvidence: " in p and "\nJudgment: " in p
        for p in meta
    )


def test_shuffle_judge_reorders_the_judge_examples_evidence_only(tmp_path) -> None:
    """`retrieval.shuffle_judge`: M1's judge and meta-judge examples are the same examples with each one's
    passages in a random order; nothing else in the seed data changes, and it is another M1."""
    flags = [f"--runs_dir={tmp_path}", "--seed_data.n_ift=20", "--seed_data.n_eft=60", "--seed_data.n_meft=20",
             "--seed_data.n_selfinstruct=5", "--seed_data.n_seed_prompts=10", *ON]  # fmt: skip
    plain_cfg = load_job_config(LoopConfig, None, [*flags, "--name=p"])
    shuffled_cfg = load_job_config(LoopConfig, None, [*flags, "--name=s", "--retrieval.shuffle_judge=true"])
    plain, shuffled = (build_seed_run(c) for c in (plain_cfg, shuffled_cfg))
    assert (plain.seed / "ift.jsonl").read_bytes() == (shuffled.seed / "ift.jsonl").read_bytes()
    before, after = (read_jsonl(r.seed / "eft.jsonl")[0] for r in (plain, shuffled))
    assert len(before) == len(after) == 80

    def lines(p: str) -> list[str]:
        return [x for x in p.split("\n") if x.startswith("Evidence: ")]

    assert all(
        sorted(lines(x["prompt"])) == sorted(lines(y["prompt"])) and x["response"] == y["response"]
        for x, y in zip(before, after)
    )
    moved = [x["prompt"] != y["prompt"] for x, y in zip(before, after)]
    assert 15 < sum(moved[:60]) < 45 and 3 < sum(moved[60:]) < 17  # judge and meta-judge examples both
    assert X.m1_inputs(plain_cfg) != X.m1_inputs(shuffled_cfg)


def test_reading_examples_join_the_instruction_examples_in_the_evidence_format(tmp_path) -> None:
    flags = [f"--runs_dir={tmp_path}", "--seed_data.n_ift=40", "--seed_data.n_eft=10", "--seed_data.n_meft=5",
             "--seed_data.n_selfinstruct=5", "--seed_data.n_seed_prompts=10", *ON]  # fmt: skip
    plain = build_seed_run(load_job_config(LoopConfig, None, [*flags, "--name=p"]))
    reading = build_seed_run(
        load_job_config(LoopConfig, None, [*flags, "--name=r", "--seed_data.n_reading=12"])
    )
    before, after = (read_jsonl(r.seed / "ift.jsonl")[0] for r in (plain, reading))
    assert after[:40] == before and len(after) == 52
    for row in after[40:]:
        passages, _ = split_evidence(row["prompt"])
        assert len(passages) == 2 and sum(row["response"] in p for p in passages) == 1
    assert len(read_jsonl(reading.seed / "sft.jsonl")[0]) == len(read_jsonl(plain.seed / "sft.jsonl")[0]) + 12


def test_sft_evidence_off_keeps_m1s_seed_data_plain_while_candidates_read_evidence(tmp_path) -> None:
    """`retrieval.sft_evidence = false`: the seed data is the judge-only run's, byte for byte (so an M1 trained
    without evidence in its answers is reused, `--m1-from`), and the loop still prompts candidates with evidence."""
    flags = [f"--runs_dir={tmp_path}", "--seed_data.n_ift=40", "--seed_data.n_eft=10", "--seed_data.n_meft=5",
             "--seed_data.n_selfinstruct=5", "--seed_data.n_seed_prompts=10", "--retrieval.task_corpus=true",
             "--retrieval.judge=true"]  # fmt: skip
    judge_only = load_job_config(LoopConfig, None, [*flags, "--name=j"])
    taught = load_job_config(LoopConfig, None, [*flags, "--name=g", "--retrieval.candidates=true"])
    untaught = load_job_config(
        LoopConfig,
        None,
        [*flags, "--name=u", "--retrieval.candidates=true", "--retrieval.sft_evidence=false"],
    )
    runs = {name: build_seed_run(cfg) for name, cfg in (("j", judge_only), ("g", taught), ("u", untaught))}
    sft = {name: (run.seed / "sft.jsonl").read_bytes() for name, run in runs.items()}
    assert sft["u"] == sft["j"] != sft["g"]
    assert not any("Evidence: " in r["prompt"] for r in read_jsonl(runs["u"].seed / "ift.jsonl")[0])
    assert X.m1_inputs(untaught) == X.m1_inputs(judge_only) != X.m1_inputs(taught)
    shuffled = load_job_config(LoopConfig, None, [*flags, "--name=s", "--retrieval.candidates=true",
                               "--retrieval.sft_evidence=false", "--retrieval.shuffle_candidates=true"])  # fmt: skip
    assert X.m1_inputs(shuffled) == X.m1_inputs(untaught)  # the loop's candidates only: the same M1
    with pytest.raises(ConfigError, match="seed_data.n_reading"):
        load_job_config(LoopConfig, None, [*flags, "--retrieval.candidates=true", "--retrieval.sft_evidence=false",
                                           "--seed_data.n_reading=4"]).validate()  # fmt: skip
    it, policy = _grounded_iteration(tmp_path / "loop", "--retrieval.task_corpus=true",
                                     "--retrieval.candidates=true", "--retrieval.sft_evidence=false")  # fmt: skip
    S.sample_candidates(it)
    assert all(p.startswith("Evidence: ") for p in policy.generate_calls[0]["prompts"])


def test_an_index_no_sft_example_reads_does_not_change_m1(tmp_path) -> None:
    """The ungrounded judge's M1 (no retrieval at all) is the M1 of a run whose candidates read the task corpus
    but whose SFT shows no evidence: same seed data, byte for byte, so `--m1-from` may lend it; a grounded judge
    or evidence in SFT makes another M1, and so do the index settings once an SFT example reads the index."""
    flags = [f"--runs_dir={tmp_path}", "--seed_data.n_ift=30", "--seed_data.n_eft=10", "--seed_data.n_meft=5",
             "--seed_data.n_selfinstruct=5", "--seed_data.n_seed_prompts=10"]  # fmt: skip
    gen = ["--retrieval.task_corpus=true", "--retrieval.candidates=true", "--retrieval.sft_evidence=false"]
    plain = load_job_config(LoopConfig, None, [*flags, "--name=p"])
    reads = load_job_config(LoopConfig, None, [*flags, "--name=c", *gen, "--retrieval.k=3"])
    grounded = load_job_config(LoopConfig, None, [*flags, "--name=g", *gen, "--retrieval.judge=true"])
    grounded_k3 = load_job_config(LoopConfig, None, [*flags, "--name=g3", *gen, "--retrieval.judge=true",
                                                     "--retrieval.k=3"])  # fmt: skip
    sft = {c.name: (build_seed_run(c).seed / "sft.jsonl").read_bytes() for c in (plain, reads, grounded)}
    assert sft["p"] == sft["c"] != sft["g"]
    assert X.m1_inputs(plain) == X.m1_inputs(reads)
    assert X.m1_inputs(plain) != X.m1_inputs(grounded) != X.m1_inputs(grounded_k3)


def test_judge_reading_examples_join_the_judge_examples(tmp_path) -> None:
    flags = [f"--runs_dir={tmp_path}", "--seed_data.n_ift=10", "--seed_data.n_eft=10", "--seed_data.n_meft=5",
             "--seed_data.n_selfinstruct=5", "--seed_data.n_seed_prompts=10", "--retrieval.task_corpus=true",
             "--retrieval.judge=true"]  # fmt: skip
    plain = build_seed_run(load_job_config(LoopConfig, None, [*flags, "--name=p"]))
    reading = build_seed_run(
        load_job_config(LoopConfig, None, [*flags, "--name=r", "--seed_data.n_judge_reading=8"])
    )
    before, after = (read_jsonl(r.seed / "eft.jsonl")[0] for r in (plain, reading))
    assert after[:10] == before[:10] and after[18:] == before[10:] and len(after) == len(before) + 8
    for row in after[10:18]:
        assert row["prompt"].startswith(JudgeTemplate.grounded().prefix)
        assert row["response"] in ("Score: 5", "Score: 1")
    assert len(read_jsonl(reading.seed / "sft.jsonl")[0]) == len(read_jsonl(plain.seed / "sft.jsonl")[0]) + 8


# ---- config ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--retrieval.candidates=true"], "retrieval: candidates/judge/selfinstruct need a source"),
        (["--retrieval.k=0"], "retrieval.k: must be >= 1"),
        (["--retrieval.max_words=0"], "retrieval.max_words: must be >= 1"),
        (['--retrieval.corpus=["nope.jsonl"]'], r"retrieval.corpus\[0\]: no such file"),
        (["--retrieval.index=."], "retrieval.index: .*not an index directory"),
        (
            ["--retrieval.kind=dense", "--retrieval.task_corpus=true"],
            "retrieval.embedder: a dense index needs",
        ),
        # A template file without {evidence} (the full rubric's own file): "full" by name gets its grounded variant.
        (
            [*ON, f"--judge.template={DEFAULT_TEMPLATE_PATH}"],
            "judge.template: retrieval.judge needs 'compact' or 'full'",
        ),
        ([*ON, "--judge.meta=true", "--seed_data.n_meft=0"], "seed_data.n_meft: judge.meta needs meta-judge"),
        (["--judge.template=grounded"], "judge.template: 'grounded' reads retrieved evidence"),
        (['--seed_data.families=["nope"]'], r"seed_data.families: unknown families \['nope'\]"),
        (
            [
                "--retrieval.task_corpus=true",
                "--seed_data.source=files",
                f'--seed_data.ift_files=["{__file__}"]',
            ],
            "retrieval.task_corpus: needs seed_data.source = 'tasks'",
        ),
        (["--retrieval.kind=sparse"], "retrieval.kind"),
        (["--seed_data.n_reading=5"], "seed_data.n_reading: reading examples are evidence prompts"),
        (["--seed_data.n_reading=-1"], "seed_data.n_reading: must be >= 0"),
        (["--seed_data.n_judge_reading=5"], "seed_data.n_judge_reading: judge reading examples are grounded"),
        (["--retrieval.shuffle_judge=true"], "retrieval.shuffle_judge: orders the judge's evidence"),
    ],
)
def test_bad_retrieval_settings_are_config_errors(tmp_path, flags, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", *flags]).validate(S.train_table)


def test_an_index_and_corpus_files_together_are_refused(tmp_path) -> None:
    corpus = task_knowledge.write_corpus(tmp_path / "kb.jsonl")
    cfg = load_job_config(LoopConfig, None, [f"--runs_dir={tmp_path}", "--name=i", *ON[:1]])
    run = RunDir(cfg)
    G.build_index(cfg, run)
    index = G.index_dir(cfg, run)
    flags = [f"--runs_dir={tmp_path}", f"--retrieval.index={index}", "--retrieval.candidates=true"]
    load_job_config(LoopConfig, None, flags).validate()  # a built index alone is fine
    with pytest.raises(ConfigError, match="retrieval.index: a built index or corpus files"):
        load_job_config(LoopConfig, None, [*flags, f'--retrieval.corpus=["{corpus}"]']).validate()


# ---- retrieval.selfinstruct ------------------------------------------------------------------------------------


QS = ["Which town is the capital of Zed?", "How long is that long river?", "What is it near the sea?"]


def test_self_instruct_from_passages_makes_them_gold_evidence(tmp_path) -> None:
    it, policy = _grounded_iteration(
        tmp_path, "--retrieval.task_corpus=true", "--retrieval.selfinstruct=true", "--retrieval.candidates=true",
        "--selfinstruct.n_prompts=3", "--selfinstruct.batch_size=4", "--eval.n_task_prompts=5",
    )  # fmt: skip
    write_jsonl_atomic(it.run.seed / "seed_prompts.jsonl", [{"prompt": "What is 2 plus 2?"}])
    policy.outputs = list(QS)
    S.self_instruct(it)
    asked = policy.generate_calls[0]["prompts"]
    assert all(p.startswith(f"{PI.HEADER}\n{PI.PASSAGE}") for p in asked) and len(asked) == 4
    rows = read_jsonl(it.dir / "prompts.jsonl")[0]
    assert [r["prompt"] for r in rows] == QS
    held = tasks.heldout_passage_ids()
    heldout_text = {r["text"] for r in task_knowledge.corpus_rows() if r["id"] in held}
    for r, p in zip(rows, asked):
        assert (
            r["evidence"] == [p.removeprefix(f"{PI.HEADER}\n{PI.PASSAGE}")]
            and r["evidence"][0] not in heldout_text
        )
    policy.outputs = []
    S.sample_candidates(it)
    seen = policy.generate_calls[-1]["prompts"]
    assert seen == [
        with_evidence(r["prompt"], r["evidence"]) for r in rows
    ]  # the gold passage, not retrieved


def test_passage_instruct_sft_examples_use_training_facts_only() -> None:
    held = tasks.heldout_passage_ids()
    heldout_text = {r["text"] for r in task_knowledge.corpus_rows() if r["id"] in held}
    examples = PI.sft_examples(300, seed=0)
    assert len(examples) == 300
    for prompt, question in examples:
        passage = prompt.removeprefix(f"{PI.HEADER}\n{PI.PASSAGE}")
        assert passage not in heldout_text and tasks.parse_prompt(question) is not None
