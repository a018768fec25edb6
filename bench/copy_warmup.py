"""Copy drills: a warm-up that teaches a from-scratch model to read its prompt before the task world's SFT.

The embedded default's 4M-parameter M1 answers "Which is larger, 37 or 82?" with a number that is not in the
prompt, and "Does the list ... contain 51?" at chance (docs/experiments.md, "Judge examples with the errors M1
makes"). Both need an attention head that finds a prompt token and copies it, and ~1,000 SFT steps over the mixed
seed data do not grow one. A drill has its answer in the prompt and nowhere else, in three kinds (numbers 1-99
or the task world's words):

    Copy: 61 13 91 65                       → 61 13 91 65       (copy)
    kitten=14 zebra=38 guitar=42. zebra=?   → 38                (associative recall)
    71 10 94 26 63. After 94?               → 26                (what follows: induction)

    python bench/copy_warmup.py write --n 24000 --seed 0 --out drills.jsonl     # SFT rows {prompt, response}
    srlm sft --model.init=RUN/m0 --data.train=drills.jsonl ...                  # the warm-up (README for flags)
    python bench/copy_warmup.py eval CHECKPOINT [--n 300 --seed 7]              # greedy exact match per kind

The drills use none of the task world's wordings, so the warm-up teaches reading, not the held-out tasks.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srlm_fast.io import write_jsonl_atomic
from srlm_fast.recipe.task_families import WORDS

KINDS = ("copy", "recall", "after")


def _items(rng: random.Random) -> list[str]:
    if rng.random() < 0.5:
        return [str(v) for v in rng.sample(range(1, 100), rng.randint(3, 7))]
    return rng.sample(list(WORDS), rng.randint(3, 6))


def drills(n: int, seed: int) -> list[dict[str, str]]:
    """`n` drills {prompt, response, kind}, the three kinds in turn."""
    rng = random.Random(f"drills:{seed}")
    out = []
    for i in range(n):
        kind, xs = KINDS[i % 3], _items(rng)
        if kind == "copy":
            prompt, answer = "Copy: " + " ".join(xs), " ".join(xs)
        elif kind == "recall":  # words are keys of numbers, numbers keys of words
            keys = (
                rng.sample(list(WORDS), len(xs))
                if xs[0].isdigit()
                else [str(v) for v in rng.sample(range(1, 100), len(xs))]
            )
            j = rng.randrange(len(xs))
            prompt, answer = " ".join(f"{k}={v}" for k, v in zip(keys, xs)) + f". {keys[j]}=?", xs[j]
        else:
            j = rng.randrange(len(xs) - 1)
            prompt, answer = " ".join(xs) + f". After {xs[j]}?", xs[j + 1]
        out.append({"prompt": prompt, "response": answer, "kind": kind})
    return out


def evaluate(checkpoint: str, n: int, seed: int) -> dict[str, float]:
    """Greedy exact match of `checkpoint` on `n` fresh drills, per kind."""
    from srlm_fast.recipe.policy import Policy

    rows = drills(n, seed)
    policy = Policy.load(checkpoint, device="cpu")
    try:
        outs = policy.generate([r["prompt"] for r in rows], n=1, temperature=0.0, max_new_tokens=24)
    finally:
        policy.close()
    hits = {k: [] for k in KINDS}
    for r, o in zip(rows, outs):
        hits[r["kind"]].append(o[0].strip() == r["response"])
    return {k: round(sum(v) / len(v), 3) for k, v in hits.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write drills as SFT rows")
    w.add_argument("--n", type=int, default=24000)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--out", required=True)
    e = sub.add_parser("eval", help="a checkpoint's greedy accuracy on fresh drills, per kind")
    e.add_argument("checkpoint")
    e.add_argument("--n", type=int, default=300)
    e.add_argument("--seed", type=int, default=7, help="another seed than the training drills'")
    args = ap.parse_args()
    if args.cmd == "write":
        write_jsonl_atomic(
            args.out, [{"prompt": r["prompt"], "response": r["response"]} for r in drills(args.n, args.seed)]
        )
        print(f"{args.n} drills -> {args.out}")
    else:
        print(
            json.dumps(
                {"checkpoint": args.checkpoint, "exact_match": evaluate(args.checkpoint, args.n, args.seed)}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
