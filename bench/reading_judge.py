"""Does the judge get better at telling its own right answers from wrong ones? Measured on fresh facts (issue #15)

    python bench/reading_judge.py RUN [RUN ...] [--n 1000] [--models 1,-1] [--baseline RUN ...]
        [--judge-evidence item|retrieved] [--judge K|DIR [--baseline-judge K|DIR]] [--out FILE]

Each model M_k of a run judges its own greedy answers to `bench/reading_transfer.py`'s freshly invented facts
(answered first if they are not cached yet), with the run's judge (`grounding.judge_spec`: the grounded rubric,
expected score). The judge's evidence is the item's own evidence lines, the fact and its distractor, in the
actor's (random) order; or, with `--judge-evidence retrieved`, what the loop's judge would read: BM25's top k for
question + answer from the run's corpus with the fresh passages added, in BM25's order. `--judge` has another
model judge the same answers (the run's M_K, or a model directory), compared per item with each model's own judge
or with `--baseline-judge`: whether the judge changed, or the answers it meets. The checker then
says how often the judge is right: agreement (score ≥ 3 exactly when the answer is right) and balanced accuracy
(the mean of its hit rate on right answers and its rejection rate on wrong ones), which unlike agreement does not
rise just because the model's accuracy moves towards the judge's favourite verdict. The held-out evaluation of a
run measures the same on 62 questions; here on 1,000, so a change of a few points has an interval that can
exclude 0. Both are also split by the evidence line that states the fact: the loop's judge reads evidence
retrieved for question + response, where the passage that holds a right answer comes first, so a judge that
compares the answer with the first line only is good on one half of these items and blind on the other.

Both measures weigh the kinds of answer a model writes, so a judge that scores every kind as before can lose
balanced accuracy because its model's wrong answers changed kind (score lines, easy to reject, gone; copied lines,
hard, left). So each model's answers are also sorted into kinds (`answer_kind`: right with the fact on line 1 or 2;
wrong and copied from an evidence line, a score line, or other, as bench/loop_judge.py sorts the loop's
candidates) with the share of each the judge calls right.

Intervals: percentile bootstrap over items (2,000 resamples), pooled over runs by resampling within each run
(stratified); a change M_k − M1, or a run against its `--baseline` run, resamples the same items for both (paired).
A kind's share called right pools the runs' counts (a run may have a handful of a kind's answers), its interval
from the same resampling within runs.
Verdicts are cached in RUN/eval/reading_judge_*.jsonl; the JSON keeps each model's verdict per item (`agree`).
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reading_transfer import (
    ITEM_SEED,
    _pct,
    evaluate_run,
    fact_line,
    summary_header,
    wrong_kind,
)
from srlm_fast.config import load_job_config
from srlm_fast.eval.experiment_report import balanced_accuracy_of
from srlm_fast.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.evaluation import judge_items
from srlm_fast.recipe.evidence import split_evidence
from srlm_fast.recipe.grounding import Grounding, judge_spec
from srlm_fast.recipe.judge import CORRECT_THRESHOLD
from srlm_fast.recipe.policy import Policy
from srlm_fast.retrieval.corpus import Passage
from srlm_fast.retrieval.index import load_index, new_retriever

N_BOOT = 2000
KINDS = ("right, fact on line 1", "right, fact on line 2", "wrong, copied", "wrong, a score", "wrong, other")


def item_evidence(answers: list[dict]) -> list[list[str]]:
    """The judge's evidence as the actor's: each item's own evidence lines, in the order the actor read them."""
    return [split_evidence(r["prompt"])[0] for r in answers]


def fresh_grounding(run: Path, cfg: LoopConfig, answers: list[dict]) -> Grounding:
    """The loop's retriever (`Grounding`, the run's k and word limit) over the run's corpus with every fresh item's
    passages added, indexed with the run's BM25 settings. Built once per run: every model answers the same items."""
    if cfg.retrieval.kind != "bm25" or cfg.retrieval.index:
        raise SystemExit(f"{run}: --judge-evidence retrieved rebuilds the run's own BM25 index only")
    corpus = load_index(run / "retrieval" / "index")
    fresh = dict.fromkeys(p for ev in item_evidence(answers) for p in ev)
    passages = [*corpus.passages, *(Passage(f"fresh-{i}", text) for i, text in enumerate(fresh))]
    retriever = new_retriever("bm25", bm25_params=corpus.params()).index(passages)
    return Grounding(retriever, cfg.retrieval.k, cfg.retrieval.max_words)


def retrieved_evidence(grounding: Grounding, answers: list[dict]) -> list[list[str]]:
    """The judge's evidence as the loop retrieves it (`Grounding.judge_evidence`: the top k for question +
    response, in the retriever's order): the order the loop's judge reads, where the asked entity's passage
    comes first."""
    return grounding.judge_evidence([(split_evidence(r["prompt"])[1], r["response"]) for r in answers])


def judge_answers(
    judge: Path, answers: list[dict], evidence: list[list[str]], cfg: LoopConfig, cache: Path
) -> list[float | None]:
    """The scores the model in `judge` gives `answers` (reading_transfer's rows, its own or another model's) with
    `evidence` per answer, from `cache` when it holds exactly these answers and evidence; None for an invalid
    judgment."""
    key = [(r["prompt"], r["response"]) for r in answers]
    if cache.is_file():
        rows, errors = read_jsonl(cache, required=("prompt", "response", "score"), on_error="skip")
        # Caches written before the evidence was stored hold the item's own evidence (no other mode existed).
        same = [(r["prompt"], r["response"], r.get("evidence", ev)) for r, ev in zip(rows, evidence)]
        if not errors and same == [(p, resp, ev) for (p, resp), ev in zip(key, evidence)]:
            return [r["score"] for r in rows]
        print(f"  {cache}: {'unreadable' if errors else 'holds other answers'}, judging again", flush=True)
    items = [(split_evidence(p)[1], response, ev) for (p, response), ev in zip(key, evidence)]
    policy = Policy.load(judge, device="cpu", dtype=cfg.model.dtype)
    try:
        results = judge_items(policy, judge_spec(cfg), items, seed=cfg.seed)
    finally:
        policy.close()
    scores = [r.score for r in results]
    rows = [
        {"prompt": p, "response": r, "evidence": ev, "score": s}
        for (p, r), ev, s in zip(key, evidence, scores)
    ]
    write_jsonl_atomic(cache, rows)
    return scores


def judge_model(run: Path, k: int, judge_with: str | None) -> tuple[Path, str]:
    """The model that judges M_k's answers (its own; the run's M_K for `judge_with` = "K"; else the model directory
    `judge_with`) and the suffix that keeps its verdicts' cache apart from the own judge's."""
    if judge_with is None or judge_with == str(k):
        return run / f"m{k}", ""
    if judge_with.isdigit():
        return run / f"m{judge_with}", f"_by_m{judge_with}"
    path = Path(judge_with).resolve()
    if not (path / "config.json").is_file():
        raise SystemExit(f"--judge {judge_with}: neither a model number nor a model directory")
    return path, "_by_" + re.sub(r"\W+", "-", str(path)).strip("-")


def judge_name(judge_with: str) -> str:
    """How a `--judge` value is named in the printout: M_K for a model of the run, else the directory."""
    return f"M{judge_with}" if judge_with.isdigit() else judge_with


def verdicts(answers: list[dict], scores: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """(right, says_right) per item: the checker's grade and the judge's verdict (an invalid judgment says wrong,
    as it gives the loop no reason to prefer the answer)."""
    right = np.array([bool(r["correct"]) for r in answers])
    says = np.array([s is not None and s >= CORRECT_THRESHOLD for s in scores])
    return right, says


def answer_kind(row: dict) -> str:
    """What a reading_transfer answer is (`KINDS`): right, by the line its fact is on; else copied from an evidence
    line (the fact's own words in the wrong place, or the other entity's), a judge's score line, or other."""
    if row["correct"]:
        return f"right, fact on line {fact_line(row)}"
    return wrong_kind(row["response"], split_evidence(row["prompt"])[0])


def called_right_by_kind(
    runs: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per kind: how many answers of the runs are of it (`n`) and the share the judge called right, the runs'
    counts pooled, with a 95% interval from resampling each run's items. `runs`: (kinds, says_right) per run."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(kinds), size=(n_boot, len(kinds))) for kinds, _ in runs]
    out = {}
    for kind in KINDS:
        of_kind = [(kinds == kind, (kinds == kind) & says) for kinds, says in runs]
        n = sum(int(mask.sum()) for mask, _ in of_kind)
        if not n:
            continue
        called = sum(int(hit.sum()) for _, hit in of_kind)
        total = sum(mask[idx].sum(-1) for (mask, _), idx in zip(of_kind, draws))
        hits = sum(hit[idx].sum(-1) for (_, hit), idx in zip(of_kind, draws))
        with np.errstate(invalid="ignore", divide="ignore"):
            share = hits / total
        low, high = np.nanquantile(share, [0.025, 0.975])
        out[kind] = {"n": n, "value": called / n, "low": float(low), "high": float(high)}
    return out


def _metrics(right: np.ndarray, says: np.ndarray) -> dict[str, np.ndarray]:
    return {"agreement": (right == says).mean(-1), "balanced_accuracy": balanced_accuracy_of(right, says)}


def bootstrap(
    runs: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
    weights: Sequence[float],
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Σ weight · metric over the models of each run (e.g. (M_k, M1) with weights (1, −1)), mean over runs, with a
    95% interval from resampling every run's items (the same indices for all of a run's models: paired)."""
    rng = np.random.default_rng(seed)
    point: dict[str, list[float]] = {}
    boots: dict[str, list[np.ndarray]] = {}
    for models in runs:
        n = models[0][0].size
        idx = rng.integers(0, n, size=(n_boot, n))
        whole = [(w, _metrics(r, s)) for w, (r, s) in zip(weights, models, strict=True)]
        resampled = [(w, _metrics(r[idx], s[idx])) for w, (r, s) in zip(weights, models, strict=True)]
        for name in ("agreement", "balanced_accuracy"):
            point.setdefault(name, []).append(float(sum(w * m[name] for w, m in whole)))
            boots.setdefault(name, []).append(sum(w * m[name] for w, m in resampled))
    out = {}
    for name in point:
        with warnings.catch_warnings():  # a resample with no wrong (or no right) answer in every run: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            b = np.nanmean(np.stack(boots[name]), axis=0)
        low, high = np.nanquantile(b, [0.025, 0.975])
        out[name] = {"value": float(np.nanmean(point[name])), "low": float(low), "high": float(high)}
    return out


def summarise(
    grades: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]],
    lines: np.ndarray | None = None,
    kinds: dict[str, dict[int, np.ndarray]] | None = None,
) -> dict:
    """Per run and pooled: each model's agreement and balanced accuracy, and their change from M1. `lines`: per
    item, the evidence line that states its fact (every run answers the same items): the same split by line, since
    a judge that compares the answer with the first line only is right about the items whose fact is there.
    `kinds`: per run and model, each answer's `answer_kind`: the share of each kind called right."""
    ks = sorted(set.intersection(*(set(g) for g in grades.values())))
    first = ks[0]

    def block(names: list[str]) -> dict:
        per_run = [grades[name] for name in names]
        res = {}
        for k in ks:
            res[f"M{k}"] = bootstrap([[g[k]] for g in per_run], [1.0])
            if kinds is not None:
                res[f"M{k}"]["called_right_by_kind"] = called_right_by_kind(
                    [(kinds[name][k], grades[name][k][1]) for name in names]
                )
            if lines is not None:
                res[f"M{k}"]["by_fact_line"] = {
                    str(line): bootstrap(
                        [[(g[k][0][lines == line], g[k][1][lines == line])] for g in per_run], [1.0]
                    )
                    for line in sorted(set(lines.tolist()))
                }
            res[f"M{k}"]["hit_rate"] = float(np.mean([(g[k][1][g[k][0]]).mean() for g in per_run]))
            res[f"M{k}"]["rejection_rate"] = float(np.mean([(~g[k][1][~g[k][0]]).mean() for g in per_run]))
            if k != first:
                res[f"M{k}"][f"change_from_M{first}"] = bootstrap(
                    [[g[k], g[first]] for g in per_run], [1.0, -1.0]
                )
        return res

    return {
        "models": [f"M{k}" for k in ks],
        "runs": {name: block([name]) for name in grades},
        "pooled": block(list(grades)),
        # Per item: 1 when the judge agrees with the checker, so later summaries can pool runs item by item.
        "agree": {
            name: {f"M{k}": "".join("1" if a else "0" for a in g[k][0] == g[k][1]) for k in ks}
            for name, g in grades.items()
        },
    }


Grades = dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]


def _matched(grades: Grades, baseline: Grades) -> tuple[list[tuple[dict, dict]], list[int]]:
    """The i-th run with the i-th baseline run, and the models k every one of them has."""
    pairs = list(zip(grades.values(), baseline.values(), strict=True))
    return pairs, sorted(set.intersection(*(set(a) & set(b) for a, b in pairs)))


def versus(grades: Grades, baseline: Grades) -> dict:
    """Each run's change from M1 minus its baseline run's (the i-th against the i-th), paired per item."""
    pairs, ks = _matched(grades, baseline)
    first = ks[0]
    return {
        f"M{k}": bootstrap([[a[k], a[first], b[k], b[first]] for a, b in pairs], [1.0, -1.0, -1.0, 1.0])
        for k in ks
        if k != first
    }


def difference(grades: Grades, baseline: Grades) -> dict:
    """Each run's M_k minus its baseline run's M_k, paired per item: for runs whose M1s differ (another SFT)."""
    pairs, ks = _matched(grades, baseline)
    return {f"M{k}": bootstrap([[a[k], b[k]] for a, b in pairs], [1.0, -1.0]) for k in ks}


def print_table(summary: dict, title: str = "") -> None:
    for name, res in [*summary["runs"].items(), ("pooled", summary["pooled"])]:
        print(f"{title}{name}:")
        for m, r in res.items():
            text = f"  {m}: agreement {_pct(r['agreement'])}%, balanced {_pct(r['balanced_accuracy'])}"
            text += f" (hit {100 * r['hit_rate']:.1f}%, rejects {100 * r['rejection_rate']:.1f}%)"
            for line, iv in r.get("by_fact_line", {}).items():
                text += f"; fact on line {line}: balanced {_pct(iv['balanced_accuracy'])}"
            change = next((v for key, v in r.items() if key.startswith("change_from")), None)
            if change:
                text += f"; change: agreement {_pct(change['agreement'])}, balanced {_pct(change['balanced_accuracy'])}"
            print(text)
            if r.get("called_right_by_kind"):
                print("    called right: " + "; ".join(
                    f"{kind} {_pct(iv)}% of {iv['n']}" for kind, iv in r["called_right_by_kind"].items()
                ))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="srlm run directories of the evidence config")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--item-seed", type=int, default=ITEM_SEED)
    ap.add_argument(
        "--models", help="comma-separated k of M_k, -1 for the last (default: every finished one)"
    )
    ap.add_argument("--baseline", nargs="+", type=Path, default=[], help="one run per run, in the same order")
    ap.add_argument(
        "--judge-evidence", choices=("item", "retrieved"), default="item",
        help="item: the lines the actor read, in its order; retrieved: BM25's top k for question + response, in "
        "its order, as the loop's judge reads them (the asked entity's passage first)",
    )  # fmt: skip
    ap.add_argument(
        "--judge", metavar="K|DIR",
        help="judge every model's answers with the run's M_K (e.g. 1: did the judge change, or the answers it "
        "meets?) or with the model in DIR (another M1's judge on the same answers), instead of its own judge",
    )  # fmt: skip
    ap.add_argument(
        "--baseline-judge", metavar="K|DIR",
        help="with --judge: the judge it is compared with on the same answers (default: each model's own)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.baseline_judge is not None and args.judge is None:
        raise SystemExit("--baseline-judge: compares with --judge's verdicts; give --judge too")
    if args.baseline and len(args.baseline) != len(args.runs):
        raise SystemExit(f"--baseline: {len(args.baseline)} runs for {len(args.runs)}; give one per run")
    models = [int(k) for k in args.models.split(",")] if args.models else None

    item_lines: list[int] = []  # every run answers the same items: the evidence line of each item's fact
    kinds: dict[str, dict[int, np.ndarray]] = {}  # per run and model: each answer's kind
    # retrieved: per run and model, the share of answers whose judge reads the fact's passage first
    fact_first: dict[str, dict[str, float]] = {}
    suffix = "" if args.judge_evidence == "item" else "_retrieved"
    groundings: dict[Path, Grounding] = {}  # retrieved: per run, its retriever over corpus + fresh passages

    def grade(
        runs: list[Path], judge_with: str | None
    ) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
        out = {}
        for run in runs:
            cfg = load_job_config(LoopConfig, run / "config.toml")
            if not cfg.retrieval.judge:
                raise SystemExit(f"{run}: its judge reads no evidence (retrieval.judge = false)")
            answers = evaluate_run(run, args.n, args.item_seed, models)
            item_lines[:] = item_lines or [fact_line(r) for r in next(iter(answers.values()))]
            name = f"{run.parent.name}/{run.name}"
            out[name] = per_model = {}
            kinds[name] = {k: np.array([answer_kind(r) for r in rows]) for k, rows in answers.items()}
            for k, rows in answers.items():
                if args.judge_evidence == "item":
                    evidence = item_evidence(rows)
                else:
                    if run not in groundings:
                        groundings[run] = fresh_grounding(run, cfg, rows)
                    evidence = retrieved_evidence(groundings[run], rows)
                    facts = [ev[line - 1] for ev, line in zip(item_evidence(rows), map(fact_line, rows))]
                    first = np.mean([bool(ev) and ev[0] == fact for ev, fact in zip(evidence, facts)])
                    fact_first.setdefault(name, {})[f"M{k}"] = float(first)
                judge, by = judge_model(run, k, judge_with)
                cache = run / "eval" / f"reading_judge{suffix}_seed{args.item_seed}_n{args.n}_m{k}{by}.jsonl"
                per_model[k] = verdicts(rows, judge_answers(judge, rows, evidence, cfg, cache))
                print(f"  {run.name} M{k}: judge agrees on {np.mean(per_model[k][0] == per_model[k][1]):.1%}",
                      flush=True)  # fmt: skip
        return out

    grades = grade(args.runs, args.judge)
    other = args.judge and judge_name(args.judge)  # whose judge, if not each model's own
    who = f"{other}'s judge judging each model's" if other else "each model judging its own"
    read = "the item's evidence" if args.judge_evidence == "item" else "BM25's passages for question + answer"
    what = f"{who} greedy answers to fresh facts, with {read}, against the checker"
    # With retrieved evidence the line a fact is on depends on the answer, not the item: no split by line then.
    lines = np.array(item_lines) if args.judge_evidence == "item" else None
    summary = {
        **summary_header(
            what, n=args.n, item_seed=args.item_seed, judge_evidence=args.judge_evidence, judge=args.judge
        ),
        **summarise(grades, lines, kinds),
    }
    if fact_first:
        summary["judge_fact_first"] = fact_first
        print(f"judge's first evidence line is the fact's passage: {fact_first}")
    print_table(summary)
    if args.baseline:
        baseline = grade(args.baseline, args.judge)
        summary["baseline"] = summarise(baseline, lines, kinds)
        summary["versus_baseline"] = versus(grades, baseline)
        summary["minus_baseline"] = difference(grades, baseline)
        print_table(summary["baseline"], "baseline ")
        for m, r in summary["minus_baseline"].items():
            print(f"runs − baseline at {m}: agreement {_pct(r['agreement'])}, "
                  f"balanced {_pct(r['balanced_accuracy'])} points")  # fmt: skip
        for m, r in summary["versus_baseline"].items():
            print(f"runs − baseline, change to {m}: agreement {_pct(r['agreement'])}, "
                  f"balanced {_pct(r['balanced_accuracy'])} points")  # fmt: skip
    if args.judge is not None:
        # The same answers judged by another judge, each model's own by default: what differs is the judge alone.
        key = "own_judge" if args.baseline_judge is None else "baseline_judge"
        label = "own" if args.baseline_judge is None else judge_name(args.baseline_judge) + "'s"
        versus_grades = grade(args.runs, args.baseline_judge)
        summary[key] = summarise(versus_grades, lines, kinds)
        summary[f"{key}_minus_judge"] = difference(versus_grades, grades)
        print_table(summary[key], f"{label} judge ")
        for m, r in summary[f"{key}_minus_judge"].items():
            print(f"{label} judge − {other}'s, on {m}'s answers: agreement {_pct(r['agreement'])}, "
                  f"balanced {_pct(r['balanced_accuracy'])} points")  # fmt: skip
    if args.out:
        write_json_atomic(args.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
