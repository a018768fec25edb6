"""Disjoint random subsets of an EFT file, by prompt (a prompt's judge examples stay together).

    python bench/split_eft.py eft.jsonl --prompts 300 --parts 2 [--seed 0] --out-prefix eft_300p

writes eft_300p_0.jsonl, eft_300p_1.jsonl, ...: part k holds the examples of prompts k·N .. (k+1)·N − 1 of the
prompts shuffled with `random.Random(seed)` (prompts are the `prompt_index` values `srlm eft build` writes, in
sorted order before the shuffle). Used to train judges on different data of the same size.

`--ift FILE --n-ift N` adds N instruction examples ({prompt, response} rows, e.g. a loop's `seed/ift.jsonl`) to
every part, different ones per part, drawn with the same seed; `--held-out TREES` leaves out those whose prompt is
an evaluation tree's. A model trained on judge examples alone answers every prompt with `Score: <n>`, its own
self-instruct prompts too: the paper's M1 is trained on both (IFT + EFT).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srlm_fast.io import read_jsonl, write_jsonl_atomic
from srlm_fast.recipe.eft import held_out_prompts, normalise_prompt


def split(rows: list[dict], prompts: int, parts: int, seed: int) -> list[list[dict]]:
    by_prompt: dict[int, list[dict]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_index"], []).append(r)
    keys = sorted(by_prompt)
    if prompts * parts > len(keys):
        raise SystemExit(
            f"{parts} parts of {prompts} prompts need {prompts * parts}; the file has {len(keys)}"
        )
    random.Random(seed).shuffle(keys)
    return [[r for k in keys[i * prompts : (i + 1) * prompts] for r in by_prompt[k]] for i in range(parts)]


def draw_ift(rows: list[dict], n: int, parts: int, seed: int, held_out: set[str]) -> list[list[dict]]:
    """`parts` disjoint draws of `n` instruction examples whose prompts are not in `held_out` (normalised)."""
    pool = [r for r in rows if normalise_prompt(r["prompt"]) not in held_out]
    if n * parts > len(pool):
        raise SystemExit(
            f"{parts} parts of {n} instruction examples need {n * parts}; {len(pool)} are usable"
        )
    random.Random(f"ift:{seed}").shuffle(pool)
    return [pool[i * n : (i + 1) * n] for i in range(parts)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eft", type=Path)
    ap.add_argument("--prompts", type=int, required=True)
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-prefix", required=True)
    ap.add_argument("--ift", type=Path, help="instruction examples to mix into every part")
    ap.add_argument("--n-ift", type=int, default=0)
    ap.add_argument("--held-out", type=Path, nargs="*", default=[], help="OpenAssistant tree files")
    args = ap.parse_args()
    rows, _ = read_jsonl(args.eft, required=("prompt", "response", "prompt_index"))
    parts = split(rows, args.prompts, args.parts, args.seed)
    if args.n_ift:
        if args.ift is None:
            raise SystemExit("--n-ift needs --ift FILE")
        held = held_out_prompts(args.held_out)
        ift, _ = read_jsonl(args.ift, required=("prompt", "response"))
        for part, extra in zip(parts, draw_ift(ift, args.n_ift, args.parts, args.seed, held)):
            part += extra
    for i, part in enumerate(parts):
        out = Path(f"{args.out_prefix}_{i}.jsonl")
        write_jsonl_atomic(out, part)
        print(f"{out}: {len(part)} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
