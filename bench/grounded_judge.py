"""A checkpoint's judge with and without retrieved evidence on the task world's knowledge questions.

    python bench/grounded_judge.py --checkpoint DIR [--rubric compact|full] [--questions 150] [--split all|eval]
                                   [--k 2] [--out FILE]

Issue #16 asks whether evidence lets the judge check answers: the grounded judge's agreement with the checker on
knowledge prompts against the ungrounded judge's. This measures the judge alone, outside the loop, on any
checkpoint (a real pretrained one in particular: the 4M-parameter default does not read evidence at all).

Items: knowledge questions (`kb_capital`, `kb_river`: invented lands and rivers whose facts exist only in the task
world's corpus, recipe/task_knowledge.py), one wording each, each with its right answer and one wrong answer of the
family (a decoy city that is no fact's answer; a length off by 1-3 or 10 km), or with `--wrong other` another
training fact's answer (`task_eft.blind_answer`): the error of an actor that copies the wrong evidence line, which
the judge's retrieved evidence then states about another entity. `--split all` takes every fact (for a
model that never trained on the task world, every fact is unseen); `eval` only the held-out ones.

Conditions, each in the judge's `expected` mode (greedy up to `Score:`, then the probability-weighted digit):
    ungrounded  the rubric (`--rubric`: compact, the default loop's; full, the paper-style one of real models)
    grounded    its grounded variant (`judge.GROUNDED_VARIANT`) with the top-k BM25 passages for question +
                response, as the loop's `retrieval.judge` retrieves them (`Grounding.judge_evidence`)
    gold        the grounded variant with the fact's own passage alone: reading without retrieval's errors

Metrics per condition: agreement (score >= 3 exactly when the checker says correct, over both answers of every
question), pairwise accuracy (the right answer scored above the wrong one; ties count half) and the mean score of
right and wrong answers; the differences grounded − ungrounded and gold − ungrounded, paired by question. All with
95% bootstrap intervals over questions. Per-item scores are kept, so every number can be recomputed.

`--baseline FILE` (this script's output for another checkpoint, on the same questions): also the difference between
this checkpoint's grounded judge and that one's ungrounded judge, paired by question. That compares two trained
judges, each judging the way it was trained (the loop's `retrieval.judge` on and off), rather than one judge with
and without the evidence it was or was not trained to read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_name, versions
from srlm_fast.eval.judge_intervals import bootstrap_intervals
from srlm_fast.io import read_json, write_json_atomic
from srlm_fast.recipe import tasks
from srlm_fast.recipe.config import JudgeSpec
from srlm_fast.recipe.evaluation import judge_items
from srlm_fast.recipe.grounding import Grounding
from srlm_fast.recipe.judge import CORRECT_THRESHOLD, GROUNDED_VARIANT
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.task_eft import blind_answer
from srlm_fast.recipe.task_families import BY_NAME, KNOWLEDGE_FAMILY_NAMES
from srlm_fast.recipe.task_knowledge import corpus_rows, passage_id
from srlm_fast.retrieval.corpus import Passage
from srlm_fast.retrieval.index import new_retriever

CONDITIONS = ("ungrounded", "grounded", "gold")


def knowledge_questions(n: int, split: str, seed: int) -> list[tasks.Task]:
    """n knowledge tasks, one wording each: every fact (`all`, shuffled) or the held-out ones (`eval`)."""
    if split == "eval":
        return tasks.eval_prompts(n, seed, KNOWLEDGE_FAMILY_NAMES)
    rng = random.Random(f"grounded-judge:{seed}")
    facts = sorted(tasks.knowledge_facts(), key=lambda f: (f[0].name, f[1]))  # by family, then entity
    out = [tasks.make_task(fam, fields, rng.randrange(len(fam.templates))) for fam, _, fields in facts]
    rng.shuffle(out)
    return out[:n]


def wrong_answer(task: tasks.Task, rng: random.Random, kind: str = "near") -> str:
    """A wrong answer for `task` (`near`: the family's; `other`: another fact's answer), redrawn until the checker
    calls it wrong."""
    fam = BY_NAME[task.family]
    for _ in range(20):
        if kind == "other":
            answer = blind_answer(task, rng)
        else:
            answer = fam.wrong(dict(task.params), task.answer, rng)
        if not tasks.check(task.prompt, answer).correct:
            return answer
    raise RuntimeError(f"no wrong answer found for {task.prompt!r}")


@functools.cache
def _corpus_texts() -> dict[str, str]:
    return {r["id"]: r["text"] for r in corpus_rows()}


def gold_passage(task: tasks.Task) -> str:
    """The knowledge corpus passage that states `task`'s fact."""
    params = dict(task.params)
    return _corpus_texts()[passage_id(task.family, params.get("place") or params["river"])]


def condition_metrics(
    right: Sequence[float | None], wrong: Sequence[float | None], idx: Sequence[int]
) -> dict:
    """Agreement and pairwise accuracy over the questions `idx` (an unscored answer counts as disagreeing and as a
    lost pair)."""
    agree = pairs = 0.0
    for i in idx:
        r, w = right[i], wrong[i]
        agree += (r is not None and r >= CORRECT_THRESHOLD) + (w is not None and w < CORRECT_THRESHOLD)
        if r is not None and w is not None:
            pairs += 1.0 if r > w else 0.5 if r == w else 0.0
    n = len(idx)
    return {"agreement": agree / (2 * n), "pairwise_accuracy": pairs / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--rubric", choices=sorted(GROUNDED_VARIANT), default="compact")
    ap.add_argument("--questions", type=int, default=150)
    ap.add_argument("--split", choices=("all", "eval"), default="all")
    ap.add_argument("--wrong", choices=("near", "other"), default="near",
                    help="near: the family's wrong answer (a decoy city, a length off by a few km); other: another "
                    "fact's answer")  # fmt: skip
    ap.add_argument("--k", type=int, default=2, help="retrieved passages per judged answer")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="judge's greedy text before `Score:`")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--baseline", help="another checkpoint's results on the same questions (see the docstring)"
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    template = {c: args.rubric if c == "ungrounded" else GROUNDED_VARIANT[args.rubric] for c in CONDITIONS}
    questions = knowledge_questions(args.questions, args.split, args.seed)
    rng = random.Random(f"grounded-judge-wrong:{args.seed}")
    answers = [(q.answer, wrong_answer(q, rng, args.wrong)) for q in questions]
    retriever = new_retriever("bm25")
    retriever.index([Passage(**r) for r in corpus_rows()])
    grounding = Grounding(retriever, k=args.k, max_words=64)
    items = [(q.prompt, a) for q, pair in zip(questions, answers) for a in pair]  # right, wrong, right, ...
    evidence = {
        "ungrounded": None,
        "grounded": grounding.judge_evidence(items),
        "gold": [[gold_passage(q)] for q in questions for _ in range(2)],
    }
    gold_texts = [e[0] for e in evidence["gold"]]
    retrieved_gold = sum(g in ev for g, ev in zip(gold_texts, evidence["grounded"])) / len(items)

    out: dict = {
        "what": "judge with and without retrieved evidence on knowledge questions (agreement with the checker)",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device_name(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "checkpoint": args.checkpoint,
        "command": "python " + " ".join(sys.argv),
        "questions": len(questions),
        "split": args.split,
        "wrong": args.wrong,
        "families": dict(sorted(Counter(q.family for q in questions).items())),
        "retrieval": {"kind": "bm25", "k": args.k, "gold_passage_retrieved": retrieved_gold},
        "judge": {"mode": "expected", "max_new_tokens": args.max_new_tokens},
        "bootstrap": {"n_boot": args.n_boot, "seed": args.seed, "unit": "question"},
        "conditions": {},
    }
    policy = Policy.load(args.checkpoint, device="cpu")
    scores: dict[str, tuple[list, list]] = {}
    for cond in CONDITIONS:
        spec = JudgeSpec(mode="expected", template=template[cond], max_new_tokens=args.max_new_tokens)
        xs = items if evidence[cond] is None else [(*x, ev) for x, ev in zip(items, evidence[cond])]
        t0 = time.perf_counter()
        with policy.progress(f"judge, {cond}"):
            s = [r.score for r in judge_items(policy, spec, xs, args.seed)]
        secs = time.perf_counter() - t0
        right, wrong = s[0::2], s[1::2]
        scores[cond] = (right, wrong)
        n = len(questions)

        def metrics(idx: Sequence[int], right=right, wrong=wrong) -> dict:
            return condition_metrics(right, wrong, idx)

        valid_r, valid_w = [x for x in right if x is not None], [x for x in wrong if x is not None]
        out["conditions"][cond] = {
            "template": template[cond],
            "seconds": round(secs, 1),
            **metrics(range(n)),
            "ci95": bootstrap_intervals(
                n, metrics, ("agreement", "pairwise_accuracy"), args.n_boot, args.seed
            ),
            "mean_score_right": statistics.fmean(valid_r) if valid_r else None,
            "mean_score_wrong": statistics.fmean(valid_w) if valid_w else None,
            "unscored": s.count(None),
            "scores_right": right,
            "scores_wrong": wrong,
        }
        write_json_atomic(args.out, out)
        c = out["conditions"][cond]
        print(f"{cond:10s} agreement {c['agreement']:.3f} {c['ci95']['agreement']}  pairwise "
              f"{c['pairwise_accuracy']:.3f} {c['ci95']['pairwise_accuracy']}  ({secs:.0f} s)")  # fmt: skip
    n = len(questions)
    for cond in ("grounded", "gold"):

        def diff(idx: Sequence[int], cond=cond) -> dict:
            a, b = condition_metrics(*scores[cond], idx), condition_metrics(*scores["ungrounded"], idx)
            return {k: a[k] - b[k] for k in a}

        out[f"{cond}_minus_ungrounded"] = {
            **diff(range(n)),
            "ci95": bootstrap_intervals(n, diff, ("agreement", "pairwise_accuracy"), args.n_boot, args.seed),
        }
        d = out[f"{cond}_minus_ungrounded"]
        print(f"{cond} - ungrounded: agreement {d['agreement']:+.3f} {d['ci95']['agreement']}, "
              f"pairwise {d['pairwise_accuracy']:+.3f} {d['ci95']['pairwise_accuracy']}")  # fmt: skip
    if args.baseline:
        base = read_json(args.baseline)
        same = ("questions", "split", "bootstrap", "wrong")
        if [base.get(k, "near" if k == "wrong" else None) for k in same] != [out[k] for k in same]:
            raise SystemExit(f"{args.baseline}: judged other questions (questions, split or seed differ)")
        theirs = base["conditions"]["ungrounded"]

        def versus(idx: Sequence[int]) -> dict:
            a = condition_metrics(*scores["grounded"], idx)
            b = condition_metrics(theirs["scores_right"], theirs["scores_wrong"], idx)
            return {k: a[k] - b[k] for k in a}

        out["grounded_minus_baseline_ungrounded"] = {
            "baseline": args.baseline,
            **versus(range(n)),
            "ci95": bootstrap_intervals(
                n, versus, ("agreement", "pairwise_accuracy"), args.n_boot, args.seed
            ),
        }
        d = out["grounded_minus_baseline_ungrounded"]
        print(f"grounded - baseline's ungrounded: agreement {d['agreement']:+.3f} {d['ci95']['agreement']}")
    out["prompts_skipped_too_long"] = policy.skipped_too_long
    write_json_atomic(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
