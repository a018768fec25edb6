"""Can a checkpoint still self-instruct? Few-shot task prompts as the loop builds them, and what comes back.

    python bench/selfinstruct_probe.py CHECKPOINT [CHECKPOINT ...] [--n 24] [--out FILE]

Builds `--n` few-shot prompts (`selfinstruct.build_fewshot_prompt`, 8 shots) from the OpenAssistant seed prompts
(the best-ranked reply's prompt, as `seed_data.source = "files"` reads them), samples one completion each with the
loop's settings (T 0.6, top-p 0.9, 96 new tokens, the SmolLM2 config's), and counts the completions that
are a score line (`Score: n`, what a judge-only model writes) and the new tasks that pass the loop's filters
(`selfinstruct.filter_reason` with the SmolLM2 config's `max_words = 80`; no dedup across samples). A checkpoint
trained on judge examples alone scores everything; one that can still write tasks keeps most of them.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srlm_fast.io import write_json_atomic
from srlm_fast.recipe.judge import parse_score
from srlm_fast.recipe.policy import Policy
from srlm_fast.recipe.seed_data import load_ift, oasst_seed_paths
from srlm_fast.recipe.selfinstruct import (
    SelfInstructConfig,
    build_fewshot_prompt,
    filter_reason,
    parse_generated,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()

    seeds = [e.prompt for e in load_ift(oasst_seed_paths(DATA / "seed"))[0]][:300]
    rng = random.Random(args.seed)
    prompts = [build_fewshot_prompt(seeds, [], rng) for _ in range(args.n)]
    config = SelfInstructConfig(max_words=80)
    out = {"n_prompts": args.n, "seed": args.seed, "checkpoints": {}}
    for ckpt in args.checkpoints:
        policy = Policy.load(ckpt, device="cpu")
        texts = [
            c[0]
            for c in policy.generate(prompts, temperature=0.6, top_p=0.9, max_new_tokens=96, seed=args.seed)
        ]
        policy.close()
        reasons = Counter(filter_reason(parse_generated(t), config) or "kept" for t in texts)
        scores = sum(parse_score(t) is not None for t in texts)
        out["checkpoints"][ckpt] = {"score_lines": scores, "filter": dict(reasons), "examples": texts[:4]}
        print(f"{ckpt}: {scores}/{args.n} completions are a score line; {reasons['kept']}/{args.n} tasks kept "
              f"({dict(reasons)})")  # fmt: skip
    if args.out:
        write_json_atomic(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
