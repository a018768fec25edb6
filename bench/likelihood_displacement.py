"""Where DPO moves the probability of a loop's own pairs: M_t's and M_{t+1}'s log-probs of iteration t's chosen and
rejected responses, per task family and per what the checker says the pair teaches (issue #15).

    python bench/likelihood_displacement.py RUN [RUN ...] [--iterations 1,2] [--out FILE]

DPO raises the margin log p(chosen) − log p(rejected). It can do so while both fall, which moves probability onto
responses in neither (likelihood displacement). In the task world that is a third, often invented, answer: the
question this measures is whether `min` falls because DPO on `min`'s own pairs pushes mass onto other numbers.
M_t's log-probs are the iteration's `pairs.ref.jsonl`; M_{t+1}'s are computed here with the same tokenisation (the
run's DPO settings). Replayed SFT rows (`replay`) are left out. The checker is read here, after the fact.

Where the probability went: M_t and M_{t+1} each answer every pair's prompt greedily, and the answer is sorted as
the pair's chosen response, its rejected one, or another answer (right or wrong by the checker). For the pairs
whose chosen and rejected both fell, M_{t+1}'s answers say which answers gained.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import versions
from srlm_fast.config import load_job_config
from srlm_fast.eval.winrate import bootstrap_mean
from srlm_fast.io import read_jsonl, write_json_atomic
from srlm_fast.recipe import evaluation, tasks
from srlm_fast.recipe.config import LoopConfig
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.stage_checks import pair_outcome
from srlm_fast.recipe.stages import reference_settings
from srlm_fast.train.reference import compute_reference_logprobs


def _key(row: dict) -> tuple[str, str, str]:
    return row["prompt"], row["chosen"], row["rejected"]


DESTINATIONS = ("chosen", "rejected", "other, right", "other, wrong")


def destination(prompt: str, answer: str, chosen: str, rejected: str) -> str:
    """Which of `DESTINATIONS` a model's greedy `answer` to a pair's prompt is: the pair's chosen or rejected
    response (exact, up to surrounding whitespace), or another answer, right or wrong by the checker."""
    if answer.strip() == chosen.strip():
        return "chosen"
    if answer.strip() == rejected.strip():
        return "rejected"
    return "other, right" if tasks.check(prompt, answer).correct else "other, wrong"


def greedy_answers(run: Path, k: int, prompts: list[str], cfg: LoopConfig) -> dict[str, str]:
    """M_k's greedy answer to each prompt, as long as the loop lets a candidate be."""
    policy = Policy.load(run / f"m{k}", device="cpu", dtype=cfg.model.dtype)
    try:
        answers = evaluation.greedy_answers(cfg, policy, prompts, cfg.candidates.max_new_tokens)
    finally:
        policy.close()
    return dict(zip(prompts, answers, strict=True))


def pair_changes(run: Path, t: int) -> list[dict]:
    """Iteration t's pairs, each with its family, its checker outcome, the change of log p(chosen) and of
    log p(rejected) from M_t to M_{t+1} (`chosen`, `rejected`, nats), and the `destination` of M_t's and of
    M_{t+1}'s greedy answer to its prompt (`before`, `after`)."""
    cfg = load_job_config(LoopConfig, run / "config.toml")
    it = run / f"iter{t}"
    with tempfile.TemporaryDirectory() as tmp:
        out = compute_reference_logprobs(
            run / f"m{t + 1}",
            it / "pairs.jsonl",
            Path(tmp) / "after.jsonl",
            **reference_settings(cfg),
            device="cpu",
        )
        after = {_key(r): r for r in read_jsonl(out)[0]}
    # same settings as the reference: the same pairs dropped
    pairs = [r for r in read_jsonl(it / "pairs.ref.jsonl")[0] if not r.get("replay") and _key(r) in after]
    prompts = sorted({r["prompt"] for r in pairs})
    answer_before = greedy_answers(run, t, prompts, cfg)
    answer_after = greedy_answers(run, t + 1, prompts, cfg)
    rows = []
    for r in pairs:
        a = after[_key(r)]
        outcome, family = pair_outcome(r["prompt"], r["chosen"], r["rejected"])
        rows.append({
            "family": family or "no task", "outcome": outcome,
            "chosen": a["ref_chosen_logp"] - r["ref_chosen_logp"],
            "rejected": a["ref_rejected_logp"] - r["ref_rejected_logp"],
            "before": destination(r["prompt"], answer_before[r["prompt"]], r["chosen"], r["rejected"]),
            "after": destination(r["prompt"], answer_after[r["prompt"]], r["chosen"], r["rejected"]),
        })  # fmt: skip
    return rows


def greedy_right(row: dict, when: str) -> bool:
    """Whether the model's greedy answer (`when`: "before" or "after") to a pair's prompt is right: another right
    answer, or the pair's chosen or rejected one when the checker calls that one right."""
    d, outcome = row[when], row["outcome"]
    return (
        d == "other, right"
        or (d == "chosen" and outcome in ("right", "both_correct"))
        or (d == "rejected" and outcome in ("wrong", "both_correct"))
    )


def destinations(rows: list[dict]) -> dict:
    """The shares of M_t's (`before`) and M_{t+1}'s (`after`) greedy answers in each of `DESTINATIONS`, over all
    pairs and over the pairs whose chosen and rejected both fell; and per pair outcome, how many prompts' greedy
    answers went from right to wrong (`lost`) and from wrong to right (`won`) from M_t to M_{t+1}."""
    both = [r for r in rows if r["chosen"] < 0 and r["rejected"] < 0]
    flow: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"pairs": 0, "lost": 0, "won": 0})
    for r in rows:
        before, after = greedy_right(r, "before"), greedy_right(r, "after")
        f = flow[r["outcome"]]
        f["pairs"] += 1
        f["lost"] += before and not after
        f["won"] += after and not before

    def shares(group: list[dict], when: str) -> dict[str, float]:
        return {
            d: round(sum(r[when] == d for r in group) / len(group), 3) if group else 0.0 for d in DESTINATIONS
        }

    return {
        "all": {"n": len(rows), "before": shares(rows, "before"), "after": shares(rows, "after")},
        "both_fell": {"n": len(both), "before": shares(both, "before"), "after": shares(both, "after")},
        "right_by_outcome": dict(sorted(flow.items())),
    }


def summarise(rows: list[dict]) -> dict:
    """Mean change of log p(chosen), log p(rejected) and of their margin (nats), and the share of pairs whose
    chosen and rejected both lost probability; the chosen change and that share with 95% bootstrap intervals over
    pairs."""
    if not rows:
        return {"n": 0}

    def interval(values: list[float]) -> list[float]:
        ci = bootstrap_mean(values)
        return [round(ci.low, 3), round(ci.high, 3)]

    chosen = [r["chosen"] for r in rows]
    both = [float(r["chosen"] < 0 and r["rejected"] < 0) for r in rows]
    return {
        "n": len(rows),
        "d_logp_chosen": round(statistics.fmean(chosen), 3),
        "d_logp_chosen_ci95": interval(chosen),
        "d_logp_rejected": round(statistics.fmean(r["rejected"] for r in rows), 3),
        "d_margin": round(statistics.fmean(r["chosen"] - r["rejected"] for r in rows), 3),
        "chosen_fell": round(sum(r["chosen"] < 0 for r in rows) / len(rows), 3),
        "both_fell": round(statistics.fmean(both), 3),
        "both_fell_ci95": interval(both),
    }


def grouped(rows: list[dict], key: str) -> dict:
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for r in rows:
        groups[r[key]].append(r)
    return {k: summarise(v) for k, v in sorted(groups.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="srlm run directories (the task world)")
    ap.add_argument("--iterations", default="1", help="comma-separated iterations t (M_t → M_{t+1})")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    iterations = [int(t) for t in args.iterations.split(",")]

    out: dict = {
        "what": "change of log p(chosen) and log p(rejected) of an iteration's pairs from M_t to M_{t+1}",
        "date": dt.date.today().isoformat(),
        "versions": versions(),
        "command": " ".join(sys.argv),
        "runs": {},
    }
    for run in args.runs:
        for t in iterations:
            if not (run / f"m{t + 1}").is_dir():
                raise SystemExit(f"{run}: no m{t + 1} (iteration {t} not finished)")
            rows = pair_changes(run, t)
            name = f"{run.parent.name}/{run.name}/iter{t}"
            res = out["runs"][name] = {
                "all": summarise(rows), "by_outcome": grouped(rows, "outcome"), "by_family": grouped(rows, "family"),
                "greedy_answers": destinations(rows),
            }  # fmt: skip
            a = res["all"]
            (lo, hi), (both_lo, both_hi) = a["d_logp_chosen_ci95"], a["both_fell_ci95"]
            print(f"{name}: {a['n']} pairs; Δ log p chosen {a['d_logp_chosen']:+.2f} [{lo:+.2f}, {hi:+.2f}], "
                  f"rejected {a['d_logp_rejected']:+.2f}, margin {a['d_margin']:+.2f}; both fell in "
                  f"{a['both_fell']:.0%} [{both_lo:.0%}, {both_hi:.0%}]")  # fmt: skip
            d = res["greedy_answers"]["both_fell"]
            print(f"  greedy answer to the {d['n']} pairs where both fell, M_t -> M_t+1: "
                  + ", ".join(f"{k} {d['before'][k]:.0%} -> {d['after'][k]:.0%}" for k in DESTINATIONS))  # fmt: skip
            for fam, s in res["by_family"].items():
                print(f"  {fam:>12}: n {s['n']:>3}  chosen {s['d_logp_chosen']:+.2f}  rejected "
                      f"{s['d_logp_rejected']:+.2f}  both fell {s['both_fell']:.0%}")  # fmt: skip
    if args.out:
        write_json_atomic(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
