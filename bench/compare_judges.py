"""Two judges, or a judge and the length baseline, on the same human rankings: paired differences with intervals.

    python bench/compare_judges.py A.json [B.json ...] [--pool NAME=C.json,D.json ...] [--out FILE]

Each file is `bench/judge_smollm2.py` output (per-reply scores kept) on the same rankings file and trees, or a
loop's evaluation `RUN/eval/m<k>.json` (its `human_rankings_scores`, on the trees its RUN/config.toml names:
`eval.rankings`, the first `eval.limit`). For
every judge, and for the "longer is better" baseline, this prints the pairwise accuracy against the human ranks,
and for every pair of scorers their difference with a 95% bootstrap interval that resamples trees once for
both scorers (paired: the same trees, the same replies), so the interval is that of the difference itself.
A reply a judge could not score (too long for its context) counts as a tie for that judge, as in
`judge_agreement`; the comparison says how many there were. How much of a judge is length: the share of
human-ordered pairs it orders as the lengths do, and its accuracy where the humans prefer the shorter reply
(length's accuracy there is 0).

`--pool NAME=C.json,D.json` adds one scorer made of several runs, e.g. the same iteration's model from loops run
with different seeds: its accuracy is the mean of theirs on every resample, so its difference from another scorer
is the seed-averaged difference, with the trees resampled once for all of them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srlm_fast.config import read_toml
from srlm_fast.eval.judge_agreement import ranked_items, ranked_judgments, read_oasst_trees
from srlm_fast.eval.metrics import judge_agreement
from srlm_fast.io import write_json_atomic
from srlm_fast.recipe.evaluation import length_scores


def pairwise_accuracy(per_tree: Sequence, idx: Sequence[int]) -> float | None:
    return judge_agreement([per_tree[i] for i in idx]).pairwise_accuracy


def pooled_accuracy(runs: Sequence[Sequence], idx: Sequence[int]) -> float | None:
    """The mean pairwise accuracy of several runs' per-tree judgments of the same trees (None if any has none)."""
    accs = [pairwise_accuracy(per_tree, idx) for per_tree in runs]
    return None if any(a is None for a in accs) else sum(accs) / len(accs)


def paired_difference(a: Sequence, b: Sequence, n_boot: int = 2000, seed: int = 0) -> dict:
    """Pairwise accuracy of a minus that of b, in points, with a 95% CI. Each is one run's per-tree judgments
    of the same trees, or a tuple of such runs (a pool: the mean of their accuracies)."""
    a, b = _runs(a), _runs(b)
    n = len(a[0])
    full = range(n)
    rng = random.Random(seed)
    diffs = []
    for _ in range(n_boot):
        idx = [rng.randrange(n) for _ in range(n)]
        pa, pb = pooled_accuracy(a, idx), pooled_accuracy(b, idx)
        if pa is not None and pb is not None:
            diffs.append(100 * (pa - pb))
    diffs.sort()
    return {
        "difference": round(100 * (pooled_accuracy(a, full) - pooled_accuracy(b, full)), 1),
        "ci95": [
            round(diffs[int(0.025 * (len(diffs) - 1))], 1),
            round(diffs[int(0.975 * (len(diffs) - 1))], 1),
        ],
    }


def _runs(scorer: Sequence) -> tuple[Sequence, ...]:
    """A scorer as a tuple of runs: a pool is one already, a single run's per-tree judgments become one."""
    return scorer if isinstance(scorer, tuple) else (scorer,)


def length_share(per_tree: Sequence, lengths: Sequence) -> dict:
    """Over human-ordered pairs of replies of unequal length that the judge scores and does not tie: how often it
    orders them as their lengths do, and its accuracy on those where the humans prefer the shorter reply."""
    same = n = shorter_better = right_there = 0
    for judged, by_length in zip(per_tree, lengths):
        s, L, r = judged.scores, by_length.scores, judged.ranks
        for i, j in itertools.combinations(range(len(s)), 2):
            if r[i] == r[j] or L[i] == L[j] or s[i] is None or s[j] is None or s[i] == s[j]:
                continue
            n += 1
            same += (s[i] > s[j]) == (L[i] > L[j])
            if (L[i] > L[j]) != (r[i] < r[j]):  # rank 0 is best: the shorter reply is the better one
                shorter_better += 1
                right_there += (s[i] > s[j]) == (r[i] < r[j])
    return {"pairs": n, "orders_as_length": round(same / n, 3) if n else None,
            "shorter_better_pairs": shorter_better,
            "accuracy_where_shorter_is_better": round(right_there / shorter_better, 3) if shorter_better else None}  # fmt: skip


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _name(path: Path) -> str:
    """A loop's evaluations are all called m<k>.json: name them RUN/m<k>."""
    return f"{path.parent.parent.name}/{path.stem}" if path.parent.name == "eval" else path.stem


def _scores(path: Path, args: argparse.Namespace) -> tuple[str, int, list]:
    """(rankings file, number of trees (0: all), per-reply scores) of a bench/judge_smollm2.py file or a loop's
    evaluation; for the latter the trees are the run's `eval.rankings` and `eval.limit` (from RUN/config.toml),
    unless --rankings / --trees say otherwise."""
    r = json.loads(path.read_text())
    if "rankings" in r:
        return r["rankings"]["file"], r["rankings"]["n_trees"], r["rankings"]["scores"]
    if "human_rankings_scores" not in r:
        raise SystemExit(
            f"{path}: neither a bench/judge_smollm2.py result nor a loop evaluation with human rankings"
        )
    config = path.parent.parent / "config.toml"
    run_eval = read_toml(config).get("eval", {}) if config.is_file() else {}
    rankings = args.rankings or run_eval.get("rankings")
    n_trees = args.trees if args.trees is not None else run_eval.get("limit")
    if rankings is None or n_trees is None:
        raise SystemExit(
            f"{path}: no {config} to read eval.rankings and eval.limit from; give --rankings and --trees"
        )
    return str(rankings), n_trees, r["human_rankings_scores"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "runs", nargs="+", type=Path, help="bench/judge_smollm2.py JSON files or RUN/eval/m<k>.json"
    )
    ap.add_argument(
        "--rankings", help="for loop evaluations: the rankings file (default: the run's eval.rankings)"
    )
    ap.add_argument(
        "--trees", type=int, help="for loop evaluations: how many trees, 0 all (default: eval.limit)"
    )
    ap.add_argument(
        "--pool", action="append", default=[], metavar="NAME=A.json,B.json",
        help="one scorer made of several runs (e.g. seeds): the mean of their accuracies (repeatable)",
    )  # fmt: skip
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    runs = {}
    for p in args.runs:
        if _name(p) in runs:
            raise SystemExit(f"two files named {_name(p)}: rename one")
        runs[_name(p)] = _scores(p, args)
    pools, pool_files = {}, {}
    for spec in args.pool:
        name, _, files = spec.partition("=")
        members = [Path(f) for f in files.split(",") if f]
        if not name or len(members) < 2 or name in runs or name in pools:
            raise SystemExit(f"--pool {spec!r}: expected a new NAME=A.json,B.json with at least two files")
        pools[name] = [_scores(p, args) for p in members]
        pool_files[name] = [str(p) for p in members]
    every = [*runs.values(), *(m for members in pools.values() for m in members)]
    files = {(str(Path(file).resolve()), n) for file, n, _ in every}
    if len(files) != 1:
        raise SystemExit(f"the runs judged different trees: {sorted(files)}")
    # The file as given (a resolved path would name this machine's folders); 0 trees means all of them.
    rankings, limit, _ = every[0]
    trees = read_oasst_trees(rankings)[: limit or None]
    n_trees, n_replies = len(trees), len(ranked_items(trees))
    lengths = ranked_judgments(trees, length_scores(ranked_items(trees)))

    def judged(name: str, scores: list) -> list:
        if len(scores) != n_replies:
            raise SystemExit(f"{name}: {len(scores)} scores for the {n_replies} replies of {n_trees} trees "
                             "(check --rankings and --trees)")  # fmt: skip
        return ranked_judgments(trees, scores)

    scorers: dict = {"length baseline": lengths}
    unscored = {}
    for name, (_, _, scores) in runs.items():
        scorers[name] = judged(name, scores)
        unscored[name] = sum(s is None for s in scores)
    for name, members in pools.items():
        scorers[name] = tuple(judged(name, scores) for _, _, scores in members)
        unscored[name] = [sum(s is None for s in scores) for _, _, scores in members]

    out: dict = {
        "what": "judges vs the length baseline on the same trees, paired tree-bootstrap differences",
        "date": dt.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "rankings": rankings,
        "n_trees": n_trees,
        "unscored_replies": unscored,
        "pools": pool_files,
        "accuracy": {},
    }
    out["length_share"] = {}
    for name, scorer in scorers.items():
        acc = pooled_accuracy(_runs(scorer), range(n_trees))
        out["accuracy"][name] = round(100 * acc, 1)
        if name in pools:  # a pool's length share is its members'
            print(f"{name:>40}: pairwise accuracy {100 * acc:.1f}% (mean of {len(scorer)} runs)")
            continue
        share = out["length_share"][name] = length_share(scorer, lengths)
        print(f"{name:>40}: pairwise accuracy {100 * acc:.1f}%; orders {_pct(share['orders_as_length'])} of "
              f"pairs as their lengths; {_pct(share['accuracy_where_shorter_is_better'])} right where shorter "
              "is better")  # fmt: skip
    out["differences"] = {}
    for a, b in itertools.combinations(scorers, 2):
        d = paired_difference(scorers[b], scorers[a], args.n_boot)
        out["differences"][f"{b} - {a}"] = d
        print(f"{b} − {a}: {d['difference']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}] points")
    if args.out:
        write_json_atomic(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
