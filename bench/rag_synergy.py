"""The 2×2 RAG synergy experiment of issue #16: {retrieval in generation off/on} × {retrieval in the judge off/on}.

Every arm runs the whole loop on the task world with the knowledge families (facts only the knowledge corpus
holds, `recipe/task_knowledge.py`) and the knowledge corpus indexed (`retrieval.task_corpus`); the arms differ
only in `retrieval.candidates` and `retrieval.judge`. The arms do not share M1: each arm's seed data differs
(evidence in the IFT prompts, the grounded judge's EFT prompts), so each trains its own. Per arm and seed, the
table reports every model's held-out checker accuracy (all families, and the knowledge families alone: without
evidence in generation a model cannot know a held-out fact) and its judge/checker agreement.

    python bench/rag_synergy.py --seeds 0,1,2 --runs-dir runs/rag [--smoke] [loop overrides: --iterations=2 ...]
    python bench/rag_synergy.py --seeds 0 --smoke          # a seconds-scale check that all four arms run

Results: runs/<dir>/<arm>-s<seed>/ and bench/results/rag_synergy-<device>.json (with --out). A finished arm is
skipped (each run resumes); `--summarise-only` reads finished runs (e.g. arms run as separate processes). Measured
for seeds 0-2 on the 2-core CPU (bench/results/rag_synergy_3seeds-cpu.json; ~10 min per arm and seed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.common import versions
from srlm_fast.config import load_job_config
from srlm_fast.eval import experiment_report as ER
from srlm_fast.io import write_json_atomic
from srlm_fast.recipe import tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.experiment import model_evaluations
from srlm_fast.recipe.loop import run_loop
from srlm_fast.recipe.task_families import DEFAULT_FAMILIES, KNOWLEDGE_FAMILY_NAMES

ARMS = {  # name → (retrieval in generation, retrieval in the judge)
    "gen0-judge0": (False, False),
    "gen1-judge0": (True, False),
    "gen0-judge1": (False, True),
    "gen1-judge1": (True, True),
}
WORLD = [
    f"--seed_data.families={json.dumps([*DEFAULT_FAMILIES, *KNOWLEDGE_FAMILY_NAMES])}",
    "--retrieval.task_corpus=true",
]
# tests/recipe/test_loop.py's seconds-scale settings.
SMOKE = [
    "--iterations=1", "--model.preset=tiny", "--model.vocab_size=400", "--model.max_seq_len=256",
    "--seed_data.n_ift=160", "--seed_data.n_eft=60", "--seed_data.n_meft=20", "--seed_data.n_selfinstruct=30",
    "--seed_data.n_seed_prompts=30", "--selfinstruct.n_prompts=6", "--selfinstruct.batch_size=8",
    "--selfinstruct.max_new_tokens=12", "--candidates.max_new_tokens=8", "--judge.k=2", "--judge.max_new_tokens=20",
    "--eval.n_task_prompts=6", "--eval.n_judge_items=6", "--eval.max_new_tokens=8", "--sft.schedule.epochs=1.0",
    "--sft.schedule.micro_batch_size=8",
    "--dpo.schedule.epochs=1.0", "--dpo.schedule.micro_batch_size=2",
]  # fmt: skip


def arm_flags(arm: str) -> list[str]:
    gen, judge = ARMS[arm]
    # retrieval with both uses off would read no index; with task_corpus alone it is inert (nothing is built).
    return [f"--retrieval.candidates={str(gen).lower()}", f"--retrieval.judge={str(judge).lower()}"]


def summarise(run_root: Path) -> list[dict]:
    """Per model M_k: held-out accuracy (all, knowledge families), judge/checker agreement."""
    out = []
    for m in model_evaluations(run_root):
        fam = m.get("by_family", {})
        kb = [fam[f] for f in KNOWLEDGE_FAMILY_NAMES if f in fam]
        out.append({
            "model": m["model"], "task_accuracy": m.get("task_accuracy"),
            "knowledge_accuracy": sum(kb) / len(kb) if kb else None,
            "judge_agreement_own": m.get("judge_agreement_own"), "judge_agreement_known": m.get("judge_agreement_known"),
        })  # fmt: skip
    return out


# Per-prompt contrasts over the four arms: the two main effects (mean of on − off) and the interaction.
CONTRASTS = {
    "gen_effect": {"gen1-judge0": 0.5, "gen1-judge1": 0.5, "gen0-judge0": -0.5, "gen0-judge1": -0.5},
    "judge_effect": {"gen0-judge1": 0.5, "gen1-judge1": 0.5, "gen0-judge0": -0.5, "gen1-judge0": -0.5},
    "interaction": {"gen1-judge1": 1, "gen1-judge0": -1, "gen0-judge1": -1, "gen0-judge0": 1},
}


def _knowledge_mask(cfg: LoopConfig) -> np.ndarray:
    """Which of the run's held-out prompts (in `per_prompt` order) belong to a knowledge family."""
    held_out = tasks.eval_prompts(cfg.eval.n_task_prompts, cfg.seed, cfg.seed_data.families or None)
    return np.array([t.family in KNOWLEDGE_FAMILY_NAMES for t in held_out])


def synergy(configs: dict[tuple[str, int], LoopConfig]) -> dict:
    """The 2×2 with intervals, from every arm's evaluations: per arm and metric the last model's value and its
    change from M1; the main effects of retrieval in generation and in the judge; and the interaction
    (gen1-judge1 − gen1-judge0) − (gen0-judge1 − gen0-judge0). The arms of a seed share the held-out prompts, so
    every statistic is a per-prompt contrast, bootstrapped over prompts within each seed (stratified over seeds)."""
    seeds = sorted({seed for _, seed in configs})
    evals = {}  # (arm, seed) -> list of per-model eval dicts (M1 .. M_last)
    masks = {}  # seed -> knowledge prompts among the held-out ones (every arm of a seed has the same prompts)
    for (arm, seed), cfg in configs.items():
        evals[arm, seed] = model_evaluations(Path(cfg.runs_dir) / cfg.name)
        if seed not in masks:
            masks[seed] = _knowledge_mask(cfg)

    def vectors(metric: str, subset: str, model: int) -> dict[tuple[str, int], np.ndarray]:
        out = {}
        for key, models in evals.items():
            v = ER.outcomes(models[model], metric) if models else None
            if v is not None:
                out[key] = v[masks[key[1]]] if subset == "knowledge" else v
        return out

    result: dict = {"seeds": seeds, "metrics": {}}
    for metric in ("correct", "agree"):
        for subset in ("knowledge", "all"):
            last, first = vectors(metric, subset, -1), vectors(metric, subset, 0)
            row: dict = {"arms": {}}
            for arm in ARMS:
                if all((arm, s) in last for s in seeds):
                    row["arms"][arm] = {
                        "last": ER.stratified_bootstrap([last[arm, s] for s in seeds]).to_dict(),
                        "change_from_m1": ER.stratified_bootstrap(
                            [last[arm, s] - first[arm, s] for s in seeds]
                        ).to_dict(),
                    }
            if all((arm, s) in last for arm in ARMS for s in seeds):
                for key, weights in CONTRASTS.items():
                    per_seed = [sum(w * last[arm, s] for arm, w in weights.items()) for s in seeds]
                    row[key] = ER.stratified_bootstrap(per_seed).to_dict()
            result["metrics"][f"{metric}/{subset}"] = row
    return result


def _interval(d: dict) -> str:
    if d["value"] is None:
        return "-"
    return f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _print_synergy(syn: dict) -> None:
    for name, row in syn["metrics"].items():
        print(f"\n{name} (last model; change from M1; points):")
        for arm, r in row["arms"].items():
            print(f"  {arm:<12} {100 * r['last']['value']:5.1f}%   change {_interval(r['change_from_m1'])}")
        for key in CONTRASTS:
            if key in row:
                print(f"  {key:<12} {_interval(row[key])}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms of {', '.join(ARMS)}")
    p.add_argument("--runs-dir", default="runs/rag_synergy")
    p.add_argument("--smoke", action="store_true", help="the seconds-scale settings of the loop tests")
    p.add_argument("--out", default=None, help="JSON results file (e.g. bench/results/rag_synergy-cpu.json)")
    p.add_argument("--summarise-only", action="store_true", help="read the finished runs; run nothing")
    args, overrides = p.parse_known_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results: dict = {"date": datetime.date.today().isoformat(), "host": platform.node(), "arms": {}}
    # Every config first: a bad override stops the experiment before any arm runs.
    configs = {}
    for arm in arms:
        for seed in seeds:
            flags = [f"--runs_dir={args.runs_dir}", f"--name={arm}-s{seed}", f"--seed={seed}", *WORLD,
                     *(SMOKE if args.smoke else []), *arm_flags(arm), *overrides]  # fmt: skip
            configs[arm, seed] = load_job_config(LoopConfig, None, flags)
    for cfg in configs.values():
        cfg.validate()
    for (arm, seed), cfg in configs.items():
        root = run_loop(cfg) if not args.summarise_only else Path(cfg.runs_dir) / cfg.name
        results["arms"].setdefault(arm, {})[str(seed)] = summarise(root)
    print(f"\n{'arm':<14}{'seed':>5}  {'model':<6}{'task acc':>10}{'knowledge acc':>15}{'judge agr.':>12}")
    for arm, by_seed in results["arms"].items():
        for seed, rows in by_seed.items():
            for r in rows:
                f = lambda x: "-" if x is None else f"{x:.3f}"
                print(f"{arm:<14}{seed:>5}  {r['model']:<6}{f(r['task_accuracy']):>10}"
                      f"{f(r['knowledge_accuracy']):>15}{f(r['judge_agreement_own']):>12}")  # fmt: skip
    results["synergy"] = synergy(configs)
    _print_synergy(results["synergy"])
    results.update(device="cpu", versions=versions(), command="python " + " ".join(sys.argv))
    if args.out:
        write_json_atomic(Path(args.out), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
