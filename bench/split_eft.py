"""Disjoint random subsets of an EFT file, by prompt (a prompt's judge examples stay together).

    python bench/split_eft.py eft.jsonl --prompts 300 --parts 2 [--seed 0] --out-prefix eft_300p

writes eft_300p_0.jsonl, eft_300p_1.jsonl, ...: part k holds the examples of prompts k·N .. (k+1)·N − 1 of the
prompts shuffled with `random.Random(seed)` (prompts are the `prompt_index` values `srlm eft build` writes, in
sorted order before the shuffle). Used to train judges on different data of the same size.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srlm_fast.io import read_jsonl, write_jsonl_atomic


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eft", type=Path)
    ap.add_argument("--prompts", type=int, required=True)
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-prefix", required=True)
    args = ap.parse_args()
    rows, _ = read_jsonl(args.eft, required=("prompt", "response", "prompt_index"))
    for i, part in enumerate(split(rows, args.prompts, args.parts, args.seed)):
        out = Path(f"{args.out_prefix}_{i}.jsonl")
        write_jsonl_atomic(out, part)
        print(f"{out}: {len(part)} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
