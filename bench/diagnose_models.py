"""Where a loop's models stand, family by family: greedy checker accuracy on held-out task-world prompts and on an
iteration's self-instructed prompts, and how much the self-judge's scores vary within a prompt. The diagnostics
behind bench/results/self_rewarding_diagnostics-cpu.json (issue #15); the checker is read here, after the fact.

    python bench/diagnose_models.py CKPT[=LABEL] ... [--prompts RUN/iter2/prompts.jsonl] \
        [--judgments RUN/iter1/judgments.jsonl] [--candidates RUN/iter1/candidates.jsonl[=LABEL] ...] \
        [--n 1000] [--seed 0] [--out FILE --merge-key KEY]

Held-out accuracy on its own says whether a model improved; beside the accuracy on the self-instructed prompts it
says whether what DPO learned carries over from the prompts the loop trained on to the task distribution.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import device_name, versions
from srlm_fast.eval import experiment_report as ER
from srlm_fast.io import read_json, read_jsonl, write_json_atomic
from srlm_fast.recipe import pairs as P
from srlm_fast.recipe import tasks
from srlm_fast.recipe.experiment import model_evaluations
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.stage_checks import checked_pairs
from srlm_fast.recipe.task_families import BY_NAME


def accuracy_by_family(policy: Policy, prompts: list[str]) -> dict:
    """Greedy answers to `prompts` (each a task) graded by the checker: overall and per family, with counts."""
    answers = policy.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=32, seed=0)
    right: dict[str, list[bool]] = collections.defaultdict(list)
    for prompt, out in zip(prompts, answers):
        result = tasks.check(prompt, out[0])
        right[result.family].append(result.status == "correct")
    total = sum(sum(v) for v in right.values())
    return {
        "accuracy": total / max(1, len(prompts)),
        "n": len(prompts),
        "by_family": {f: {"accuracy": sum(v) / len(v), "n": len(v)} for f, v in sorted(right.items())},
    }


def votes_and_first(answers: Sequence[str]) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """The answers' vote counts, most voted first (`pairs.vote_key`), and each answer's first candidate index."""
    keys = [P.vote_key(a) for a in answers]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    return collections.Counter(keys).most_common(), first


def sampled_accuracy(
    policy: Policy, prompts: list[str], n: int, temperature: float = 0.7, top_p: float = 0.9
) -> dict:
    """n sampled answers per task prompt (the loop's candidate sampling): their accuracy (pass@1), pass@n, the
    accuracy of their most frequent answer, and how concentrated they are (the share of samples that give the
    most frequent answer). DPO towards a prompt's majority answer sharpens the distribution: the mode share and
    the sampled accuracy rise even where greedy accuracy (already close to the mode) cannot."""
    outs = policy.generate(prompts, n=n, temperature=temperature, top_p=top_p, max_new_tokens=32, seed=1)
    pass1 = pass_n = majority = mode_share = 0.0
    for prompt, answers in zip(prompts, outs):
        ok = [tasks.check(prompt, a).status == "correct" for a in answers]
        votes, first = votes_and_first(answers)
        top, count = votes[0]
        pass1 += sum(ok) / n
        pass_n += any(ok)
        majority += ok[first[top]]
        mode_share += count / n
    m = max(1, len(prompts))
    return {"n_samples": n, "temperature": temperature, "top_p": top_p, "pass_at_1": pass1 / m,
            "pass_at_n": pass_n / m, "majority_accuracy": majority / m, "mode_share": mode_share / m}  # fmt: skip


def judge_spread(judgments: Path) -> dict:
    """How far the self-judge's scores of one prompt's candidates lie apart, and its mean score of correct and of
    wrong candidates per family: a judge that reads the response spreads them; one that does not, does not."""
    spreads, by_family = [], collections.defaultdict(lambda: {"correct": [], "wrong": []})
    for row in read_jsonl(judgments, required=("prompt", "responses", "scores"))[0]:
        parsed = tasks.parse_prompt(row["prompt"])
        scored = [(r, s) for r, s in zip(row["responses"], row["scores"]) if s is not None]
        if parsed is None or len(scored) < 2:
            continue
        spreads.append(max(s for _, s in scored) - min(s for _, s in scored))
        for response, score in scored:
            ok = tasks.check(row["prompt"], response).status == "correct"
            by_family[parsed[0]]["correct" if ok else "wrong"].append(score)
    mean = lambda xs: statistics.fmean(xs) if xs else None
    return {
        "within_prompt_spread_median": statistics.median(spreads) if spreads else None,
        "within_prompt_spread_max": max(spreads) if spreads else None,
        "prompts": len(spreads),
        "mean_score_by_family": {
            f: {
                "correct": mean(d["correct"]),
                "wrong": mean(d["wrong"]),
                "n": len(d["correct"]) + len(d["wrong"]),
            }
            for f, d in sorted(by_family.items())
        },
    }


def _verdict(right: bool, other: bool) -> str:
    return {(True, False): "right", (False, True): "wrong", (False, False): "both_wrong"}.get(
        (right, other), "both_right"
    )


def vote_and_judge_pairs(judgments: Path) -> dict:
    """Whether self-consistency would make better pairs than the self-judge on one iteration's candidates (graded
    here, after the fact): the majority answer's accuracy beside pass@1, the checker's verdicts on the pairs
    "most-voted vs least-voted answer" (all, and with a strict majority), and its verdicts on the loop's own pairs
    of that judgment file (`pairs.make_pairs` with the default settings, graded by `checked_pairs`)."""
    rows = read_jsonl(judgments, required=("prompt", "responses", "scores"))[0]
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    pass1 = majority = n = 0
    for row in rows:
        responses = row["responses"]
        if not responses or tasks.parse_prompt(row["prompt"]) is None:
            continue
        ok = [tasks.check(row["prompt"], x).status == "correct" for x in responses]
        n += 1
        pass1 += sum(ok) / len(ok)
        votes, first = votes_and_first(responses)
        top = first[votes[0][0]]
        majority += ok[top]
        if votes[0][1] > votes[-1][1]:
            verdict = _verdict(ok[top], ok[first[votes[-1][0]]])
            counts["vote"][verdict] += 1
            if votes[0][1] >= len(responses) / 2:
                counts["vote_strict_majority"][verdict] += 1
    judged, _ = P.make_pairs(P.PromptCandidates(r["prompt"], r["responses"], r["scores"]) for r in rows)
    return {"tasks": n, "pass_at_1": pass1 / max(1, n), "majority_accuracy": majority / max(1, n),
            "pairs": {**{k: dict(v) for k, v in counts.items()}, "judge": checked_pairs(judged)}}  # fmt: skip


def prompt_stats(prompts: list[str]) -> dict:
    """What a prompt set asks, beside the task distribution: the families, the share of membership questions whose
    answer is "no", and the share of all numbers in them that are the ten most frequent values."""
    family_of = [tasks.parse_prompt(p)[0] for p in prompts]
    families = collections.Counter(family_of)
    member = [p for p, f in zip(prompts, family_of) if f == "member"]
    numbers = collections.Counter(n for p in prompts for n in re.findall(r"\d+", p))
    return {
        "n": len(prompts),
        "families": dict(families.most_common()),
        "member_answer_no": sum(tasks.check(p, "no").status == "correct" for p in member)
        / max(1, len(member)),
        "distinct_numbers": len(numbers),
        "top10_number_share": sum(c for _, c in numbers.most_common(10)) / max(1, sum(numbers.values())),
    }


ANSWER_SOURCES = ("right", "other_prompt_number", "number_not_in_prompt", "not_one_number")


def answer_sources(candidates: Path) -> dict[str, dict]:
    """Per family whose answer is one number: the share of an iteration's candidates that give the right number,
    another number of the prompt, a number that is not in the prompt, or not exactly one number. For the
    selection families (larger, max, min) a number not in the prompt is invented: M1 answers most `max` prompts
    so, and `min` drifts that way over the iterations (why is open: the both-wrong `max` pairs are not the main
    cause, see the ablations in docs/experiments.md)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in read_jsonl(candidates, required=("prompt", "responses"))[0]:
        parsed = tasks.parse_prompt(row["prompt"])
        if parsed is None or BY_NAME[parsed[0]].kind != "number":
            continue
        family, _, answer = parsed
        in_prompt = {int(x) for x in re.findall(r"-?\d+", row["prompt"])}
        for response in row["responses"]:
            numbers = [int(x) for x in re.findall(r"-?\d+", response)]
            if len(numbers) != 1:
                source = "not_one_number"
            elif numbers[0] == int(answer):
                source = "right"
            else:
                source = "other_prompt_number" if numbers[0] in in_prompt else "number_not_in_prompt"
            counts[family][source] += 1
    out = {}
    for family, c in sorted(counts.items()):
        n = sum(c.values())
        out[family] = {"n": n, **{k: c[k] / n for k in ANSWER_SOURCES}}
    return out


def labelled(specs: Sequence[str]) -> list[tuple[Path, str]]:
    """PATH[=LABEL] arguments as (path, label), the path itself where no label is given."""
    return [(Path(path), label or path) for path, _, label in (spec.partition("=") for spec in specs)]


def run_gains(run_dir: Path) -> dict:
    """A run's held-out accuracy per model (its eval/m<k>.json) and each model's gain over M1 with a paired 95%
    bootstrap interval over the prompts."""
    models = model_evaluations(run_dir)
    first = ER.outcomes(models[0], "correct") if models else None
    out = {}
    for m in models:
        now = ER.outcomes(m, "correct")
        gain = (
            ER.stratified_bootstrap([now - first]).to_dict()
            if now is not None and first is not None
            else None
        )
        out[m["model"]] = {
            "accuracy": m["task_accuracy"],
            "gain_over_m1": gain,
            "by_family": m.get("by_family"),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", help="checkpoint directory, optionally =LABEL")
    ap.add_argument(
        "--prompts", help="an iteration's prompts.jsonl: accuracy on its prompts that are tasks too"
    )
    ap.add_argument("--judgments", help="an iteration's judgments.jsonl: the self-judge's score spread")
    ap.add_argument("--runs", nargs="*", default=[], help="run directories: accuracy per model, gain over M1")
    ap.add_argument("--candidates", nargs="*", default=[], help="iterations' candidates.jsonl, optionally "
                    "=LABEL: per family, where the candidates' numbers come from (answer_sources)")  # fmt: skip
    ap.add_argument("--n", type=int, default=1000, help="held-out task-world prompts")
    ap.add_argument("--samples", type=int, default=0, help="also sample this many answers per held-out prompt "
                    "(T=0.7, top-p 0.9): sampled pass@1, pass@N, majority accuracy and mode share")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="of the held-out prompts (a run's seed)")
    ap.add_argument("--out", help="JSON results file; with --merge-key the result goes under that key")
    ap.add_argument("--merge-key", help="key of this result in --out (other keys are kept)")
    args = ap.parse_args()

    heldout = [t.prompt for t in tasks.eval_prompts(args.n, args.seed)]
    selfinstructed = []
    if args.prompts:
        selfinstructed = [
            r["prompt"]
            for r in read_jsonl(args.prompts, required=("prompt",))[0]
            if tasks.parse_prompt(r["prompt"])
        ]
    models = {}
    for spec in args.checkpoints:
        path, _, label = spec.partition("=")
        policy = Policy.load(path)
        models[label or path] = {"checkpoint": path, "heldout": accuracy_by_family(policy, heldout)}
        if selfinstructed:
            models[label or path]["selfinstructed"] = accuracy_by_family(policy, selfinstructed)
        if args.samples:
            models[label or path]["sampled"] = sampled_accuracy(policy, heldout, args.samples)
        policy.close()
        row = models[label or path]
        line = f"{label or path:>28} held-out {row['heldout']['accuracy']:6.1%}"
        if args.samples:
            sm = row["sampled"]
            line += (f"   sampled pass@1 {sm['pass_at_1']:6.1%} pass@{args.samples} {sm['pass_at_n']:6.1%} "
                     f"majority {sm['majority_accuracy']:6.1%} mode share {sm['mode_share']:5.2f}")  # fmt: skip
        if selfinstructed:
            line += f"   self-instructed ({len(selfinstructed)}) {row['selfinstructed']['accuracy']:6.1%}"
        print(line, " ".join(f"{f}={v['accuracy']:.2f}" for f, v in row["heldout"]["by_family"].items()))
    result = {"command": "python " + " ".join(sys.argv), "models": models, "prompts_file": args.prompts}
    if selfinstructed:
        result["prompts"] = {"heldout": prompt_stats(heldout), "selfinstructed": prompt_stats(selfinstructed)}
        for name, st in result["prompts"].items():
            print(f"{name} prompts: member answer 'no' {st['member_answer_no']:.0%}, "
                  f"top-10 numbers {st['top10_number_share']:.0%} of {st['distinct_numbers']} distinct")  # fmt: skip
    if args.runs:
        result["runs"] = {label: run_gains(path) for path, label in labelled(args.runs)}
        for label, gains in result["runs"].items():
            for model, g in gains.items():
                iv = g["gain_over_m1"]
                print(f"{label:>24} {model}: {g['accuracy']:6.1%}  gain {100 * iv['value']:+.1f} "
                      f"[{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]")  # fmt: skip
    if args.candidates:
        result["answer_sources"] = {label: answer_sources(path) for path, label in labelled(args.candidates)}
        for label, sources in result["answer_sources"].items():
            for family, v in sources.items():
                shares = " ".join(f"{k} {v[k]:.2f}" for k in ANSWER_SOURCES)
                print(f"{label:>24} {family:>12} ({v['n']:5d}): {shares}")
    if args.judgments:
        result["judge"] = judge_spread(Path(args.judgments))
        j = result["judge"]
        print(
            f"judge: within-prompt score spread median {j['within_prompt_spread_median']}, max {j['within_prompt_spread_max']}"
        )
        v = result["votes"] = vote_and_judge_pairs(Path(args.judgments))
        print(
            f"{v['tasks']} task prompts: pass@1 {v['pass_at_1']:.3f}, majority answer {v['majority_accuracy']:.3f}"
        )
        for kind, verdicts in v["pairs"].items():
            print(f"  {kind} pairs: {verdicts}")
    if args.out:
        out = Path(args.out)
        doc = read_json(out) if out.exists() else {}
        doc.update(
            name="self_rewarding_diagnostics", device=device_name(torch.device("cpu")), versions=versions()
        )
        doc["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        doc.setdefault("results", {})[args.merge_key or "default"] = result
        write_json_atomic(out, doc)


if __name__ == "__main__":
    main()
