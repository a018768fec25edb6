"""How the loop's judge scored its own candidates, by what each candidate is (issue #15)

    python bench/loop_judge.py LABEL=RUN[,RUN ...] [LABEL=RUN ...] [--iterations 1,2] [--out FILE]

Reads each run's `iter<t>/judgments.jsonl` (the candidates, the judge's scores and, with `retrieval.judge`, the
evidence it read) and sorts every candidate with the task world's checker into

    right            the checker's answer
    wrong, copied    wrong, and the answer is stated in one of the judge's evidence lines: the actor copied the
                     line about another entity, the error a judge must catch by finding the asked entity's line
    wrong, a score   wrong, and a judge's score line ("Score: 2"): what an M1 that saw evidence prompts only in its
                     judge examples writes to an evidence prompt
    wrong, other     any other wrong answer (an empty, malformed or invented one)

and reports the share of each the judge called right (score >= 3), its balanced accuracy (the mean of the hit
rate on right candidates and the rejection rate on wrong ones; 0.5: no information), and how many of each had
the asked fact's passage on the judge's first evidence line. These are the judgments the
DPO pairs are made of, so this is the judge the loop trains on, read directly (bench/reading_judge.py measures
the judge on fresh facts instead). Runs of one label are pooled as `srlm experiment` pools seeds: each run's rate,
then the mean over runs.
Only self-judged runs: a control arm's `judgments.jsonl` holds its reward (the random arm's shuffled scores,
the oracle's checker scores), so such a run is refused.

Intervals: a run's candidates of one prompt are sampled from one model on one prompt and are not independent, so
the bootstrap resamples prompts (2,000 resamples) within each run, and the runs' rates are averaged. The first
label is compared with each other one, unpaired (their candidates differ): both bootstraps are drawn independently.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reading_transfer import states_word, summary_header, wrong_kind
from srlm_fast.config import load_job_config
from srlm_fast.io import read_jsonl, write_json_atomic
from srlm_fast.recipe import tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.judge import CORRECT_THRESHOLD

N_BOOT = 2000
KINDS = ("right", "wrong, copied", "wrong, a score", "wrong, other")
RATES = (*(f"called right: {k}" for k in KINDS), "balanced accuracy")


def kind_of(question: str, response: str, evidence: Sequence[str] | None) -> str:
    if tasks.check(question, response).correct:
        return "right"
    return wrong_kind(response, evidence or ())


def prompt_counts(rows: list[dict]) -> np.ndarray:
    """Per prompt and kind: [candidates, called right, with the asked fact on the judge's first evidence line],
    shape (prompts, kinds, 3)."""
    out = np.zeros((len(rows), len(KINDS), 3))
    for i, r in enumerate(rows):
        question = r.get("question", r["prompt"])
        expected = tasks.check(question, "").expected
        evidence = r.get("judge_evidence") or [None] * len(r["responses"])
        for response, score, ev in zip(r["responses"], r["scores"], evidence, strict=True):
            k = KINDS.index(kind_of(question, response, ev))
            out[i, k, 0] += 1
            out[i, k, 1] += score is not None and score >= CORRECT_THRESHOLD
            out[i, k, 2] += bool(ev and expected and states_word(ev[0], expected))
    return out


def rates(counts: np.ndarray) -> np.ndarray:
    """(…, prompts, kinds, 2) → (…, len(RATES)): the share called right per kind, then balanced accuracy."""
    total = counts.sum(axis=-3)
    with np.errstate(invalid="ignore", divide="ignore"):
        called = total[..., 1] / total[..., 0]
        wrong = total[..., 1:, :].sum(axis=-2)
        rejected = 1 - wrong[..., 1] / wrong[..., 0]
    balanced = (called[..., 0] + rejected) / 2
    return np.concatenate([called, balanced[..., None]], axis=-1)


def _mean_over_runs(per_run: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN (a run without candidates of a kind); NaN where no run has any."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_run, axis=0)


def pooled_draws(per_run: Sequence[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap draws of the runs' mean rates, prompts resampled within each run: (n_boot, len(RATES))."""
    rng = np.random.default_rng(seed)
    draws = [rates(c[rng.integers(0, len(c), size=(n_boot, len(c)))]) for c in per_run]
    return _mean_over_runs(np.stack(draws))


def interval(value: float, draws: np.ndarray) -> dict[str, float]:
    finite = draws[np.isfinite(draws)]
    low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
    return {"value": float(value), "low": float(low), "high": float(high)}


def summarize(groups: dict[str, list[Path]], iterations: Sequence[int], n_boot: int = N_BOOT) -> dict:
    out: dict = {"groups": {}, "contrasts": {}}
    draws: dict[tuple[str, int], np.ndarray] = {}
    for label, runs in groups.items():
        out["groups"][label] = {"runs": [str(r) for r in runs], "iterations": {}}
        for t in iterations:
            per_run = [prompt_counts(read_jsonl(r / f"iter{t}" / "judgments.jsonl")[0]) for r in runs]
            value = _mean_over_runs(np.stack([rates(c) for c in per_run]))
            draws[label, t] = pooled_draws(per_run, n_boot, seed=t)
            out["groups"][label]["iterations"][str(t)] = {
                "candidates": {k: int(sum(c[:, i, 0].sum() for c in per_run)) for i, k in enumerate(KINDS)},
                # Where the retriever put the asked fact: a judge that checks line 1 is right when it is there.
                "fact_on_line_1": {
                    k: int(sum(c[:, i, 2].sum() for c in per_run)) for i, k in enumerate(KINDS)
                },
                **{name: interval(value[i], draws[label, t][:, i]) for i, name in enumerate(RATES)},
            }
    first, *others = groups
    for other in others:
        out["contrasts"][f"{first} - {other}"] = {
            str(t): {
                name: interval(
                    out["groups"][first]["iterations"][str(t)][name]["value"]
                    - out["groups"][other]["iterations"][str(t)][name]["value"],
                    draws[first, t][:, i] - draws[other, t][:, i],
                )
                for i, name in enumerate(RATES)
            }
            for t in iterations
        }
    return out


def _pct(iv: dict) -> str:
    return f"{100 * iv['value']:5.1f} [{100 * iv['low']:5.1f}, {100 * iv['high']:5.1f}]"


def print_tables(summary: dict) -> None:
    print(
        f"{'group':<24} {'iter':>4} {'n right/copied/score/other':>27}  "
        + "  ".join(f"{r:>24}" for r in RATES)
    )
    for label, g in summary["groups"].items():
        for t, row in g["iterations"].items():
            n = "/".join(str(row["candidates"][k]) for k in KINDS)
            print(f"{label:<24} {t:>4} {n:>27}  " + "  ".join(f"{_pct(row[r]):>24}" for r in RATES))
            first = "/".join(str(row["fact_on_line_1"][k]) for k in KINDS)
            print(f"{'':<24} {'':>4} {first:>27}  with the asked fact on the judge's first evidence line")
    for name, by_t in summary["contrasts"].items():
        for t, row in by_t.items():
            print(f"{name:<24} {t:>4} {'':>27}  " + "  ".join(f"{_pct(row[r]):>24}" for r in RATES))


def _reward(run: Path) -> str:
    """The run's `judge.reward` (the default when the run has no config.toml)."""
    config = run / "config.toml"
    return (load_job_config(LoopConfig, config) if config.is_file() else LoopConfig()).judge.reward


def _group(spec: str) -> tuple[str, list[Path]]:
    label, sep, runs = spec.partition("=")
    if not sep or not label or not runs:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected LABEL=RUN[,RUN ...]")
    return label, [Path(r) for r in runs.split(",")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "groups", nargs="+", type=_group, help="LABEL=RUN[,RUN ...]: run directories pooled as one"
    )
    ap.add_argument(
        "--iterations", default="1", help="comma-separated iterations t (iter<t>/judgments.jsonl)"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    groups = dict(args.groups)
    iterations = [int(t) for t in args.iterations.split(",")]
    missing = [str(r / f"iter{t}" / "judgments.jsonl") for rs in groups.values() for r in rs for t in iterations
               if not (r / f"iter{t}" / "judgments.jsonl").is_file()]  # fmt: skip
    if missing:
        ap.error(f"no judgments: {', '.join(missing)}")
    if controls := [
        f"{r} ({reward})" for rs in groups.values() for r in rs if (reward := _reward(r)) != "self"
    ]:
        ap.error(f"not the judge's scores: {', '.join(controls)}: a control arm's judgments.jsonl holds its reward "
                 "(shuffled scores, or the checker's); bench/reading_judge.py measures such an arm's judge")  # fmt: skip
    summary = summarize(groups, iterations)
    print_tables(summary)
    if args.out:
        write_json_atomic(args.out, {**summary_header("the loop judge's verdicts on its candidates, by kind",
                                                      n_boot=N_BOOT), **summary})  # fmt: skip
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
