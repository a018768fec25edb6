"""The self-rewarding loop (`srlm run`): SFT → M1, then for t = 1..T:
self-instruct → N candidates → judge → pairs → reference log-probs → DPO → M_{t+1}, with an evaluation of every
model.

One run is one directory (DESIGN.md §3). Every stage reads the previous stage's files and writes its own
artifact atomically, so a run killed at any moment resumes at the first missing artifact and never repeats or
loses finished work. Training stages resume from their own checkpoints. Every stage is deterministic given its
inputs and the run's seed, so a resumed run ends with the same artifacts as an uninterrupted one.

    runs/<name>/config.toml                   the resolved config (a resumed run must match it)
    runs/<name>/retrieval/index/              with [retrieval] from corpus files: the run's index (built once)
    runs/<name>/seed/sft.jsonl, ift.jsonl, eft.jsonl, seed_prompts.jsonl
    runs/<name>/tokenizer/tokenizer.json
    runs/<name>/m0/ (random init) m1/ (SFT) m2/ ... (DPO)                       HF checkpoints
    runs/<name>/iter<t>/prompts.jsonl candidates.jsonl judgments.jsonl pairs.jsonl pairs.ref.jsonl
    runs/<name>/iter<t>/judge_pairs.jsonl     with judge.meta: the judge's own pairs (Meta-Rewarding)
    runs/<name>/iter<t>/stats.json            counts of every stage of the iteration
    runs/<name>/eval/m<k>.json                evaluation of every model
    runs/<name>/report.md, report.json

This module is the driver: a list of `stage(run, name, artifact, fn, *args)` calls. The stages are in
stages.py, the evaluations in evaluation.py, the run directory and `stage` in rundir.py, the printed table,
report and wandb in summary.py.

Under `torchrun` every rank runs this same loop (see `run_loop`): generation stages split their requests over the
ranks (full replicas, or an FSDP-sharded model in lockstep), training runs FSDP2, and rank 0 alone writes files.
Whether a stage is done is decided on rank 0 and broadcast, and a barrier after every stage makes its artifact
visible to all ranks before the next stage reads it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from srlm_fast import distributed as D
from srlm_fast.device import resolve_device
from srlm_fast.recipe import grounding as G
from srlm_fast.recipe import judge as J
from srlm_fast.recipe import stages as S
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.rundir import RunDir, copy_checkpoint, log, save_or_check_config, stage
from srlm_fast.recipe.stages import Iteration, PolicyFactory
from srlm_fast.recipe.summary import report_progress, wandb_init, write_run_report

# Collectives wait at most this long (a hung job is reported after it). Rank 0 alone copies a starting checkpoint
# (140 GB for a 70B model) while the other ranks wait at a barrier: on a slow filesystem that outlasts the
# default 30 minutes.
DIST_TIMEOUT_S = 2 * 3600.0


def run_loop(cfg: LoopConfig, policy_factory: PolicyFactory | None = None) -> Path:
    """Run (or resume) the whole loop; returns the run directory.

    Under torchrun (or with a process group already set up) call it on every rank: the process group is created
    once here (and destroyed on return if created here), the trainer and the reference stage adopt it.
    """
    cfg.validate(S.train_table)  # every value, the trainer tables too: before anything is read or written
    distributed = D.launched_by_torchrun() or (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    )
    info = D.init_distributed(cfg.device, timeout_s=DIST_TIMEOUT_S) if distributed else D.DistInfo()
    try:
        root = _run(cfg, RunDir(cfg, info), policy_factory or default_policy_factory(cfg, info))
        # Every rank reaches the teardown together, so none destroys its group while rank 0 still writes the
        # report. (The abort seen at exit in CI came from torch's teardown instead: `D.exit_without_teardown`.)
        # Not on an error: a barrier there would wait for a rank that may be gone.
        D.barrier(info)
        return root
    finally:
        D.shutdown(info)


def default_policy_factory(cfg: LoopConfig, info: D.DistInfo) -> PolicyFactory:
    """Checkpoint directory → `Policy` on this rank's device, data-parallel or sharded as configured."""

    device = info.device if info.initialized else resolve_device(cfg.device)
    g = cfg.generation
    return lambda path: Policy.load(
        path, device=device, dtype=cfg.model.dtype, sharded=g.mode == "lockstep", max_batch=g.max_batch,
        max_len=g.max_len or None,
    )  # fmt: skip


def _run(cfg: LoopConfig, run: RunDir, policy_factory: PolicyFactory) -> Path:
    run.claim()  # a run directory of its own, locked: a second process refuses
    try:
        return _run_claimed(cfg, run, policy_factory)
    finally:
        run.release()


def _index(cfg: LoopConfig, run: RunDir) -> Path | None:
    """The retrieval index the run searches (an input of the stages that retrieve), or None with retrieval off."""
    return G.index_dir(cfg, run) if cfg.retrieval.enabled else None


def _template_file(cfg: LoopConfig) -> str | None:
    """The judge template's file, when the config names one (an input of the stages that render it)."""
    return None if cfg.judge.template in J.NAMED_TEMPLATES else cfg.judge.template


def _run_claimed(cfg: LoopConfig, run: RunDir, policy_factory: PolicyFactory) -> Path:
    t0 = time.perf_counter()
    save_or_check_config(cfg, run)
    if (world := run.info.world_size) > 1:
        log(f"{world} ranks on {run.info.device.type}: {cfg.generation.mode} generation, FSDP2 training")
    torch.manual_seed(cfg.seed)
    wandb_run = wandb_init(cfg, run) if run.is_main else None

    log("\n== seed data, tokenizer, M1 ==")
    s, template = cfg.seed_data, _template_file(cfg)
    index = _index(cfg, run)
    if cfg.retrieval.builds_index:  # once per run, before any work that reads it (recipe/grounding.py)
        stage(run, "retrieval index", index, G.build_index, cfg, run, main_only=True,
              inputs=list(cfg.retrieval.corpus))  # fmt: skip
    seed_files = [*s.ift_files, *s.eft_files] if s.source == "files" else []
    stage(run, "seed data", run.seed / "sft.jsonl", S.build_seed_data, cfg, run, main_only=True,
          inputs=[*seed_files, template, index])  # fmt: skip
    tok_source = cfg.model.tokenizer or cfg.model.checkpoint
    stage(run, "tokenizer", run.tokenizer, S.build_tokenizer, cfg, run, main_only=True,
          inputs=[Path(tok_source) / "tokenizer.json" if tok_source else run.seed / "sft.jsonl"])  # fmt: skip
    ckpt, m0, m1 = cfg.model.checkpoint, run.model(0), run.model(1)
    if ckpt and cfg.model.skip_sft:
        stage(run, "checkpoint → M1", m1, copy_checkpoint, ckpt, m1, main_only=True, inputs=[ckpt])
    else:
        if ckpt:
            stage(run, "checkpoint → M0", m0, copy_checkpoint, ckpt, m0, main_only=True, inputs=[ckpt])
        else:
            stage(run, "random M0", m0, S.build_m0, cfg, run, main_only=True, inputs=[run.tokenizer])
        stage(run, "SFT → M1", m1, S.train_sft, cfg, run, inputs=[m0, run.seed / "sft.jsonl"])
    _evaluate(cfg, run, 1, policy_factory)
    report_progress(cfg, run, wandb_run)

    for t in range(1, cfg.iterations + 1):
        run_iteration(Iteration.resume(cfg, run, t, policy_factory))
        _evaluate(cfg, run, t + 1, policy_factory)
        report_progress(cfg, run, wandb_run)

    wall = time.perf_counter() - t0
    if run.is_main:
        write_run_report(cfg, run, wall)
    run.barrier()
    log(f"\ndone in {wall / 60:.1f} min: {run.root}/report.md")
    if wandb_run is not None:
        wandb_run.finish()
    return run.root


def _evaluate(cfg: LoopConfig, run: RunDir, k: int, policy_factory: PolicyFactory) -> None:
    e = cfg.eval
    inputs = [run.model(k), e.rankings, e.pairs, e.prompts, _template_file(cfg), _index(cfg, run)]
    if e.prompts and k > 1:
        inputs.append(run.model(k - 1))  # head-to-head against the previous model
    stage(
        run, f"evaluate M{k}", run.eval / f"m{k}.json", S.evaluate, cfg, run, k, policy_factory, inputs=inputs
    )


def run_iteration(it: Iteration) -> None:
    """M_t → M_{t+1}: the stages of iteration t, each skipped when its artifact exists (made from the same inputs)."""
    run, t, d, m = it.run, it.t, it.dir, it.model
    s = it.cfg.selfinstruct
    earlier = [run.iteration(k) / "prompts.jsonl" for k in range(1, t)]
    log(f"\n== iteration {t}: M{t} → M{t + 1} ==")
    index = _index(it.cfg, run)
    stage(run, f"iter{t}: self-instruct", d / "prompts.jsonl", S.self_instruct, it,
          inputs=[m, run.seed / "seed_prompts.jsonl", *earlier, s.generator,
                  index if it.cfg.retrieval.selfinstruct else None])  # fmt: skip
    stage(run, f"iter{t}: candidates", d / "candidates.jsonl", S.sample_candidates, it,
          inputs=[m, d / "prompts.jsonl", index if it.cfg.retrieval.candidates else None])  # fmt: skip
    stage(run, f"iter{t}: judge", d / "judgments.jsonl", S.judge_candidates, it,
          inputs=[m, d / "candidates.jsonl", _template_file(it.cfg), index if it.cfg.retrieval.judge else None])  # fmt: skip
    meta = [d / "judge_pairs.jsonl"] if it.cfg.judge.meta else []
    if meta:  # Meta-Rewarding: the judge's own pairs, added to the policy's (see stages.meta_judge)
        stage(run, f"iter{t}: meta-judge", meta[0], S.meta_judge, it,
              inputs=[m, d / "judgments.jsonl", _template_file(it.cfg)])  # fmt: skip
    stage(run, f"iter{t}: pairs", d / "pairs.jsonl", S.select_pairs, it, main_only=True,
          inputs=[d / "judgments.jsonl", *meta])  # fmt: skip
    it.close_policy()  # M_t's sampler cache and weights go before training starts
    stage(run, f"iter{t}: reference log-probs", d / "pairs.ref.jsonl", S.reference_logprobs, it,
          inputs=[m, d / "pairs.jsonl"])  # fmt: skip
    stage(run, f"iter{t}: DPO → M{t + 1}", it.next_model, S.train_dpo, it, inputs=[m, d / "pairs.ref.jsonl"])
