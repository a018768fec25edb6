"""`srlm experiment`: the self-rewarding loop under several reward arms × seeds, one table and plots.

Arms (`ARMS`), each the default loop with one change:

    self     the recipe: the model judges its own candidates
    random   the self-judge's scores shuffled among each prompt's candidates (recipe/rewards.py): DPO on
             self-generated pairs with no information in the reward, the noise floor
    oracle   the task world's checker as the reward: the ceiling of a perfect correctness judge
    meta     self + Meta-Rewarding: the model also judges its own judgments, and the judge trains on those pairs
    no_dpo   M1 carried forward: every M_k is M1 (no run; its rows repeat M1's evaluation)

Layout: `<runs_dir>/<name>/s<seed>-<arm>/` is an ordinary run directory of each (arm, seed); the experiment's
`experiment.md`, `experiment.json` and PNG plots sit in `<runs_dir>/<name>/`. For each seed the self arm runs
first; the other arms start from its artifacts that do not depend on the reward (seed data, tokenizer, M0, M1,
M1's evaluation, and iteration 1's prompts and candidates, all functions of M1 and the seed), so every arm of a
seed shares one M1 and one first batch of candidates, and those stages run once per seed. A killed experiment
resumes: every run resumes at its first missing artifact. `--m1-from` starts every seed from an earlier
experiment's M1 (`reuse_m1`), for sweeps over what the iterations do.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srlm_fast.config import ConfigError, changed_keys, from_dict, merge, read_toml, to_dict, to_toml
from srlm_fast.eval.experiment_report import write_experiment_report
from srlm_fast.io import read_jsonl, write_json_atomic, write_text_atomic
from srlm_fast.recipe import tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.loop import run_loop
from srlm_fast.recipe.stage_checks import checked_pairs_by_family
from srlm_fast.recipe.stages import train_table
from srlm_fast.train.config import TrainConfig


@dataclass(frozen=True)
class Arm:
    """One arm: config overrides over the base loop config (`runs=False`: nothing to run, see no_dpo)."""

    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    runs: bool = True


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("self", "the model judges its own candidates (the recipe)"),
        Arm("random", "self-judge scores shuffled among each prompt's candidates", {"judge": {"reward": "random"}}),
        Arm("oracle", "the task world's checker is the reward", {"judge": {"reward": "oracle"}}),
        Arm("meta", "self-judge + meta-judge: the judge trains on its own judged judgments", {"judge": {"meta": True}}),
        Arm("no_dpo", "M1 carried forward (no training)", runs=False),
    )
}  # fmt: skip

DEFAULT_ARMS = ("self", "random", "oracle", "meta", "no_dpo")

# Artifacts of a seed's self run that the other arms reuse (paths under a run directory). They depend only on
# the seed data, M1 and the seed, never on judge.reward or judge.meta, which are all an arm may change.
SHARED = ("seed", "tokenizer", "m0", "m1", "eval/m1.json", "iter1/prompts.jsonl", "iter1/candidates.jsonl")
_SHAREABLE_KEYS = {"judge": {"reward", "meta", "meta_candidates", "meta_min_prob"}}


# What M1 is made of: the keys of a loop config that seed data, tokenizer, M0 and SFT read. `--m1-from` reuses an
# earlier experiment's M1 only when these agree, so an M1 is never reused under a config that would make another.
M1_ARTIFACTS = ("seed", "tokenizer", "m0", "m1")


def m1_inputs(cfg: LoopConfig) -> dict[str, Any]:
    d = to_dict(cfg)
    r = cfg.retrieval
    # Retrieval reaches the seed data only through grounded judge examples, evidence in the instruction examples
    # and passage self-instruct examples (stages.build_seed_data); without those, no SFT example reads the index,
    # so its settings do not change M1 (an ungrounded judge's M1 then serves a run whose candidates read evidence).
    retrieval: dict[str, Any] = {}
    if r.judge or r.evidence_in_sft or r.selfinstruct:
        unused = ("candidates", "sft_evidence", "shuffle_candidates")  # read by the loop's stages only
        retrieval = {k: v for k, v in d["retrieval"].items() if k not in unused}
        retrieval["evidence_in_sft"] = r.evidence_in_sft
    return {
        # The SFT settings as the trainer gets them (the from-scratch defaults under the config's table), so an
        # M1 made under other defaults is not taken for this one.
        "seed": d["seed"], "model": d["model"], "seed_data": d["seed_data"], "sft": train_table("sft", cfg),
        "retrieval": retrieval, "judge": {"template": d["judge"]["template"]},
        "selfinstruct": {k: d["selfinstruct"][k] for k in ("n_seed", "n_generated")},
    }  # fmt: skip


# Trainer keys that say where and how often, not what M1 becomes.
_SFT_BOOKKEEPING = {"device", "checkpoint", "logging", "model.init", "data.train", "schedule.seed"}


def _sft_settings(table: dict[str, Any] | LoopConfig) -> dict[str, Any]:
    """The SFT trainer settings that shape M1: a saved trainer config, or the one a loop config would train."""
    if isinstance(table, LoopConfig):
        base = {"task": "sft", "model": {"init": "M"}, "data": {"train": "D"}}
        table = merge(base, train_table("sft", table))
    d = to_dict(from_dict(TrainConfig, table, where="sft"))
    for key in _SFT_BOOKKEEPING:
        section, _, name = key.partition(".")
        if name:
            d.get(section, {}).pop(name, None)
        else:
            d.pop(section, None)
    return d


def reuse_m1(source: Path, cfg: LoopConfig, target: Path) -> list[str]:
    """Give the run directory `target` of `cfg` the M1 (seed data, tokenizer, M0, M1) of the earlier run `source`,
    after checking that `cfg` would have made the same M1; returns the shared paths. The evaluation of M1 is not
    shared: it depends on the evaluation settings, and costs a minute."""
    saved = source / "config.toml"
    if not (source / "m1").is_dir() or not saved.is_file():
        raise ConfigError(f"--m1-from: {source} is no run directory with an M1 (config.toml and m1/)")
    before = m1_inputs(from_dict(LoopConfig, read_toml(saved), where=str(saved)))
    changed = changed_keys(before, m1_inputs(cfg))
    # The trainer config SFT saved: catches an M1 trained under other from-scratch defaults (another version),
    # which the loop configs alone cannot show.
    trained = source / "train" / "m1" / "config.toml"
    if trained.is_file():
        changed += [f"sft.{k}" for k in changed_keys(_sft_settings(read_toml(trained)), _sft_settings(cfg))]
    if changed:
        raise ConfigError(
            f"--m1-from: {source} made its M1 under another config (differs in {', '.join(changed[:6])}); "
            "its M1 is not this config's"
        )
    start_run_dir(cfg, target)
    return share_artifacts(source, target, M1_ARTIFACTS, iter1_stats=False)


def resolve_arms(names: Sequence[str]) -> list[Arm]:
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    if not names:
        raise ConfigError("an experiment needs at least one arm")
    return [ARMS[n] for n in names]


def run_dir_name(seed: int, arm: str) -> str:
    return f"s{seed}-{arm}"


def arm_config(base: LoopConfig, arm: Arm, seed: int, root: Path) -> LoopConfig:
    """The loop config of one (arm, seed): the base with the arm's overrides, its seed and its run directory."""
    data = merge(to_dict(base), arm.overrides)
    data.update(seed=seed, name=run_dir_name(seed, arm.name), runs_dir=str(root))
    return from_dict(LoopConfig, data, where=f"arm {arm.name}")


def _shares_with_self(arm: Arm) -> bool:
    return all(
        section in _SHAREABLE_KEYS and set(keys) <= _SHAREABLE_KEYS[section]
        for section, keys in arm.overrides.items()
    )


def start_run_dir(cfg: LoopConfig, target: Path) -> None:
    """Make `target` the run directory of `cfg` before artifacts are shared into it: `srlm run` refuses to write
    into a directory without its config.toml (it could be anything), and a resumed one checks the config."""
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "config.toml").exists():
        write_text_atomic(target / "config.toml", to_toml(cfg))


def share_artifacts(
    source: Path, target: Path, paths: Sequence[str] = SHARED, iter1_stats: bool = True
) -> list[str]:
    """Copy the reward-independent artifacts of `source` (a seed's self run) into `target`, where missing.

    Files are hard-linked when the filesystem allows (artifacts are never modified in place: every stage writes a
    new file and renames it), else copied. The iteration-1 stats keep only the stages that were shared. Returns
    the shared paths.
    """
    done = []
    for rel in paths:
        src, dst = source / rel, target / rel
        if not src.exists() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.share")
        shutil.rmtree(tmp, ignore_errors=True)
        if src.is_dir():
            shutil.copytree(src, tmp, copy_function=_link_or_copy)
        else:
            _link_or_copy(src, tmp)
        os.replace(tmp, dst)
        done.append(rel)
    stats_src, stats_dst = source / "iter1" / "stats.json", target / "iter1" / "stats.json"
    if (
        iter1_stats
        and stats_src.exists()
        and not stats_dst.exists()
        and (target / "iter1" / "candidates.jsonl").exists()
    ):
        stats = json.loads(stats_src.read_text())
        write_json_atomic(stats_dst, {k: v for k, v in stats.items() if k in ("prompts", "candidates")})
    return done


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


RunFn = Callable[[LoopConfig], Any]


def run_experiment(
    base: LoopConfig,
    arms: Sequence[str] = DEFAULT_ARMS,
    seeds: Sequence[int] = (0, 1, 2),
    name: str = "experiment",
    run_fn: RunFn | None = None,
    share: bool = True,
    log: Callable[[str], None] = print,
    m1_from: Path | None = None,
) -> Path:
    """Run (or resume) every (arm, seed) and write the experiment's report; returns the experiment directory.

    `m1_from`: an earlier experiment directory whose seed s self run lends this one its M1 (`reuse_m1`), so lever
    sweeps over the iterations skip SFT, most of a run's time on a CPU."""
    run_fn = run_fn or run_loop
    chosen = resolve_arms(list(arms))
    root = Path(base.runs_dir) / name
    for seed in seeds:
        self_cfg = arm_config(base, ARMS["self"], seed, root)
        if m1_from is not None and not (root / self_cfg.name / "m1").exists():
            shared = reuse_m1(Path(m1_from) / self_cfg.name, self_cfg, root / self_cfg.name)
            log(f"seed {seed}: M1 from {Path(m1_from) / self_cfg.name} ({', '.join(shared)})")
        # The self run provides M1 (and what else is shared) even when the self arm is not reported.
        log(f"\n##### experiment {name}: seed {seed}, arm self")
        run_fn(self_cfg)
        for arm in chosen:
            if arm.name == "self" or not arm.runs:
                continue
            cfg = arm_config(base, arm, seed, root)
            if share and _shares_with_self(arm):
                start_run_dir(cfg, root / cfg.name)
                share_artifacts(root / self_cfg.name, root / cfg.name)
            log(f"\n##### experiment {name}: seed {seed}, arm {arm.name}")
            run_fn(cfg)
    results = collect(root, [a.name for a in chosen], list(seeds), base.iterations)
    write_experiment_report(results, root, title=f"srlm experiment `{name}`")
    log(f"\nexperiment report: {root / 'experiment.md'}")
    return root


# ---- reading the runs back ----------------------------------------------------------------------------------


def candidate_stats(iteration_dir: Path) -> dict[str, Any]:
    """What the checker says about one iteration's candidates (reporting only; no stage reads it): pass@1 (mean
    fraction of correct candidates) and pass@N (fraction with at least one correct), over the prompts it can
    parse; the fraction of self-instructed prompts that are tasks; mean candidate length; the checker's verdicts
    on the preference pairs per task family."""
    path = iteration_dir / "candidates.jsonl"
    if not path.exists():
        return {}
    rows = read_jsonl(path)[0]
    parsed = [r for r in rows if tasks.parse_prompt(r["prompt"]) is not None]
    per_prompt = [[tasks.check(r["prompt"], x).correct for x in r["responses"]] for r in parsed]
    lengths = [len(x) for r in rows for x in r["responses"]]
    out: dict[str, Any] = {
        "prompts": len(rows),
        "valid_prompts": len(parsed) / len(rows) if rows else None,
        "pass_at_1": sum(sum(c) / len(c) for c in per_prompt if c) / len(per_prompt) if per_prompt else None,
        "pass_at_n": sum(any(c) for c in per_prompt) / len(per_prompt) if per_prompt else None,
        "n_candidates": max((len(r["responses"]) for r in rows), default=0),
        "mean_chars": sum(lengths) / len(lengths) if lengths else None,
    }
    jpath = iteration_dir / "judgments.jsonl"
    if jpath.exists():
        scores_ok, scores_bad = [], []
        for r in read_jsonl(jpath)[0]:
            for resp, s in zip(r["responses"], r["scores"]):
                v = tasks.check(r["prompt"], resp)
                if v.parsed and s is not None:
                    (scores_ok if v.correct else scores_bad).append(float(s))
        out["scores_correct"], out["scores_wrong"] = scores_ok, scores_bad
    ppath = iteration_dir / "pairs.jsonl"
    if ppath.exists():
        out["pairs_by_family"] = checked_pairs_by_family(read_jsonl(ppath)[0])
    return out


def model_evaluations(run_root: Path, most: int | None = None) -> list[dict[str, Any]]:
    """A run's eval/m1.json, m2.json, … in order, up to the first missing one (at most `most` of them)."""
    models = []
    while most is None or len(models) < most:
        path = run_root / "eval" / f"m{len(models) + 1}.json"
        if not path.exists():
            break
        models.append(json.loads(path.read_text()))
    return models


def collect_run(run_root: Path, iterations: int) -> dict[str, Any]:
    """One run's trajectory: the evaluation of every model and the stats of every iteration."""
    models = model_evaluations(run_root, iterations + 1)
    iters = []
    for t in range(1, iterations + 1):
        it = run_root / f"iter{t}"
        if not it.exists():
            break
        stats = json.loads((it / "stats.json").read_text()) if (it / "stats.json").exists() else {}
        iters.append({"stats": stats, "candidates": candidate_stats(it)})
    return {"models": models, "iterations": iters}


def collect(root: Path, arms: Sequence[str], seeds: Sequence[int], iterations: int) -> dict[str, Any]:
    """Every (arm, seed) trajectory under an experiment directory; no_dpo repeats the self run's M1."""
    out: dict[str, Any] = {"arms": list(arms), "seeds": list(seeds), "iterations": iterations, "runs": {}}
    for arm in arms:
        for seed in seeds:
            if ARMS[arm].runs:
                run = collect_run(root / run_dir_name(seed, arm), iterations)
            else:
                m1 = collect_run(root / run_dir_name(seed, "self"), 0)["models"]
                run = {"models": m1 * (iterations + 1), "iterations": []}
            out["runs"][f"{arm}/{seed}"] = run
    return out
