"""The stages of `srlm run`: each a top-level function that makes one artifact of the run directory.

Before the first iteration, over (cfg, run):
    build_index         retrieval/index/ with [retrieval] on (recipe/grounding.py)
    build_seed_data     seed/sft.jsonl (and ift.jsonl, eft.jsonl, seed_prompts.jsonl)
    build_tokenizer     tokenizer/
    build_m0            m0/, a random model of the preset's architecture
    train_sft           m1/, SFT of M0 on seed/sft.jsonl
Every model M_k, over (cfg, run, k, policy_factory):
    evaluate            eval/m<k>.json (recipe/evaluation.py)
Iteration t (M_t → M_{t+1}), over an `Iteration`:
    self_instruct       iter<t>/prompts.jsonl
    sample_candidates   iter<t>/candidates.jsonl
    judge_candidates    iter<t>/judgments.jsonl
    select_pairs        iter<t>/pairs.jsonl (rank 0 only)
    reference_logprobs  iter<t>/pairs.ref.jsonl
    train_dpo           m<t+1>/

The driver (loop.py) calls each through `rundir.stage` when its artifact is missing: on every rank (generation and
training are collective), and each commits its artifact atomically, last, on rank 0. `crash_point` sits after a
stage's work and before its commit, the worst moment for a crash, which the resume test kills the run at. Every
stage is deterministic given its inputs and the run's seed.

At ~550 lines this module is over the project's ~500 on purpose: it is the list of stages the driver calls, one
top-level function each, in run order; the checker's reporting moved to `stage_checks.py` and the retrieval stage's
work to `grounding.py`, so what stays is the stages themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srlm_fast.config import ConfigError, from_dict, merge
from srlm_fast.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from srlm_fast.model.checkpoint import is_checkpoint_dir, read_model_config
from srlm_fast.model.config import get_preset
from srlm_fast.model.llama import build_model
from srlm_fast.model.tokenizer import Tokenizer
from srlm_fast.recipe import grounding as G
from srlm_fast.recipe import judge as J
from srlm_fast.recipe import pairs as P
from srlm_fast.recipe import passage_instruct as PI
from srlm_fast.recipe import rewards as R
from srlm_fast.recipe import selfinstruct as SI
from srlm_fast.recipe import task_eft, tasks
from srlm_fast.recipe import task_reading as TR
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.evaluation import evaluate_model, judge_items
from srlm_fast.recipe.evidence import with_evidence
from srlm_fast.recipe.prompt_shapes import PromptShapes
from srlm_fast.recipe.rundir import RunDir, copy_checkpoint, crash_point, kill_requested, log, progress
from srlm_fast.recipe.seed_data import load_ift
from srlm_fast.recipe.stage_checks import checked_candidates, checked_judge_pairs, checked_pairs
from srlm_fast.train.checkpointing import CHECKPOINTS
from srlm_fast.train.config import DataSection, TrainConfig
from srlm_fast.train.reference import compute_reference_logprobs
from srlm_fast.train.trainer import train

# Checkpoint directory → a policy of that model (recipe/policy.py's `Policy`, or a test's stand-in).
PolicyFactory = Callable[[Path], Any]


# ---- seed data, tokenizer, M0 ------------------------------------------------------------------------------


def build_seed_data(cfg: LoopConfig, run: RunDir) -> None:
    """IFT + EFT (+ meta-EFT in the task world) + self-instruct-format examples → seed/sft.jsonl (shuffled), plus
    the seed prompt pool."""
    s, seed, r = cfg.seed_data, cfg.seed, cfg.retrieval
    template = J.JudgeTemplate.from_spec(G.judge_spec(cfg).template)
    fams = s.families or None  # None: the default world
    grounding = G.load_grounding(cfg, run)
    if grounding is not None and s.source == "tasks":
        # SFT never shows a held-out fact, not even as evidence for another question.
        grounding = grounding.without(tasks.heldout_passage_ids())
    judge_evidence = None
    if grounding is not None and r.judge:
        judge_evidence = functools.partial(grounding.judge_evidence, shuffle=G.judge_order(cfg, seed))
    if s.source == "tasks":
        ift = [{"prompt": e.prompt, "response": e.response} for e in tasks.ift_examples(s.n_ift, seed, fams)]
        eft = [
            {"prompt": e.prompt, "response": e.response}
            for e in task_eft.eft_examples(
                s.n_eft,
                seed,
                template,
                fams,
                mix=s.eft_mix,
                evidence=judge_evidence,
                reference=s.eft_reference,
                blind=s.eft_blind,
                misspell=s.eft_misspell,
            )
        ]
        if s.n_judge_reading:  # validated: retrieval.judge is on, so `template` is grounded
            eft += [
                {"prompt": p, "response": j}
                for p, j in TR.judge_reading_examples(s.n_judge_reading, seed, template, r.k, s.eft_reference)
            ]
        # Meta-judge examples (a judgment judged), so every M1 can meta-judge and every arm shares one M1.
        eft += [
            {"prompt": e.prompt, "response": e.response}
            for e in task_eft.meta_eft_examples(
                s.n_meft, seed, J.JudgeTemplate.meta_for(template), fams, evidence=judge_evidence
            )
        ]
        seed_prompts = tasks.train_prompts(s.n_seed_prompts, seed, fams)
    else:
        if not s.ift_files:
            raise ConfigError(
                "seed_data.ift_files: at least one file is needed when seed_data.source = 'files'"
            )
        ift = [{"prompt": e.prompt, "response": e.response} for e in load_ift(s.ift_files)[0]]
        eft = []
        for path in s.eft_files:
            eft += read_jsonl(path, required=("prompt", "response"))[0]
        seed_prompts = [x["prompt"] for x in ift[: s.n_seed_prompts]]
    if grounding is not None and r.evidence_in_sft:
        # Every instruction example in the evidence format, as the loop's candidates will be prompted (M1 learns
        # to read evidence lines; self-instruct keeps writing plain questions from the plain seed prompts).
        shown = grounding.prompts([x["prompt"] for x in ift])
        ift = [{**x, "prompt": p} for x, p in zip(ift, shown)]
        # Questions about invented facts, answerable only from their evidence (task world only: validated).
        if s.n_reading:
            ift += [{"prompt": p, "response": a} for p, a in TR.reading_examples(s.n_reading, seed, r.k)]
    shots = {"n_seed": cfg.selfinstruct.n_seed, "n_generated": cfg.selfinstruct.n_generated}
    si = [
        {"prompt": p, "response": x}
        for p, x in SI.sft_examples(seed_prompts, s.n_selfinstruct, seed, **shots)
    ]
    if (
        r.selfinstruct and s.source == "tasks"
    ):  # passage → question examples, so M1 can self-instruct from passages
        si += [{"prompt": p, "response": q} for p, q in PI.sft_examples(s.n_selfinstruct, seed)]
    mixed = ift + eft + si
    random.Random(f"sft-mix:{seed}").shuffle(mixed)
    write_jsonl_atomic(run.seed / "ift.jsonl", ift)
    write_jsonl_atomic(run.seed / "eft.jsonl", eft)
    write_jsonl_atomic(run.seed / "seed_prompts.jsonl", [{"prompt": p} for p in seed_prompts])
    crash_point("seed")
    write_jsonl_atomic(run.seed / "sft.jsonl", mixed)
    log(f"    {len(ift)} IFT + {len(eft)} EFT + {len(si)} self-instruct examples")


def build_tokenizer(cfg: LoopConfig, run: RunDir) -> None:
    """The configured tokenizer (or the checkpoint's), else a BPE trained on the seed data → tokenizer/."""
    source = cfg.model.tokenizer or cfg.model.checkpoint
    if source:
        tok = Tokenizer.from_dir(source)
    else:
        rows = read_jsonl(run.seed / "sft.jsonl")[0]
        texts = [t for r in rows for t in (r["prompt"], r["response"])]
        tok = Tokenizer.train_bpe(texts, vocab_size=cfg.model.vocab_size)
    tmp = run.tokenizer.with_name(".tokenizer.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save(tmp)
    crash_point("tokenizer")
    os.replace(tmp, run.tokenizer)
    log(f"    {tok.vocab_size} tokens, chat template {tok.template.name!r}")


def build_m0(cfg: LoopConfig, run: RunDir) -> None:
    """A random M0 of the preset's architecture with the run's vocabulary and context length → m0/."""
    tok = Tokenizer.from_dir(run.tokenizer)
    preset = get_preset(cfg.model.preset)
    tied = preset.tie_embeddings if cfg.model.tie_embeddings is None else cfg.model.tie_embeddings
    mcfg = dataclasses.replace(
        preset,
        tie_embeddings=tied,
        vocab_size=tok.vocab_size,
        max_seq_len=cfg.model.max_seq_len,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    model = build_model(mcfg, seed=cfg.seed)
    model.save_pretrained(run.model(0), tokenizer=tok)
    log(f"    {cfg.model.preset} architecture, {model.num_params():,} parameters")


# ---- training -------------------------------------------------------------------------------------------------

# Trainer settings of the embedded default (a tiny model trained from scratch). They apply only when the run
# starts from a random M0; from a real checkpoint the trainer's defaults are the paper's (SFT 5.5e-6 → 1.1e-6,
# DPO 1e-6 → 1e-7). Either way the config's `sft` and `dpo` tables override them key by key.
# SFT takes 2 packed rows a step (~1,240 steps over the default seed data) rather than 8 (~310): the same tokens
# and time, four times the updates. Only 12% of SFT tokens are targets, and 310 updates left M1 unable to copy a
# number from its prompt (0% on "larger"); 2 rows at lr 1e-3 raised M1's held-out accuracy from 32.5% to 42.9% on the
# same data (bench/results/self_rewarding_diagnostics-cpu.json, "sft_steps"). lr 3e-3 at 2 rows diverged to 25%.
# DPO carries the IRPO NLL term (+ NLL of the chosen answer). The default's answers are two or three tokens, and
# without it DPO grows the margin by pushing chosen and rejected down together (both fell in ~half the pairs,
# bench/results/likelihood_displacement-cpu.json); with it the self arm lost -8.5 [-9.8, -7.2] points M1 -> M4
# over three seeds rather than -15.4 [-16.9, -13.9] (bench/results/default_nll_vs_default_3seeds-cpu.json).
FROM_SCRATCH = {
    "sft": {
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 30, "weight_decay": 0.0},
        "schedule": {"micro_batch_size": 2, "epochs": 2.0},
        "logging": {"log_every": 25},
    },
    "dpo": {
        "optim": {"lr": 1e-4, "min_lr": 1e-5, "warmup_steps": 5},
        "schedule": {"micro_batch_size": 16, "epochs": 2.0},
        "dpo": {"nll_weight": 1.0},
        "logging": {"log_every": 10},
    },
}


def train_table(task: str, cfg: LoopConfig) -> dict[str, Any]:
    """The trainer settings of a stage: the from-scratch defaults (if any) under the config's own table."""
    table: dict[str, Any] = {}
    if cfg.model.checkpoint is None:
        table = merge(FROM_SCRATCH[task], {"data": {"max_seq_len": cfg.model.max_seq_len}})
    elif is_checkpoint_dir(cfg.model.checkpoint):
        # The trainer's default row length (1024) capped at the checkpoint's context: a 512-token model would
        # otherwise be refused at its first training stage, after the minutes of work before it.
        context = read_model_config(cfg.model.checkpoint).max_seq_len
        table = {"data": {"max_seq_len": min(DataSection().max_seq_len, context)}}
    return merge(table, cfg.sft if task == "sft" else cfg.dpo)


def train_model(task: str, cfg: LoopConfig, run: RunDir, init: Path, data: Path, out_k: int) -> None:
    """SFT or DPO of `init` on `data` → m<out_k>/ (collective: FSDP2 over every rank); resumes from its own
    checkpoints in train/m<out_k>/."""
    defaults: dict[str, Any] = {
        "task": task,
        "device": cfg.device,
        "model": {"init": str(init)},
        "data": {"train": str(data)},
        "checkpoint": {"run_dir": str(run.train_dir(out_k)), "final_dir": str(run.model(out_k))},
        "schedule": {"seed": cfg.seed},
    }
    if cfg.wandb.enabled:
        defaults["logging"] = {
            "wandb": True, "wandb_project": cfg.wandb.project, "wandb_mode": cfg.wandb.mode,
            "wandb_run_name": f"{cfg.name}-m{out_k}",
        }  # fmt: skip
    tc = from_dict(TrainConfig, merge(defaults, train_table(task, cfg)), where=task)
    if kill_requested(f"{task}-m{out_k}"):
        tc.checkpoint.kill_after_step = max(1, tc.checkpoint.save_every)
    train(tc)
    # The training state (weights, optimizer moments, RNG: about 4x the model) only resumes this stage, and the
    # stage is done: its model is m<out_k>/. Kept, it took 2.1 GB a stage for SmolLM2-135M and filled the disk
    # after a dozen runs. The trainer's config and metrics stay.
    if run.is_main:
        shutil.rmtree(run.train_dir(out_k) / CHECKPOINTS, ignore_errors=True)


def train_sft(cfg: LoopConfig, run: RunDir) -> None:
    """M0 → M1: SFT on the seed data."""
    train_model("sft", cfg, run, run.model(0), run.seed / "sft.jsonl", 1)


# ---- evaluation of every model ------------------------------------------------------------------------------


def evaluate(cfg: LoopConfig, run: RunDir, k: int, policy_factory: PolicyFactory) -> None:
    """Every evaluation the config lists for M_k → eval/m<k>.json."""
    policy = policy_factory(run.model(k))
    try:
        with progress(policy, f"evaluate M{k}"):
            result = evaluate_model(cfg, run, k, policy)
    finally:
        policy.close()
    crash_point(f"eval-m{k}")
    if run.is_main:
        write_json_atomic(run.eval / f"m{k}.json", result)


# ---- one iteration: M_t → M_{t+1} -------------------------------------------------------------------------------


@dataclass
class Iteration:
    """What the stages of iteration t share: the run, M_t as a policy (loaded by the first stage that needs it,
    closed before training) and the counts each stage adds to iter<t>/stats.json."""

    cfg: LoopConfig
    run: RunDir
    t: int
    policy_factory: PolicyFactory
    stats: dict[str, Any] = field(default_factory=dict)
    _policy: Any = field(default=None, repr=False)

    @classmethod
    def resume(cls, cfg: LoopConfig, run: RunDir, t: int, policy_factory: PolicyFactory) -> Iteration:
        """Iteration t with the counts its finished stages saved (as rank 0 reads them)."""
        path = run.iteration(t) / "stats.json"
        stats = run.agree((json.loads(path.read_text()) if path.exists() else {}) if run.is_main else None)
        return cls(cfg, run, t, policy_factory, stats)

    @property
    def dir(self) -> Path:
        return self.run.iteration(self.t)

    @property
    def seed(self) -> int:
        """The sampling seed of this iteration's generation stages."""
        return self.cfg.seed * 1000 + self.t

    @property
    def model(self) -> Path:
        """M_t: the policy and judge of this iteration, and DPO's initialisation and reference."""
        return self.run.model(self.t)

    @property
    def next_model(self) -> Path:
        return self.run.model(self.t + 1)

    def policy(self):
        if self._policy is None:
            self._policy = self.policy_factory(self.model)
        return self._policy

    def close_policy(self) -> None:
        """Free the sampler's cache and drop the model (before training)."""
        if self._policy is not None:
            self._policy.close()
            self._policy = None

    def save_stats(self, key: str, value: dict) -> None:
        self.stats[key] = value  # on every rank: they all computed `value`
        if self.run.is_main:
            write_json_atomic(self.dir / "stats.json", self.stats)


def self_instruct(it: Iteration) -> None:
    """New prompts from few-shot seed prompts, filtered and de-duplicated against earlier iterations' prompts
    and the held-out evaluation prompts → prompts.jsonl; with selfinstruct.source = "seed", unused seed prompts."""
    cfg, run, s = it.cfg, it.run, it.cfg.selfinstruct
    seed_prompts = [r["prompt"] for r in read_jsonl(run.seed / "seed_prompts.jsonl")[0]]
    earlier = [r["prompt"] for k in range(1, it.t) for r in read_jsonl(run.iteration(k) / "prompts.jsonl")[0]]
    if s.source == "seed":
        _seed_pool_prompts(it, seed_prompts, earlier)
        return
    fams = cfg.seed_data.families or None
    held_out = [task.prompt for task in tasks.eval_prompts(cfg.eval.n_task_prompts, cfg.seed, fams)]
    si_cfg = SI.SelfInstructConfig(
        n_seed=s.n_seed, n_generated=s.n_generated, temperature=s.temperature, top_p=s.top_p,
        max_new_tokens=s.max_new_tokens, min_words=s.min_words, max_words=s.max_words,
        dedup_threshold=s.dedup_threshold, batch_size=s.batch_size,
        shapes=PromptShapes(seed_prompts, s.shape_min_count) if s.shape_min_count else None,
    )  # fmt: skip
    generator = it.policy_factory(Path(s.generator)) if s.generator else it.policy()
    rows = None
    try:
        # Every rank runs the same rounds: each round's generation is collective and returns all prompts to all.
        with progress(generator, f"iter{it.t}: self-instruct"):
            if (
                cfg.retrieval.selfinstruct
            ):  # a question about each sampled passage, which is its gold evidence
                grounding = G.load_grounding(cfg, run)
                # The task world's held-out facts stay unasked: their questions are the evaluation's.
                skip = tasks.heldout_passage_ids() if cfg.seed_data.source == "tasks" else frozenset()
                passages = [p.text for p in grounding.retriever.passages if p.id not in skip]
                rows, si_stats = PI.generate_from_passages(
                    generator.generate, passages, s.n_prompts, si_cfg, cfg.retrieval.max_words, seed=it.seed,
                    pool=seed_prompts + earlier + held_out,
                )  # fmt: skip
                prompts = [r["prompt"] for r in rows]
            else:
                prompts, si_stats = SI.generate_prompts(
                    generator.generate,
                    seed_prompts,
                    s.n_prompts,
                    si_cfg,
                    seed=it.seed,
                    pool=earlier + held_out,
                )
    finally:
        if s.generator:  # a fixed generator; M_t stays loaded for the next stages
            generator.close()
    counts = {"generated": si_stats.generated, "kept": len(prompts), "removed": dict(si_stats.removed)}
    if cfg.seed_data.source == "tasks":
        counts["task_world_parseable"] = sum(tasks.parse_prompt(p) is not None for p in prompts)
    it.save_stats("prompts", counts)
    crash_point("prompts")
    if run.is_main:
        write_jsonl_atomic(
            it.dir / "prompts.jsonl", rows if rows is not None else [{"prompt": p} for p in prompts]
        )
    log(
        f"    kept {len(prompts)} of {si_stats.generated} generated prompts; removed {dict(si_stats.removed)}"
    )


def _seed_pool_prompts(it: Iteration, seed_prompts: list[str], earlier: list[str]) -> None:
    """selfinstruct.source = "seed": n_prompts seed prompts that no earlier iteration drew → prompts.jsonl."""
    used = set(earlier)
    pool = [p for p in seed_prompts if p not in used]
    prompts = random.Random(f"seed-pool:{it.seed}").sample(
        pool, min(it.cfg.selfinstruct.n_prompts, len(pool))
    )
    counts = {"source": "seed", "pool": len(pool), "kept": len(prompts)}
    if it.cfg.seed_data.source == "tasks":
        counts["task_world_parseable"] = sum(tasks.parse_prompt(p) is not None for p in prompts)
    it.save_stats("prompts", counts)
    crash_point("prompts")
    if it.run.is_main:
        write_jsonl_atomic(it.dir / "prompts.jsonl", [{"prompt": p} for p in prompts])
    log(f"    drew {len(prompts)} of {len(pool)} unused seed prompts (selfinstruct.source = 'seed')")


def sample_candidates(it: Iteration) -> None:
    """N sampled responses of M_t to every prompt → candidates.jsonl."""
    prompt_rows = read_jsonl(it.dir / "prompts.jsonl")[0]
    prompts = [r["prompt"] for r in prompt_rows]
    c, policy = it.cfg.candidates, it.policy()
    grounding = G.load_grounding(it.cfg, it.run) if it.cfg.retrieval.candidates else None
    # With retrieval.candidates the model answers the prompt with its evidence, and that prompt is the row's
    # "prompt" (what DPO trains on); "question" keeps the plain prompt for the judge and the checker. A prompt
    # written from a passage (retrieval.selfinstruct) has that passage as its gold evidence instead.
    shown = prompts
    if grounding is not None:
        order = random.Random(f"evidence-order:{it.seed}") if it.cfg.retrieval.shuffle_candidates else None
        shown = grounding.prompts(prompts, shuffle=order)
        shown = [
            with_evidence(r["prompt"], r["evidence"]) if "evidence" in r else x
            for r, x in zip(prompt_rows, shown)
        ]
    with progress(policy, f"iter{it.t}: candidates"):
        outs = policy.generate(
            shown,
            n=c.n,
            temperature=c.temperature,
            top_p=c.top_p,
            max_new_tokens=c.max_new_tokens,
            seed=it.seed,
        )
    if grounding is None:
        rows = [{"prompt": p, "responses": rs} for p, rs in zip(prompts, outs)]
    else:
        rows = [{"prompt": x, "question": p, "responses": rs} for x, p, rs in zip(shown, prompts, outs)]
    lengths = [len(r) for rs in outs for r in rs]
    counts = {
        "prompts": len(rows),
        "responses": len(lengths),
        "mean_chars": sum(lengths) / max(1, len(lengths)),
    }
    if it.cfg.seed_data.source == "tasks":
        counts["checker"] = checked_candidates(rows)
        c = counts["checker"]
        log(
            f"    checker: {c['tasks']} prompts are tasks; pass@1 {c['pass_at_1']}, pass@{c['n']} {c['pass_at_n']}"
        )
    it.save_stats("candidates", counts)
    crash_point("candidates")
    if it.run.is_main:
        write_jsonl_atomic(it.dir / "candidates.jsonl", rows)


def judge_candidates(it: Iteration) -> None:
    """M_t judges every candidate (the rubric, `judge.k` samples or the expected score; or a control arm's
    reward, `judge.reward`) → judgments.jsonl."""
    rows = read_jsonl(it.dir / "candidates.jsonl")[0]
    # The judge reads the plain question (a candidate's generation evidence is not the judge's).
    items = [(r.get("question", r["prompt"]), resp) for r in rows for resp in r["responses"]]
    sizes = [len(r["responses"]) for r in rows]
    policy, j = it.policy(), G.judge_spec(it.cfg)
    grounding = G.load_grounding(it.cfg, it.run) if it.cfg.retrieval.judge else None
    evidence = (
        grounding.judge_evidence(items, G.judge_order(it.cfg, it.seed)) if grounding is not None else None
    )

    def self_judge(xs):
        xs = list(xs) if evidence is None else [(*x, ev) for x, ev in zip(xs, evidence, strict=True)]
        return judge_items(policy, j, xs, it.seed)

    with progress(policy, f"iter{it.t}: judge"):
        # judge.reward: the self-judge (the recipe) or a control arm (recipe/rewards.py)
        results = R.candidate_results(j.reward, items, sizes, self_judge, it.seed)
    out, i = [], 0
    for r in rows:
        res = results[i : i + len(r["responses"])]
        row = {**r, "scores": [x.score for x in res], "judgments": [list(x.judgments) for x in res],
               "n_invalid": [x.n_invalid for x in res], "probs": [list(x.probs) for x in res]}  # fmt: skip
        if evidence is not None:
            row["judge_evidence"] = evidence[i : i + len(r["responses"])]
        i += len(r["responses"])
        out.append(row)
    n_invalid = sum(x.n_invalid for x in results)
    n_valid = sum(x.n_valid for x in results)
    it.save_stats("judge", {"candidates": len(results), "judgments_valid": n_valid, "judgments_invalid": n_invalid,
                            "unscored_candidates": sum(x.score is None for x in results)})  # fmt: skip
    crash_point("judge")
    if it.run.is_main:
        write_jsonl_atomic(it.dir / "judgments.jsonl", out)
    log(f"    {len(results)} candidates judged, {n_invalid} invalid judgments")


def meta_judge(it: Iteration) -> None:
    """Meta-Rewarding (`judge.meta`): M_t meta-judges its own likely alternative judgments of the candidates, and
    the best vs worst judgment of each becomes a pair for the judge → judge_pairs.jsonl (select_pairs adds them
    to the actor's pairs, so DPO trains the judge too)."""
    rows = read_jsonl(it.dir / "judgments.jsonl")[0]
    items, results, evidence = [], [], []
    for r in rows:
        probs = r.get("probs") or [[] for _ in r["responses"]]
        # The judge read the plain question and, when grounded, its own evidence (judge_candidates).
        question = r.get("question", r["prompt"])
        for resp, score, dist in zip(r["responses"], r["scores"], probs):
            items.append((question, resp))
            results.append(
                J.JudgeResult(score, int(score is not None), int(score is None), (), (), tuple(dist))
            )
        evidence += r.get("judge_evidence", [None] * len(r["responses"]))
    policy, j = it.policy(), G.judge_spec(it.cfg)
    template = J.JudgeTemplate.from_spec(j.template)
    evidence = evidence if template.is_grounded else None
    meta_spec = dataclasses.replace(j, template=J.JudgeTemplate.meta_for(template).name)
    with progress(policy, f"iter{it.t}: meta-judge"):
        pairs, counts = R.meta_judge(
            items, results, lambda xs: judge_items(policy, meta_spec, list(xs), it.seed + 1),
            template, most=j.meta_candidates, min_prob=j.meta_min_prob, seed=it.seed,
            evidence=evidence,
        )  # fmt: skip
    if it.cfg.seed_data.source == "tasks":
        counts["checker"] = checked_judge_pairs(pairs, items, template, evidence)
    it.save_stats("meta", counts)
    crash_point("meta")
    if it.run.is_main:
        write_jsonl_atomic(it.dir / "judge_pairs.jsonl", [x.to_dict() for x in pairs])
    log(
        f"    {counts['meta_judged']} candidates' judgments meta-judged ({counts['judgments']} judgments): "
        f"{counts['pairs']} judge pairs"
    )


def select_pairs(it: Iteration) -> None:
    """Highest- vs lowest-scored candidate of every prompt (ties, margins, length control) → pairs.jsonl.
    Rank 0 only: cheap, and its counts go to rank 0's stats file."""
    rows = read_jsonl(it.dir / "judgments.jsonl")[0]
    items = [P.PromptCandidates(r["prompt"], r["responses"], r["scores"]) for r in rows]
    p = it.cfg.pairs
    pairs, pstats = P.make_pairs(
        items,
        P.PairConfig(p.min_margin, p.tier, p.length_control, p.min_votes, p.min_chosen, p.reject_verdicts),
    )
    counts = pstats.to_dict()
    if it.cfg.seed_data.source == "tasks":
        counts["checker"] = checked_pairs(pairs)
    rows_out = [x.to_dict() for x in pairs]
    if it.cfg.judge.meta:  # the judge's own pairs (meta_judge) train beside the actor's
        judge_rows = read_jsonl(it.dir / "judge_pairs.jsonl")[0]
        counts["judge_pairs"] = len(judge_rows)
        rows_out += judge_rows
    if p.replay:  # seed examples as NLL-only rows (see PairSpec.replay)
        seed_rows = read_jsonl(it.run.seed / f"{p.replay_source}.jsonl", required=("prompt", "response"))[0]
        picked = random.Random(f"replay:{it.seed}").sample(seed_rows, min(p.replay, len(seed_rows)))
        rows_out += [{"prompt": r["prompt"], "chosen": r["response"], "rejected": r["response"], "replay": True}
                     for r in picked]  # fmt: skip
        counts["replay"] = len(picked)
    if it.cfg.judge.meta or p.replay:
        random.Random(f"pairs-mix:{it.seed}").shuffle(rows_out)
    it.save_stats("pairs", counts)
    crash_point("pairs")
    write_jsonl_atomic(it.dir / "pairs.jsonl", rows_out)
    log(f"    {pstats.pairs} pairs from {pstats.prompts} prompts; dropped {dict(pstats.dropped)}")
    if p.reject_verdicts:
        log(f"    {pstats.verdicts} candidates were judge verdicts, scored {J.MIN_SCORE}")
    if "checker" in counts:
        c = counts["checker"]
        log(
            f"    checker: {c['right']} pairs prefer the correct answer, {c['wrong']} the wrong one; "
            f"{c['both_wrong']} both wrong, {c['both_correct']} both correct, {c['unparseable']} not a task"
        )


def _has_rows(it: Iteration, name: str) -> bool:
    """Whether the iteration's JSONL file `name` has a row, as rank 0 reads it."""
    return it.run.agree(bool(read_jsonl(it.dir / name)[0]) if it.run.is_main else None)


def reference_settings(cfg: LoopConfig) -> dict[str, Any]:
    """How the DPO stage tokenises and scores pairs (length limit, overlong rule, chat template, dtype): the
    keyword arguments of `compute_reference_logprobs` that must match the trainer's."""
    table = train_table("dpo", cfg)
    data = table.get("data", {})
    return {
        "max_seq_len": data.get("max_seq_len", DataSection.max_seq_len),
        "overlong": data.get("overlong", DataSection.overlong),
        "template": data.get("template", DataSection.template),
        "param_dtype": table.get("model", {}).get("param_dtype", "auto"),
    }


def reference_logprobs(it: Iteration) -> None:
    """M_t's log-probs of every pair's chosen and rejected response, computed once for DPO → pairs.ref.jsonl."""
    if not _has_rows(it, "pairs.jsonl"):
        if it.run.is_main:
            write_jsonl_atomic(it.dir / "pairs.ref.jsonl", [])
        return
    crash_point("reference")
    # Collective: each rank scores its share of the pairs on the FSDP-sharded model, rank 0 writes the file. The
    # trainer's tokenisation must be the one the reference log-probs were computed with: their provenance record
    # is checked against it.
    compute_reference_logprobs(
        it.model, it.dir / "pairs.jsonl", it.dir / "pairs.ref.jsonl", **reference_settings(it.cfg),
        device=it.cfg.device,
    )  # fmt: skip


def train_dpo(it: Iteration) -> None:
    """M_t → M_{t+1}: DPO on the pairs (M_{t+1} = M_t when there are none)."""
    if not _has_rows(it, "pairs.ref.jsonl"):
        if it.run.is_main:
            log(f"    no pairs: M{it.t + 1} = M{it.t}")
            copy_checkpoint(it.model, it.next_model)
        return
    train_model("dpo", it.cfg, it.run, it.model, it.dir / "pairs.ref.jsonl", it.t + 1)
