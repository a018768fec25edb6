"""The self-rewarding loop (`srlm run`): SFT → M1, then for t = 1..T:
self-instruct → N candidates → judge → pairs → reference log-probs → DPO → M_{t+1}, with an evaluation of every
model.

One run is one directory (DESIGN.md §3). Every stage reads the previous stage's files and writes its own
artifact atomically, so a run killed at any moment resumes at the first missing artifact and never repeats or
loses finished work. Training stages resume from their own checkpoints. Every stage is deterministic given its
inputs and the run's seed, so a resumed run ends with the same artifacts as an uninterrupted one.

    runs/<name>/config.toml                   the resolved config (a resumed run must match it)
    runs/<name>/seed/sft.jsonl, ift.jsonl, eft.jsonl, seed_prompts.jsonl
    runs/<name>/tokenizer/tokenizer.json
    runs/<name>/m0/ (random init) m1/ (SFT) m2/ ... (DPO)                       HF checkpoints
    runs/<name>/iter<t>/prompts.jsonl candidates.jsonl judgments.jsonl pairs.jsonl pairs.ref.jsonl
    runs/<name>/iter<t>/stats.json            counts of every stage of the iteration
    runs/<name>/eval/m<k>.json                evaluation of every model
    runs/<name>/report.md, report.json

Under `torchrun` every rank runs this same loop (see `run_loop`): generation stages split their requests over the
ranks (full replicas, or an FSDP-sharded model in lockstep), training runs FSDP2, and rank 0 alone writes files.
Whether a stage is done is decided on rank 0 and broadcast, and a barrier after every stage makes its artifact
visible to all ranks before the next stage reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from srlm_fast import distributed as D
from srlm_fast.config import ConfigError, from_dict, merge, to_dict, to_toml
from srlm_fast.io import read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from srlm_fast.recipe import judge as J
from srlm_fast.recipe import pairs as P
from srlm_fast.recipe import selfinstruct as SI
from srlm_fast.recipe import tasks
from srlm_fast.recipe.config import LoopConfig

# Tests set this to a stage name: the process SIGKILLs itself after that stage's work, before its artifact is
# committed — the worst moment for a crash.
KILL_ENV = "SRLM_TEST_KILL_IN_STAGE"


class RunDir:
    """Paths of one run, and where this process sits in the job (rank 0 alone writes the run's files)."""

    def __init__(self, cfg: LoopConfig, info: D.DistInfo | None = None) -> None:
        self.info = info or D.DistInfo()
        self.root = Path(cfg.runs_dir) / cfg.name
        self.config = self.root / "config.toml"
        self.seed = self.root / "seed"
        self.tokenizer = self.root / "tokenizer"
        self.eval = self.root / "eval"

    def model(self, k: int) -> Path:
        return self.root / f"m{k}"

    def iteration(self, t: int) -> Path:
        return self.root / f"iter{t}"

    def train_dir(self, k: int) -> Path:
        return self.root / "train" / f"m{k}"

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def barrier(self) -> None:
        D.barrier(self.info)

    def agree(self, value):
        """Rank 0's `value` on every rank: decisions that read the filesystem must not diverge between ranks."""
        return D.broadcast_object(value, self.info)

    def exists(self, path: Path) -> bool:
        """Whether `path` exists, as rank 0 sees it."""
        return self.agree(path.exists() if self.is_main else None)


def log(msg: str) -> None:
    # Every rank runs the loop; one copy of its story is enough.
    grouped = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not grouped or torch.distributed.get_rank() == 0:
        print(msg, flush=True)


def stage(run: RunDir, name: str, artifact: Path, compute: Callable[[], None]) -> bool:
    """Run `compute` (on every rank) unless `artifact` exists; `compute` must create `artifact` atomically, last
    (on rank 0). Returns whether it ran."""
    if run.exists(artifact):
        log(f"  ✓ {name:<28} (done: {artifact.name})")
        return False
    log(f"  ▶ {name}")
    t0 = time.perf_counter()
    compute()
    run.barrier()  # rank 0 has committed the artifact before any rank reads it in the next stage
    if not run.exists(artifact):
        raise RuntimeError(f"stage {name} finished without writing {artifact}")
    log(f"    {name} took {time.perf_counter() - t0:.1f}s")
    return True


def on_main(run: RunDir, fn: Callable[[], None]) -> Callable[[], None]:
    """`fn` as a stage computation that only rank 0 runs (cheap CPU work that writes files)."""

    def compute() -> None:
        if run.is_main:
            fn()

    return compute


def crash_point(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:
        log(f"    [test] killing the process inside stage {name}")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# ---- config of a run ------------------------------------------------------------------------------------


def save_or_check_config(cfg: LoopConfig, run: RunDir) -> None:
    """Save the resolved config; a resumed run must have the same one (else its artifacts would mix)."""
    status = _save_or_check_config(cfg, run) if run.is_main else None
    status = run.agree(status)
    if status.startswith("error:"):
        raise ConfigError(status.removeprefix("error:"))
    log(f"{status} run {run.root}")
    run.barrier()
    # Every rank reads the artifacts rank 0 writes: they must share the run directory's filesystem.
    blind = [r for r, seen in enumerate(D.all_gather_objects(run.config.is_file(), run.info)) if not seen]
    if blind:
        raise ConfigError(
            f"runs_dir: rank(s) {blind} cannot see {run.config}, written by rank 0; under torchrun on several "
            "nodes runs_dir must be on a filesystem every node shares"
        )


def _save_or_check_config(cfg: LoopConfig, run: RunDir) -> str:
    text = to_toml(cfg)
    if run.config.exists():
        saved = run.config.read_text()
        if saved == text:
            return "resuming"
        # A run saved by an older version lacks the keys added since; with their defaults filled in (defaults
        # of new keys keep the old behaviour) it may still be the same config.
        try:
            before = to_dict(from_dict(LoopConfig, tomllib.loads(saved)))
        except (tomllib.TOMLDecodeError, ConfigError) as e:
            return f"error:{run.config}: cannot read the saved config of this run ({e})"
        changed = _changed_keys(before, to_dict(cfg))
        if changed:
            return (
                f"error:{run.config}: this run was started with a different config (differs in "
                f"{', '.join(changed[:6])}{', …' if len(changed) > 6 else ''}); resume it with the same options "
                f"(`srlm run --config {run.config}`) or choose another --name"
            )
        write_text_atomic(run.config, text)  # the same config, now spelled out with every key of this version
        return "resuming"
    run.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config, text)
    return "new"


def _changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _changed_keys(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(prefix + key)
    return out


# ---- seed data and tokenizer ------------------------------------------------------------------------------


def build_seed_data(cfg: LoopConfig, run: RunDir) -> None:
    """IFT + EFT + self-instruct-format examples → seed/sft.jsonl (shuffled), plus the seed prompt pool."""
    s, seed = cfg.seed_data, cfg.seed
    template = J.JudgeTemplate.from_spec(cfg.judge.template)
    if s.source == "tasks":
        ift = [{"prompt": e.prompt, "response": e.response} for e in tasks.ift_examples(s.n_ift, seed)]
        eft = [
            {"prompt": e.prompt, "response": e.response} for e in tasks.eft_examples(s.n_eft, seed, template)
        ]
        seed_prompts = tasks.train_prompts(s.n_seed_prompts, seed)
    else:
        from srlm_fast.recipe.seed_data import load_ift

        if not s.ift_files:
            raise ConfigError(
                "seed_data.ift_files: at least one file is needed when seed_data.source = 'files'"
            )
        ift = [{"prompt": e.prompt, "response": e.response} for e in load_ift(s.ift_files)[0]]
        eft = []
        for path in s.eft_files:
            eft += read_jsonl(path, required=("prompt", "response"))[0]
        seed_prompts = [r["prompt"] for r in ift[: s.n_seed_prompts]]
    si = [{"prompt": p, "response": r} for p, r in SI.sft_examples(seed_prompts, s.n_selfinstruct, seed)]
    mixed = ift + eft + si
    random.Random(f"sft-mix:{seed}").shuffle(mixed)
    write_jsonl_atomic(run.seed / "ift.jsonl", ift)
    write_jsonl_atomic(run.seed / "eft.jsonl", eft)
    write_jsonl_atomic(run.seed / "seed_prompts.jsonl", [{"prompt": p} for p in seed_prompts])
    crash_point("seed")
    write_jsonl_atomic(run.seed / "sft.jsonl", mixed)
    log(f"    {len(ift)} IFT + {len(eft)} EFT + {len(si)} self-instruct examples")


def build_tokenizer(cfg: LoopConfig, run: RunDir) -> None:
    from srlm_fast.model.tokenizer import Tokenizer

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
    """A random M0 of the preset's architecture with the run's vocabulary and context length."""
    import dataclasses

    from srlm_fast.model.config import get_preset
    from srlm_fast.model.llama import build_model
    from srlm_fast.model.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(run.tokenizer)
    base = get_preset(cfg.model.preset)
    mcfg = dataclasses.replace(
        base,
        vocab_size=tok.vocab_size,
        max_seq_len=cfg.model.max_seq_len,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    model = build_model(mcfg, seed=cfg.seed)
    model.save_pretrained(run.model(0), tokenizer=tok)
    log(f"    {cfg.model.preset} architecture, {model.num_params():,} parameters")


# ---- training ---------------------------------------------------------------------------------------------

# Trainer settings of the embedded default (a tiny model trained from scratch on CPU). They apply only when the
# run starts from a random M0; from a real checkpoint the trainer's defaults are the paper's (SFT 5.5e-6 → 1.1e-6,
# DPO 1e-6 → 1e-7). Either way the config's `sft` and `dpo` tables override them key by key.
FROM_SCRATCH = {
    "sft": {
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 30, "weight_decay": 0.0},
        "schedule": {"micro_batch_size": 8, "epochs": 2.0},
        "logging": {"log_every": 25},
    },
    "dpo": {
        "optim": {"lr": 1e-4, "min_lr": 1e-5, "warmup_steps": 5},
        "schedule": {"micro_batch_size": 16, "epochs": 2.0},
        "logging": {"log_every": 10},
    },
}


def train_table(task: str, cfg: LoopConfig) -> dict[str, Any]:
    """The trainer settings of a stage: the from-scratch defaults (if any) under the config's own table."""
    table: dict[str, Any] = {}
    if cfg.model.checkpoint is None:
        table = merge(FROM_SCRATCH[task], {"data": {"max_seq_len": cfg.model.max_seq_len}})
    return merge(table, cfg.sft if task == "sft" else cfg.dpo)


def _train(task: str, cfg: LoopConfig, run: RunDir, init: Path, data: Path, out_k: int) -> None:
    from srlm_fast.train.config import TrainConfig
    from srlm_fast.train.trainer import train

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
    if os.environ.get(KILL_ENV) == f"{task}-m{out_k}":
        tc.checkpoint.kill_after_step = max(1, tc.checkpoint.save_every)
    train(tc)


# ---- one iteration -----------------------------------------------------------------------------------------


def run_iteration(cfg: LoopConfig, run: RunDir, t: int, policy_factory) -> None:
    it = run.iteration(t)
    stats_path = it / "stats.json"
    stats: dict[str, Any] = run.agree(
        (json.loads(stats_path.read_text()) if stats_path.exists() else {}) if run.is_main else None
    )

    def save_stats(key: str, value: dict) -> None:
        stats[key] = value  # on every rank: they all computed `value`
        if run.is_main:
            write_json_atomic(stats_path, stats)

    seed = cfg.seed * 1000 + t
    policy = None

    def get_policy():
        nonlocal policy
        if policy is None:
            policy = policy_factory(run.model(t))
        return policy

    def prompts_stage() -> None:
        seed_prompts = [r["prompt"] for r in read_jsonl(run.seed / "seed_prompts.jsonl")[0]]
        earlier = [
            r["prompt"] for k in range(1, t) for r in read_jsonl(run.iteration(k) / "prompts.jsonl")[0]
        ]
        held_out = [task.prompt for task in tasks.eval_prompts(cfg.eval.n_task_prompts, cfg.seed)]
        s = cfg.selfinstruct
        si_cfg = SI.SelfInstructConfig(
            n_seed=s.n_seed, n_generated=s.n_generated, temperature=s.temperature, top_p=s.top_p,
            max_new_tokens=s.max_new_tokens, min_words=s.min_words, max_words=s.max_words,
            dedup_threshold=s.dedup_threshold, batch_size=s.batch_size,
        )  # fmt: skip
        generator = policy_factory(Path(s.generator)) if s.generator else get_policy()
        # Every rank runs the same rounds: each round's generation is collective and returns all prompts to all.
        with _progress(generator, f"iter{t}: self-instruct"):
            prompts, si_stats = SI.generate_prompts(
                generator.generate, seed_prompts, s.n_prompts, si_cfg, seed=seed, pool=earlier + held_out
            )
        if generator is not policy:
            generator.close()
        counts = {"generated": si_stats.generated, "kept": len(prompts), "removed": dict(si_stats.removed)}
        if cfg.seed_data.source == "tasks":
            parsed = sum(tasks.parse_prompt(p) is not None for p in prompts)
            counts["task_world_parseable"] = parsed
        save_stats("prompts", counts)
        crash_point("prompts")
        if run.is_main:
            write_jsonl_atomic(it / "prompts.jsonl", [{"prompt": p} for p in prompts])
        log(
            f"    kept {len(prompts)} of {si_stats.generated} generated prompts; removed {dict(si_stats.removed)}"
        )

    def candidates_stage() -> None:
        prompts = [r["prompt"] for r in read_jsonl(it / "prompts.jsonl")[0]]
        c = cfg.candidates
        with _progress(get_policy(), f"iter{t}: candidates"):
            outs = get_policy().generate(
                prompts,
                n=c.n,
                temperature=c.temperature,
                top_p=c.top_p,
                max_new_tokens=c.max_new_tokens,
                seed=seed,
            )
        rows = [{"prompt": p, "responses": rs} for p, rs in zip(prompts, outs)]
        lengths = [len(r) for rs in outs for r in rs]
        save_stats("candidates", {"prompts": len(rows), "responses": len(lengths),
                                  "mean_chars": sum(lengths) / max(1, len(lengths))})  # fmt: skip
        crash_point("candidates")
        if run.is_main:
            write_jsonl_atomic(it / "candidates.jsonl", rows)

    def judge_stage() -> None:
        rows = read_jsonl(it / "candidates.jsonl")[0]
        items = [(r["prompt"], resp) for r in rows for resp in r["responses"]]
        with _progress(get_policy(), f"iter{t}: judge"):
            results = judge_items(cfg, get_policy(), items, seed)
        out, i = [], 0
        for r in rows:
            res = results[i : i + len(r["responses"])]
            i += len(r["responses"])
            out.append({**r, "scores": [x.score for x in res], "judgments": [list(x.judgments) for x in res],
                        "n_invalid": [x.n_invalid for x in res]})  # fmt: skip
        n_invalid = sum(x.n_invalid for x in results)
        n_valid = sum(x.n_valid for x in results)
        save_stats("judge", {"candidates": len(results), "judgments_valid": n_valid, "judgments_invalid": n_invalid,
                             "unscored_candidates": sum(x.score is None for x in results)})  # fmt: skip
        crash_point("judge")
        if run.is_main:
            write_jsonl_atomic(it / "judgments.jsonl", out)
        log(f"    {len(results)} candidates judged, {n_invalid} invalid judgments")

    def pairs_stage() -> None:  # rank 0 only: cheap, and its stats go to rank 0's file
        rows = read_jsonl(it / "judgments.jsonl")[0]
        items = [P.PromptCandidates(r["prompt"], r["responses"], r["scores"]) for r in rows]
        p = cfg.pairs
        pairs, pstats = P.make_pairs(items, P.PairConfig(p.min_margin, p.tier, p.length_control))
        counts = pstats.to_dict()
        if cfg.seed_data.source == "tasks":
            counts["checker"] = checked_pairs(pairs)
        save_stats("pairs", counts)
        crash_point("pairs")
        write_jsonl_atomic(it / "pairs.jsonl", [x.to_dict() for x in pairs])
        log(f"    {pstats.pairs} pairs from {pstats.prompts} prompts; dropped {dict(pstats.dropped)}")
        if "checker" in counts:
            c = counts["checker"]
            log(
                f"    checker: {c['right']} pairs prefer the correct answer, {c['wrong']} the wrong one; "
                f"{c['both_wrong']} both wrong, {c['both_correct']} both correct, {c['unparseable']} not a task"
            )

    def reference_stage() -> None:
        from srlm_fast.train.config import DataSection
        from srlm_fast.train.reference import compute_reference_logprobs

        # The trainer's sequence limit must equal the one the reference log-probs were computed with.
        max_len = train_table("dpo", cfg).get("data", {}).get("max_seq_len", DataSection.max_seq_len)
        if not run.agree(bool(read_jsonl(it / "pairs.jsonl")[0]) if run.is_main else None):
            if run.is_main:
                write_jsonl_atomic(it / "pairs.ref.jsonl", [])
            return
        crash_point("reference")
        # Collective: each rank scores its share of the pairs on the FSDP-sharded model, rank 0 writes the file.
        compute_reference_logprobs(
            run.model(t), it / "pairs.jsonl", it / "pairs.ref.jsonl", max_seq_len=max_len, device=cfg.device
        )

    def copy_model() -> None:
        log(f"    no pairs: M{t + 1} = M{t}")
        _copy_checkpoint(run.model(t), run.model(t + 1))

    def dpo_stage() -> None:
        if not run.agree(bool(read_jsonl(it / "pairs.ref.jsonl")[0]) if run.is_main else None):
            on_main(run, copy_model)()
            return
        _train("dpo", cfg, run, run.model(t), it / "pairs.ref.jsonl", t + 1)

    log(f"\n== iteration {t}: M{t} → M{t + 1} ==")
    stage(run, f"iter{t}: self-instruct", it / "prompts.jsonl", prompts_stage)
    stage(run, f"iter{t}: candidates", it / "candidates.jsonl", candidates_stage)
    stage(run, f"iter{t}: judge", it / "judgments.jsonl", judge_stage)
    stage(run, f"iter{t}: pairs", it / "pairs.jsonl", on_main(run, pairs_stage))
    if policy is not None:
        policy.close()  # free the sampler's cache, and drop the model, before training
        policy = None
    stage(run, f"iter{t}: reference log-probs", it / "pairs.ref.jsonl", reference_stage)
    stage(run, f"iter{t}: DPO → M{t + 1}", run.model(t + 1), dpo_stage)


def _progress(policy, desc: str):
    """The policy's progress scope (a bar or periodic lines on rank 0); nothing for a policy without one."""
    return policy.progress(desc) if hasattr(policy, "progress") else contextlib.nullcontext()


def checked_pairs(pairs: list[P.Pair]) -> dict[str, int]:
    """The task world's checker on the preference pairs: what the judge's preferences can teach DPO about
    correctness. `right`: chosen correct, rejected wrong; `wrong`: the reverse; `both_correct`/`both_wrong`: no
    correctness signal (style or length only); `unparseable`: the self-instructed prompt is no task it knows."""
    counts = dict.fromkeys(("right", "wrong", "both_correct", "both_wrong", "unparseable"), 0)
    for pair in pairs:
        chosen, rejected = tasks.check(pair.prompt, pair.chosen), tasks.check(pair.prompt, pair.rejected)
        if not chosen.parsed:
            counts["unparseable"] += 1
        elif chosen.correct != rejected.correct:
            counts["right" if chosen.correct else "wrong"] += 1
        else:
            counts["both_correct" if chosen.correct else "both_wrong"] += 1
    return counts


def judge_items(cfg: LoopConfig, policy, items: list[tuple[str, str]], seed: int) -> list[J.JudgeResult]:
    j = cfg.judge
    jcfg = J.JudgeConfig(
        mode=j.mode, k=j.k, temperature=j.temperature, top_p=j.top_p, max_new_tokens=j.max_new_tokens
    )
    return policy.judge(items, J.JudgeTemplate.from_spec(j.template), jcfg, seed=seed)


# ---- evaluation of every model ------------------------------------------------------------------------------


def evaluate_model(cfg: LoopConfig, run: RunDir, k: int, policy) -> dict:
    """Every evaluation the config lists for M_k, as one JSON-able dict."""
    e = cfg.eval
    result: dict[str, Any] = {"model": f"M{k}"}
    if e.task_world:
        result.update(evaluate_task_world(cfg, policy))
    score_fn = lambda items: [r.score for r in judge_items(cfg, policy, list(items), seed=cfg.seed)]
    limit = e.limit or None
    if e.rankings or e.pairs:
        from srlm_fast.eval.judge_agreement import (
            evaluate_judge_on_pairs,
            evaluate_judge_on_rankings,
            read_hh_pairs,
            read_oasst_trees,
        )

        perfect = 4.5 if cfg.judge.mode == "expected" else 5.0  # the expected score is continuous
        if e.rankings:
            m = evaluate_judge_on_rankings(read_oasst_trees(e.rankings)[:limit], score_fn, perfect=perfect)
            result["human_rankings"] = m.to_dict()
            result["judge_pairwise_humans"] = result["human_rankings"]["pairwise_accuracy"]
        if e.pairs:
            result["human_pairs"] = evaluate_judge_on_pairs(
                read_hh_pairs(e.pairs).pairs[:limit], score_fn
            ).to_dict()
    if e.prompts:
        result.update(_versus_previous(cfg, run, k, policy, score_fn))
    return result


def _versus_previous(cfg: LoopConfig, run: RunDir, k: int, policy, score_fn) -> dict:
    """M_k's answers to the prompt file, and M_k against M_{k-1} judged by M_k (the newer model) in both orders."""
    from srlm_fast.eval.judge_agreement import head_to_head, pointwise_verdict_fn, read_eval_prompts

    e = cfg.eval
    prompts = [p.instruction for p in read_eval_prompts(e.prompts)[: e.limit or None]]
    answers = [o[0] for o in policy.generate(prompts, n=1, temperature=0.0, top_p=1.0,
                                             max_new_tokens=e.max_new_tokens, seed=cfg.seed)]  # fmt: skip
    if run.is_main:
        write_jsonl_atomic(
            run.eval / f"m{k}.answers.jsonl", [{"prompt": p, "answer": a} for p, a in zip(prompts, answers)]
        )
    out: dict[str, Any] = {"mean_answer_chars": sum(map(len, answers)) / max(1, len(answers))}
    previous = run.eval / f"m{k - 1}.answers.jsonl"
    if k > 1 and run.exists(previous):
        before = run.agree([r["answer"] for r in read_jsonl(previous)[0]] if run.is_main else None)
        h2h = head_to_head(prompts, before, answers, pointwise_verdict_fn(score_fn), seed=cfg.seed).to_dict()
        out["vs_previous"] = h2h
        # head_to_head reports A's (the previous model's) rates; the newer model's win rate is the complement.
        out["win_rate_vs_previous"] = 1.0 - h2h["win_rate"]["value"] if h2h["n_valid"] else None
    return out


def evaluate_task_world(cfg: LoopConfig, policy) -> dict:
    """Checker accuracy of the model's greedy answers to held-out tasks, and its judge against the checker."""
    from srlm_fast.eval.task_world import task_world_metrics

    e = cfg.eval
    held_out = tasks.eval_prompts(e.n_task_prompts, cfg.seed)
    prompts = [t.prompt for t in held_out]
    answers = [o[0] for o in policy.generate(prompts, n=1, temperature=0.0, top_p=1.0,
                                             max_new_tokens=e.max_new_tokens, seed=cfg.seed)]  # fmt: skip
    own = judge_items(cfg, policy, list(zip(prompts, answers)), seed=cfg.seed)
    # Candidates of known quality for held-out tasks: 3 per prompt, so the judge's ranking can be scored too.
    rng = random.Random(f"eval-judge:{cfg.seed}")
    known = []
    for task in held_out[: max(1, e.n_judge_items // 3)]:
        for quality in rng.sample(tasks.QUALITIES, 3):
            known.append((task.prompt, tasks.candidate(task, quality, rng)))
    known_scores = judge_items(cfg, policy, known, seed=cfg.seed + 1)
    own_m = task_world_metrics(prompts, answers, [r.score for r in own]).to_dict()
    known_m = task_world_metrics(
        [p for p, _ in known], [c for _, c in known], [r.score for r in known_scores]
    )
    known_m = known_m.to_dict()
    return {
        "task_accuracy": own_m["accuracy"],
        "judge_agreement_own": own_m["judge_checker_agreement"],
        "judge_agreement_known": known_m["judge_checker_agreement"],
        "judge_pairwise_known": known_m["judge_pairwise_accuracy"],
        "invalid_judgments": own_m["n_invalid_scores"] + known_m["n_invalid_scores"],
        "mean_response_chars": sum(map(len, answers)) / max(1, len(answers)),
        "by_family": own_m["by_family"],
        "examples": [{"prompt": p, "answer": a} for p, a in list(zip(prompts, answers))[:5]],
    }


def eval_stage(cfg: LoopConfig, run: RunDir, k: int, policy_factory) -> None:
    def compute() -> None:
        policy = policy_factory(run.model(k))
        try:
            with _progress(policy, f"evaluate M{k}"):
                result = evaluate_model(cfg, run, k, policy)
        finally:
            policy.close()
        crash_point(f"eval-m{k}")
        if run.is_main:
            write_json_atomic(run.eval / f"m{k}.json", result)

    stage(run, f"evaluate M{k}", run.eval / f"m{k}.json", compute)


# ---- the run --------------------------------------------------------------------------------------------------

COLUMNS = (
    ("model", "model", "{}"),
    ("task acc", "task_accuracy", "{:.1%}"),
    ("judge=checker", "judge_agreement_own", "{:.1%}"),
    ("judge pairwise", "judge_pairwise_known", "{:.1%}"),
    ("prompts", "prompts", "{}"),
    ("pairs", "pairs", "{}"),
    # Task world: how many pairs prefer the correct answer : the wrong one, by the checker.
    ("pairs ✓:✗", "pairs_checked", "{}"),
    ("resp chars", "mean_response_chars", "{:.1f}"),
    # Shown only when the config asks for these evaluations:
    ("judge~humans", "judge_pairwise_humans", "{:.1%}"),
    ("win vs prev", "win_rate_vs_previous", "{:.1%}"),
)


def summary_rows(cfg: LoopConfig, run: RunDir) -> list[dict]:
    """One row per evaluated model, with the counts of the iteration that produced it."""
    rows = []
    for k in range(1, cfg.iterations + 2):
        path = run.eval / f"m{k}.json"
        if not path.exists():
            break
        row = json.loads(path.read_text())
        stats_path = run.iteration(k - 1) / "stats.json"
        if k > 1 and stats_path.exists():
            stats = json.loads(stats_path.read_text())
            row["prompts"] = stats.get("prompts", {}).get("kept")
            row["pairs"] = stats.get("pairs", {}).get("pairs")
            row["judgments_invalid"] = stats.get("judge", {}).get("judgments_invalid")
            row["ties_dropped"] = stats.get("pairs", {}).get("dropped", {}).get("tie")
            checker = stats.get("pairs", {}).get("checker")
            if checker:
                row["pairs_right"], row["pairs_wrong"] = checker["right"], checker["wrong"]
                row["pairs_checked"] = f"{checker['right']}:{checker['wrong']}"
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    optional = {"judge_pairwise_humans", "win_rate_vs_previous", "pairs_checked"}
    columns = [c for c in COLUMNS if c[1] not in optional or any(c[1] in r for r in rows)]
    header = " | ".join(f"{name:>14}" for name, _, _ in columns)
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = []
        for _, key, fmt in columns:
            v = r.get(key)
            cells.append(f"{'-' if v is None else fmt.format(v):>14}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def write_run_report(cfg: LoopConfig, run: RunDir, wall_s: float | None) -> None:
    from srlm_fast.eval.report import write_report

    rows = summary_rows(cfg, run)
    metrics = []
    for i, r in enumerate(rows):
        m = {k: v for k, v in r.items() if k not in ("examples", "model")}
        m["iteration"] = r["model"]
        # Histograms per judge: M_k judged the candidates of iteration k (the last model judges none).
        scores_path = run.iteration(i + 1) / "judgments.jsonl"
        if scores_path.exists():
            jrows = read_jsonl(scores_path)[0]
            m["scores"] = [s for jr in jrows for s in jr["scores"] if s is not None]
            m["lengths"] = [len(x) for jr in jrows for x in jr["responses"]]
        metrics.append(m)
    title = f"srlm run `{cfg.name}`" + (f" ({wall_s / 60:.1f} min)" if wall_s else "")
    write_report(metrics, run.root, title=title)


# Collectives wait at most this long (a hung job is reported after it). Rank 0 alone copies a starting checkpoint
# (140 GB for a 70B model) while the other ranks wait at a barrier: on a slow filesystem that outlasts the
# default 30 minutes.
DIST_TIMEOUT_S = 2 * 3600.0


def run_loop(cfg: LoopConfig, policy_factory=None) -> Path:
    """Run (or resume) the whole loop; returns the run directory.

    Under torchrun (or with a process group already set up) call it on every rank: the process group is created
    once here (and destroyed on return if created here), the trainer and the reference stage adopt it.
    """
    distributed = D.launched_by_torchrun() or (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    )
    info = D.init_distributed(cfg.device, timeout_s=DIST_TIMEOUT_S) if distributed else D.DistInfo()
    try:
        return _run(cfg, RunDir(cfg, info), policy_factory)
    finally:
        D.shutdown(info)


def default_policy_factory(cfg: LoopConfig, info: D.DistInfo) -> Callable[[Path], Any]:
    """Checkpoint directory → `Policy` on this rank's device, data-parallel or sharded as configured."""
    from srlm_fast.recipe.policy import Policy

    device = info.device if info.initialized else resolve_device(cfg.device)
    g = cfg.generation
    return lambda path: Policy.load(
        path, device=device, dtype=cfg.model.dtype, sharded=g.mode == "lockstep", max_batch=g.max_batch,
        max_len=g.max_len or None,
    )  # fmt: skip


def _run(cfg: LoopConfig, run: RunDir, policy_factory) -> Path:
    policy_factory = policy_factory or default_policy_factory(cfg, run.info)
    t0 = time.perf_counter()
    save_or_check_config(cfg, run)
    if run.info.world_size > 1:
        log(
            f"{run.info.world_size} ranks on {run.info.device.type}: {cfg.generation.mode} generation, FSDP2 training"
        )
    torch.manual_seed(cfg.seed)
    wandb_run = _wandb_init(cfg, run) if run.is_main else None

    log("\n== seed data, tokenizer, M1 ==")
    stage(run, "seed data", run.seed / "sft.jsonl", on_main(run, lambda: build_seed_data(cfg, run)))
    stage(run, "tokenizer", run.tokenizer, on_main(run, lambda: build_tokenizer(cfg, run)))
    checkpoint = cfg.model.checkpoint
    if checkpoint and cfg.model.skip_sft:
        stage(
            run,
            "checkpoint → M1",
            run.model(1),
            on_main(run, lambda: _copy_checkpoint(checkpoint, run.model(1))),
        )
    else:
        if checkpoint:
            stage(
                run,
                "checkpoint → M0",
                run.model(0),
                on_main(run, lambda: _copy_checkpoint(checkpoint, run.model(0))),
            )
        else:
            stage(run, "random M0", run.model(0), on_main(run, lambda: build_m0(cfg, run)))
        stage(
            run,
            "SFT → M1",
            run.model(1),
            lambda: _train("sft", cfg, run, run.model(0), run.seed / "sft.jsonl", 1),
        )
    eval_stage(cfg, run, 1, policy_factory)
    _report_progress(cfg, run, wandb_run)

    for t in range(1, cfg.iterations + 1):
        run_iteration(cfg, run, t, policy_factory)
        eval_stage(cfg, run, t + 1, policy_factory)
        _report_progress(cfg, run, wandb_run)

    wall = time.perf_counter() - t0
    if run.is_main:
        write_run_report(cfg, run, wall)
    run.barrier()
    log(f"\ndone in {wall / 60:.1f} min: {run.root}/report.md")
    if wandb_run is not None:
        wandb_run.finish()
    return run.root


def _copy_checkpoint(source: str | Path, target: Path) -> None:
    """Copy a checkpoint directory to `target`, atomically (a killed copy leaves no half checkpoint behind)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, target)


def _report_progress(cfg: LoopConfig, run: RunDir, wandb_run) -> None:
    if not run.is_main:
        return
    rows = summary_rows(cfg, run)
    log("\n" + format_table(rows))
    if wandb_run is not None and rows:
        log_to_wandb(wandb_run, rows)


def log_to_wandb(wandb_run, rows: list[dict]) -> None:
    """The newest model's metrics as scalars (one step per model: wandb plots them across iterations) and the
    whole per-model table as a wandb Table."""
    import wandb

    latest = rows[-1]
    metrics: dict[str, Any] = {
        k: v for k, v in latest.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    keys = [key for _, key, _ in COLUMNS if any(key in r for r in rows)]
    metrics["models"] = wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in rows])
    wandb_run.log(metrics, step=len(rows))


def _wandb_init(cfg: LoopConfig, run: RunDir):
    if not cfg.wandb.enabled or cfg.wandb.mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "wandb.enabled = true but wandb is not installed (pip install srlm-fast[wandb])"
        ) from None
    from srlm_fast.config import to_dict

    return wandb.init(project=cfg.wandb.project, name=cfg.name, mode=cfg.wandb.mode, config=to_dict(cfg),
                      dir=str(run.root), resume="allow", id=f"{cfg.name}-loop")  # fmt: skip
