"""What a run shows of itself: the per-model table printed after every evaluation, report.md at the end
(srlm_fast/eval/report.py writes it), and the same numbers on wandb.

    summary_rows      one row per evaluated model (eval/m<k>.json plus the counts of the iteration that made it)
    format_table      those rows as the table the loop prints
    write_run_report  report.md, report.json and plots, with the judge-score and length histograms per iteration
    report_progress   the table, and the newest row to wandb, after each model's evaluation (rank 0)
    wandb_init, log_to_wandb   wandb is imported only here and only when enabled: it is absent from the GPU image
"""

from __future__ import annotations

import json
from typing import Any

from srlm_fast.config import ConfigError, to_dict
from srlm_fast.eval.report import write_report
from srlm_fast.io import read_jsonl
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.rundir import RunDir, log, stage_costs

COLUMNS = (
    ("model", "model", "{}"),
    ("task acc", "task_accuracy", "{:.1%}"),
    ("judge=checker", "judge_agreement_own", "{:.1%}"),
    ("judge pairwise", "judge_pairwise_known", "{:.1%}"),
    ("prompts", "prompts", "{}"),
    # Task world: the candidates M_{k-1} sampled (k > 1), by the checker: the share that are right and the share
    # of prompts with at least one right (all self-rewarding can amplify lies between the two).
    ("cand pass@1", "pass_at_1", "{:.1%}"),
    ("cand pass@N", "pass_at_n", "{:.1%}"),
    ("pairs", "pairs", "{}"),
    # Task world: how many pairs prefer the correct answer : the wrong one, by the checker.
    ("pairs ✓:✗", "pairs_checked", "{}"),
    ("resp chars", "mean_response_chars", "{:.1f}"),
    # Shown only when the config asks for these evaluations:
    ("judge~ranks", "judge_pairwise_humans", "{:.1%}"),  # pairwise accuracy on human-ranked replies
    ("judge~pairs", "judge_accuracy_human_pairs", "{:.1%}"),  # accuracy on human chosen/rejected pairs
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
            cand = stats.get("candidates", {}).get("checker") or {}
            row["pass_at_1"], row["pass_at_n"] = cand.get("pass_at_1"), cand.get("pass_at_n")
            row["valid_prompts"] = cand.get("tasks")
            checker = stats.get("pairs", {}).get("checker")
            if checker:
                row["pairs_right"], row["pairs_wrong"] = checker["right"], checker["wrong"]
                row["pairs_checked"] = f"{checker['right']}:{checker['wrong']}"
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table; optional columns only when some row has them."""
    optional = {"task_accuracy", "judge_agreement_own", "judge_pairwise_known", "judge_pairwise_humans",
                "judge_accuracy_human_pairs", "win_rate_vs_previous", "pairs_checked", "pass_at_1", "pass_at_n"}  # fmt: skip
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
    """report.md (+ report.json, plots) in the run directory, one column per evaluated model."""
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
    write_report(metrics, run.root, title=title, stage_costs=stage_costs(run))


def report_progress(cfg: LoopConfig, run: RunDir, wandb_run) -> None:
    """Print the table of the models evaluated so far, and log the newest to wandb (rank 0 only)."""
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


def wandb_init(cfg: LoopConfig, run: RunDir):
    """The run's wandb run (resumed by id), or None when wandb is off."""
    if not cfg.wandb.enabled or cfg.wandb.mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "wandb.enabled = true but wandb is not installed (pip install srlm-fast[wandb])"
        ) from None
    return wandb.init(project=cfg.wandb.project, name=cfg.name, mode=cfg.wandb.mode, config=to_dict(cfg),
                      dir=str(run.root), resume="allow", id=f"{cfg.name}-loop")  # fmt: skip
