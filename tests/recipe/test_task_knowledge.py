"""The knowledge families: invented facts known only from the knowledge corpus, graded by the checker, held-out
entities never in SFT data."""

from __future__ import annotations

import json
import re

from srlm_fast.config import load_job_config
from srlm_fast.recipe import task_families, task_knowledge, tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.evidence import with_evidence
from srlm_fast.retrieval.corpus import read_corpus
from tests.recipe.test_grounding import build_seed_run

KB = list(task_families.KNOWLEDGE_FAMILY_NAMES)


def test_the_world_is_fixed_and_its_names_are_unique_and_invented() -> None:
    place, capital = next(iter(task_knowledge.CAPITAL_OF.items()))
    assert task_knowledge._build()[0][place] == capital  # rebuilt from the seed: the same world
    names = [*task_knowledge.CAPITAL_OF, *task_knowledge.CAPITAL_OF.values(), *task_knowledge.RIVER_KM]
    assert len(set(names)) == len(names) == 450
    assert not set(names) & set(task_knowledge.DECOY_NAMES)
    real = (
        {w.capitalize() for w in task_families.WORDS}
        | set(task_families.CAPITALS)
        | set(task_families.CAPITALS.values())
    )
    assert not set(names) & real


def test_the_knowledge_families_are_not_in_the_default_world() -> None:
    assert not set(KB) & set(task_families.DEFAULT_FAMILIES)
    assert {t.family for t in tasks.sample_tasks(500, seed=0)} <= set(task_families.DEFAULT_FAMILIES)
    assert {t.family for t in tasks.sample_tasks(200, seed=0, families=KB)} == set(KB)


def test_the_checker_grades_knowledge_answers() -> None:
    place, capital = next(iter(task_knowledge.CAPITAL_OF.items()))
    river, km = next(iter(task_knowledge.RIVER_KM.items()))
    other = list(task_knowledge.CAPITAL_OF.values())[1]
    cases = [
        (f"Which city is the capital of {place}?", capital, True),
        (f"Which city is the capital of {place}?", f"The capital is {capital}.", True),
        (f"Name the capital of the land of {place}.", other, False),
        (f"How long is the {river} river?", km, True),
        (f"What is the length of the {river} river in km?", f"{km} km", True),
        (f"How long is the {river} river?", str(int(km) + 1), False),
        # An evidence prompt is graded as its question.
        (with_evidence(f"How long is the {river} river?", [f"The {river} river is {km} km long."]), km, True),
    ]
    for prompt, response, correct in cases:
        r = tasks.check(prompt, response)
        assert r.parsed and r.correct is correct, (prompt, response, r)
    assert tasks.check("Which city is the capital of Atlantis?", "x").status == "unparseable"


def test_the_corpus_states_every_fact_and_reads_as_jsonl(tmp_path) -> None:
    path = task_knowledge.write_corpus(tmp_path / "kb.jsonl")
    passages = read_corpus([path])
    text = {p.id: p.text for p in passages}
    assert len(passages) == len(task_knowledge.CAPITAL_OF) + len(task_knowledge.RIVER_KM)
    for place, capital in task_knowledge.CAPITAL_OF.items():
        assert text[task_knowledge.passage_id("kb_capital", place)] == f"{capital} is the capital of {place}."
    assert tasks.heldout_passage_ids() <= set(text)


def _heldout_entities() -> tuple[set[str], set[str]]:
    held, train = set(), set()
    for fam, table, field in (("kb_capital", task_knowledge.CAPITAL_OF, "place"),
                              ("kb_river", task_knowledge.RIVER_KM, "river")):  # fmt: skip
        for entity in table:
            task = tasks.make_task(task_families.BY_NAME[fam], {field: entity}, 0)
            (held if tasks.is_heldout(task) else train).add(entity)
    return held, train


def test_heldout_entities_never_appear_in_sft_data(tmp_path) -> None:
    """With the knowledge families and retrieval on for both candidates and judge (evidence in IFT and EFT
    prompts), no held-out entity, nor a held-out capital, is anywhere in the SFT data; the eval split asks them."""
    cfg = load_job_config(LoopConfig, None, [
        f"--runs_dir={tmp_path}", "--name=kb", "--seed_data.n_ift=1500", "--seed_data.n_eft=600",
        "--seed_data.n_meft=100", "--seed_data.n_selfinstruct=50", "--seed_data.n_seed_prompts=100",
        f"--seed_data.families={json.dumps([*task_families.DEFAULT_FAMILIES, *KB])}",
        "--retrieval.task_corpus=true", "--retrieval.candidates=true", "--retrieval.judge=true",
    ])  # fmt: skip
    run = build_seed_run(cfg)
    sft = (run.seed / "sft.jsonl").read_text()
    words = set(re.findall(r"[A-Za-z]+", sft))
    held, train = _heldout_entities()
    assert len(held) > 10
    held_words = held | {task_knowledge.CAPITAL_OF[p] for p in held if p in task_knowledge.CAPITAL_OF}
    leaked = sorted(held_words & words)
    assert not leaked, leaked
    assert len(train & words) > 50  # train facts are there (as questions, answers and evidence)
    assert "Evidence: " in sft and "Question: " in sft
    asked = {t.prompt for t in tasks.eval_prompts(40, cfg.seed, KB)}
    assert any(e in p for p in asked for e in held)
