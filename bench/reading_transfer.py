"""Did the loop teach the model to read evidence, or only the facts it trained on? (issue #15)

    python bench/reading_transfer.py RUN [RUN ...] [--n 1000] [--models 1,-1] [--baseline RUN ...]
        [--out FILE] [--plot PNG]

Every model of each run (M1, M2, ...) answers `n` questions about freshly invented facts, each with its evidence in
the prompt: `task_reading`'s reading items, the fact's passage beside a distractor's in the loop's evidence format
(`retrieval.k` lines). The names are new syllable names, never in the knowledge corpus, the SFT data or the loop's
prompts, and each item has its own, so the only way to answer is to copy from the evidence. A run's own held-out
evaluation has one question per held-out corpus fact (62 for the knowledge families); these items are as many as
asked for, so a gain can be measured on 1,000 prompts that no model has seen anything of.

Answers are greedy, at most `eval.max_new_tokens` tokens, graded by the task world's answer check of the item's
family. Accuracy is also split by the evidence line that states the fact: a model that reads scores both lines
alike, one that copies the first line (what BM25's order rewards in the loop) does not. Each model's answers are
kept in RUN/eval/reading_*.jsonl and reused, so a killed evaluation resumes. Intervals: percentile bootstrap over
items (2,000 resamples); a gain M_k − M1 is paired per item; pooled over runs by resampling the items within each
run (stratified), as `srlm experiment` pools seeds. With `--baseline`, each run is compared with its baseline run
(the same seed under another arm) item by item: every run answers the same items (`--item-seed`), so the
difference is paired. The JSON keeps every model's grade per item (`correct`), so its runs can be pooled item by
item later, after their directories are gone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import versions
from srlm_fast.config import load_job_config
from srlm_fast.eval.experiment_report import stratified_bootstrap
from srlm_fast.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.evaluation import greedy_answers
from srlm_fast.recipe.evidence import split_evidence
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.task_families import BY_NAME, answer_matches
from srlm_fast.recipe.task_reading import reading_items

#: Not a seed any run draws its SFT reading examples with (those use the run's seed, 0-2 in every experiment).
ITEM_SEED = 1000


def models_of(run: Path) -> list[int]:
    """The numbers k of the run's finished models M_k, k ≥ 1, in order."""
    ks = sorted(
        int(p.name[1:]) for p in run.glob("m*") if p.name[1:].isdigit() and (p / "config.json").is_file()
    )
    return [k for k in ks if k >= 1]


def answer_items(
    run: Path, k: int, items: list[tuple[str, str, str]], cfg: LoopConfig, cache: Path
) -> list[dict]:
    """M_k's graded greedy answers to the items, from `cache` when it holds exactly these items."""
    if cache.is_file():
        rows, errors = read_jsonl(cache, required=("family", "prompt", "answer", "correct"), on_error="skip")
        held = [(r["family"], r["prompt"], r["answer"]) for r in rows]
        if not errors and held == [tuple(x) for x in items]:
            return rows
        print(f"  {cache}: {'unreadable' if errors else 'holds other items'}, answering again", flush=True)
    policy = Policy.load(run / f"m{k}", device="cpu", dtype=cfg.model.dtype)
    try:
        responses = greedy_answers(cfg, policy, [prompt for _, prompt, _ in items])
    finally:
        policy.close()
    rows = [
        {"family": fam, "prompt": prompt, "answer": answer, "response": response,
         "correct": answer_matches(BY_NAME[fam].kind, answer, response)}
        for (fam, prompt, answer), response in zip(items, responses, strict=True)
    ]  # fmt: skip
    write_jsonl_atomic(cache, rows)
    return rows


def evaluate_run(run: Path, n: int, item_seed: int, models: list[int] | None = None) -> dict[int, list[dict]]:
    """{k: M_k's graded answers} for the models M_k named in `models` (-1: the last; None: every finished one)."""
    cfg = load_job_config(LoopConfig, run / "config.toml")
    items = reading_items(n, item_seed, cfg.retrieval.k)
    finished = models_of(run)
    ks = finished if models is None else sorted({finished[-1] if k == -1 else k for k in models})
    missing = sorted(set(ks) - set(finished))
    if missing:
        raise SystemExit(f"{run}: no finished model M{missing[0]}")
    out = {}
    for k in ks:
        cache = run / "eval" / f"reading_seed{item_seed}_n{n}_m{k}.jsonl"
        out[k] = answer_items(run, k, items, cfg, cache)
        print(f"  {run.name} M{k}: {np.mean([r['correct'] for r in out[k]]):.1%} of {n}", flush=True)
    return out


def fact_line(row: dict) -> int:
    """Which evidence line (1-based) of the item's prompt states its fact: the one that holds the answer."""
    return _fact_line(row["prompt"], row["answer"])


@functools.cache
def _fact_line(prompt: str, answer: str) -> int:
    passages, _ = split_evidence(prompt)
    return next(i for i, p in enumerate(passages, 1) if states_word(p, answer))


def states_word(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` as a whole word: how an evidence line is found to state an answer."""
    return word in re.findall(r"\w+", text)


def copies_a_line(response: str, passages: Sequence[str]) -> bool:
    """Whether the response is words of one of `passages` (as whole words, in order): an answer copied from an
    evidence line, the fact's or another's."""
    words = re.findall(r"\w+", response)
    if not words:
        return False
    return any(
        tokens[i : i + len(words)] == words
        for tokens in (re.findall(r"\w+", p) for p in passages)
        for i in range(len(tokens) - len(words) + 1)
    )


def wrong_kind(response: str, passages: Sequence[str]) -> str:
    """What a wrong answer is: copied from one of `passages`, a judge's score line, or other (the kinds
    bench/loop_judge.py and bench/reading_judge.py count)."""
    if copies_a_line(response, passages):
        return "wrong, copied"
    return "wrong, a score" if is_score_line(response) else "wrong, other"


@functools.cache
def _copies_a_line(prompt: str, response: str) -> bool:
    return copies_a_line(response, split_evidence(prompt)[0])


_SCORE_LINE = re.compile(r"\s*Score:\s*\d")


def is_score_line(response: str) -> bool:
    """A judge's output ("Score: 2") given as an answer: what an M1 that met evidence prompts only in its judge
    examples writes to one.

    Not `recipe.pairs.is_verdict` (the loop's rule: a valid 0-5 `Score:` line anywhere, as the judge parses it):
    this counts answers that start with `Score: <digit>`. The two differ on 726 of the evidence runs' 159,200
    answers and candidates ("Tabs\nScore: 1", "Score: 8"); every committed `score_lines` number uses this one."""
    return _SCORE_LINE.match(response) is not None


def _copied(rows: list[dict]) -> np.ndarray:
    return np.array([float(_copies_a_line(r["prompt"], r["response"])) for r in rows])


def _correct(rows: list[dict], family: str | None = None, line: int | None = None) -> np.ndarray:
    return np.array([
        float(r["correct"]) for r in rows
        if (family is None or r["family"] == family) and (line is None or fact_line(r) == line)
    ])  # fmt: skip


def summarise(answers: dict[str, dict[int, list[dict]]]) -> dict:
    """Per run and pooled over runs: each model's accuracy (overall and per family) and its gain over M1."""
    ks = sorted(set.intersection(*(set(a) for a in answers.values())))
    families = sorted({r["family"] for a in answers.values() for rows in a.values() for r in rows})
    lines = sorted({fact_line(r) for a in answers.values() for rows in a.values() for r in rows})
    out: dict = {"models": [f"M{k}" for k in ks], "runs": {}, "pooled": {}}

    def block(per_run: dict[str, dict[int, list[dict]]]) -> dict:
        first = ks[0]
        res = {}
        for k in ks:
            res[f"M{k}"] = {
                "accuracy": stratified_bootstrap([_correct(a[k]) for a in per_run.values()]).to_dict(),
                "by_family": {
                    f: stratified_bootstrap([_correct(a[k], f) for a in per_run.values()]).to_dict()
                    for f in families
                },
                # A reader finds the line about the asked entity; a model that copies a fixed line does not.
                "by_fact_line": {
                    str(i): stratified_bootstrap([_correct(a[k], line=i) for a in per_run.values()]).to_dict()
                    for i in lines
                },
                # Copying some evidence line is the format; copying the right one is reading.
                "copies_a_line": stratified_bootstrap([_copied(a[k]) for a in per_run.values()]).to_dict(),
                "score_lines": stratified_bootstrap(
                    [np.array([float(is_score_line(r["response"])) for r in a[k]]) for a in per_run.values()]
                ).to_dict(),
                "right_among_copies": stratified_bootstrap(
                    [_correct(a[k])[_copied(a[k]) == 1] for a in per_run.values()]
                ).to_dict(),
                f"gain_over_M{first}": stratified_bootstrap(
                    [_correct(a[k]) - _correct(a[first]) for a in per_run.values()]
                ).to_dict(),
            }
            if k != first:
                before = ks[ks.index(k) - 1]
                res[f"M{k}"]["gain_over_previous"] = stratified_bootstrap(
                    [_correct(a[k]) - _correct(a[before]) for a in per_run.values()]
                ).to_dict()
        return res

    for name, a in answers.items():
        out["runs"][name] = block({name: a})
    out["pooled"] = block(answers)
    # Each model's graded answers, one character per item in item order: a later summary can pool these runs with
    # others item by item (the cached answers live in the run directories, which are not kept).
    out["correct"] = {
        name: {f"M{k}": "".join("1" if r["correct"] else "0" for r in a[k]) for k in ks}
        for name, a in answers.items()
    }
    return out


def versus(answers: dict[str, dict[int, list[dict]]], baseline: dict[str, dict[int, list[dict]]]) -> dict:
    """Each run against its baseline run (the i-th against the i-th, e.g. the same seed under another judge), paired
    per item: for every model both have, the difference in accuracy and in gain over M1, pooled over the pairs."""
    pairs = list(zip(answers.values(), baseline.values(), strict=True))
    for a, b in pairs:
        if [r["prompt"] for r in a[min(a)]] != [r["prompt"] for r in b[min(b)]]:
            raise SystemExit("a run and its baseline answered different items (another retrieval.k?)")
    ks = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs)))
    first = ks[0]
    return {
        f"M{k}": {
            "accuracy_difference": stratified_bootstrap(
                [_correct(a[k]) - _correct(b[k]) for a, b in pairs]
            ).to_dict(),
            f"gain_over_M{first}_difference": stratified_bootstrap(
                [
                    (_correct(a[k]) - _correct(a[first])) - (_correct(b[k]) - _correct(b[first]))
                    for a, b in pairs
                ]
            ).to_dict(),
        }
        for k in ks
    }


def _pct(iv: dict) -> str:
    return f"{100 * iv['value']:.1f} [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]"


def print_table(summary: dict, title: str = "") -> None:
    first = summary["models"][0]
    for name, res in [*summary["runs"].items(), ("pooled", summary["pooled"])]:
        print(f"{title}{name}:")
        for m, r in res.items():
            fams = ", ".join(f"{f} {100 * iv['value']:.1f}%" for f, iv in r["by_family"].items())
            fams += "; fact on line " + ", ".join(
                f"{i}: {100 * iv['value']:.1f}%" for i, iv in r["by_fact_line"].items()
            )
            among = r["right_among_copies"]["value"]
            fams += f"; copies a line {100 * r['copies_a_line']['value']:.1f}%, right among those "
            fams += "–" if among is None else f"{100 * among:.1f}%"
            fams += f"; score lines {100 * r['score_lines']['value']:.1f}%"
            gain = _pct(r[f"gain_over_{first}"])
            print(f"  {m}: {_pct(r['accuracy'])}%  gain over {first} {gain} points  ({fams})")


def print_versus(res: dict) -> None:
    print("runs − baseline, paired per item:")
    for m, r in res.items():
        gain_key = next(k for k in r if k.startswith("gain_over"))
        print(
            f"  {m}: accuracy {_pct(r['accuracy_difference'])} points, {gain_key} {_pct(r[gain_key])} points"
        )


def band_plot(
    models: Sequence[str],
    bands: Sequence[tuple[str, Sequence[str], Sequence[dict], str | None]],
    path: Path,
    title: str,
    faint: Sequence[tuple[str, Sequence[float]]] = (),
) -> None:
    """Accuracy (%) per model: `bands` as (label, models it has, their intervals, colour or None) lines with their
    95% band, `faint` as (label, values per model) dashed lines without one (single runs beside their pool)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(models))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in faint:
        ax.plot(x, [100 * v for v in values], "o--", alpha=0.5, label=label)
    for label, ms, ivs, color in bands:
        xs = [list(models).index(m) for m in ms]
        (line,) = ax.plot(xs, [100 * iv["value"] for iv in ivs], "o-", color=color, label=label)
        ax.fill_between(xs, [100 * iv["low"] for iv in ivs], [100 * iv["high"] for iv in ivs],
                        color=line.get_color(), alpha=0.15)  # fmt: skip
    ax.set_xticks(x, models)
    ax.set_ylabel("accuracy on freshly invented facts (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(summary: dict, path: Path) -> None:
    models = summary["models"]
    faint = [(name, [res[m]["accuracy"]["value"] for m in models]) for name, res in summary["runs"].items()]
    lines = [(summary, "pooled", "black")]
    if "baseline" in summary:
        lines.append((summary["baseline"], f"baseline, pooled ({summary['baseline_label']})", "tab:red"))
    bands = []
    for res, label, color in lines:
        ms = [m for m in models if m in res["pooled"]]
        bands.append((label, ms, [res["pooled"][m]["accuracy"] for m in ms], color))
    title = f"reading transfer, {summary['n']} items per model (95% band: pooled)"
    band_plot(models, bands, path, title, faint)


def summary_header(what: str, **fields: Any) -> dict:
    """The fields every reading summary starts with: what it measures, when, with what, then `fields` (which
    items, which files)."""
    return {
        "what": what,
        "date": dt.date.today().isoformat(),
        "versions": versions(),
        "command": " ".join(sys.argv),
        **fields,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="srlm run directories of the knowledge families")
    ap.add_argument("--n", type=int, default=1000, help="reading items per model")
    ap.add_argument("--item-seed", type=int, default=ITEM_SEED)
    ap.add_argument("--models", help="comma-separated k of the models M_k to evaluate, -1 for the last "
                    "(default: every finished one)")  # fmt: skip
    ap.add_argument(
        "--baseline",
        nargs="+",
        type=Path,
        default=[],
        help="runs to compare against, one per run in the same order (e.g. the same seeds of another arm)",
    )
    ap.add_argument("--baseline-label", default="baseline", help="what the baseline runs are, for the plot")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plot", type=Path, help="PNG: accuracy per model, one line per run and the pooled band")
    args = ap.parse_args()
    if args.baseline and len(args.baseline) != len(args.runs):
        raise SystemExit(f"--baseline: {len(args.baseline)} runs for {len(args.runs)}; give one per run")
    for run in [*args.runs, *args.baseline]:
        if not (run / "config.toml").is_file() or not models_of(run):
            raise SystemExit(f"{run}: not a run directory with a finished M1")

    models = [int(k) for k in args.models.split(",")] if args.models else None

    def evaluate(runs: list[Path]) -> dict[str, dict[int, list[dict]]]:
        return {f"{r.parent.name}/{r.name}": evaluate_run(r, args.n, args.item_seed, models) for r in runs}

    answers = evaluate(args.runs)
    what = "greedy accuracy on freshly invented facts' questions with their evidence in the prompt"
    summary = {**summary_header(what, n=args.n, item_seed=args.item_seed), **summarise(answers)}
    print_table(summary)
    if args.baseline:
        baseline = evaluate(args.baseline)
        summary["baseline_label"] = args.baseline_label
        summary["baseline"] = summarise(baseline)
        summary["versus_baseline"] = versus(answers, baseline)
        print_table(summary["baseline"], "baseline ")
        print_versus(summary["versus_baseline"])
    if args.out:
        write_json_atomic(args.out, summary)
    if args.plot:
        plot(summary, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
