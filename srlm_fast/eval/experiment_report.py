"""The report of `srlm experiment`: one table over arms × seeds with bootstrap intervals, and PNG plots.

Statistics. Every model is evaluated on the same held-out prompts within a seed (the prompts depend on the seed),
so a gain is paired: per prompt, correct(M_last) − correct(M1). Intervals are percentile bootstraps over prompts
(2,000 resamples, seeded): per seed, and pooled over seeds by resampling the prompts within each seed (stratified)
and averaging the seeds' means. The pooled interval is about prompts given these seeds; the per-seed column shows
how much seeds differ. The same resamples give the interval of a difference between arms of one seed (they share
M1 and the prompts): `self − ½·oracle` > 0 is the claim "the self-judge reaches half the oracle's gain".

Per-prompt outcomes come from each evaluation's `per_prompt` strings (`correct`: "1"/"0" per prompt; `agree`:
"1"/"0" per judged prompt, "-" where the judge gave no score). Without them the intervals are left out.

Agreement moves with the model's accuracy: a judge that calls every answer wrong agrees on 1 − accuracy of them,
so it "improves" as the model gets worse. The judge's balanced accuracy on the same answers (the mean of its
hit rate on right answers and its rejection rate on wrong ones; 0.5 for any judge that does not look) is
reported beside it, from the same strings.

Plots (matplotlib, imported when writing; PNG): accuracy and judge agreement per model with 95% bands, one line
per arm; the candidates' pass@1 / pass@N and the pairs' ✓:✗ per iteration; histograms of the judge's scores of
correct and wrong candidates per iteration (self arm).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from srlm_fast.eval.winrate import Interval
from srlm_fast.io import write_json_atomic, write_text_atomic

N_BOOT = 2000


def outcomes(model_eval: dict, key: str) -> np.ndarray | None:
    """Per-prompt outcomes of one evaluation as floats (NaN where there is none), or None if not recorded."""
    text = (model_eval.get("per_prompt") or {}).get(key)
    if text is None:
        return None
    return np.array([np.nan if c == "-" else float(c) for c in text])


def balanced_accuracy_of(right: np.ndarray, says_right: np.ndarray) -> np.ndarray:
    """The mean of the judge's hit rate on right answers and its rejection rate on wrong ones, from boolean arrays
    (the checker's grade, the judge's verdict), along the last axis, so a whole batch of bootstrap resamples at
    once; NaN where a row has no right or no wrong answer."""
    n_right, n_wrong = right.sum(-1), (~right).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        hit = (right & says_right).sum(-1) / n_right
        reject = (~right & ~says_right).sum(-1) / n_wrong
    return np.where((n_right > 0) & (n_wrong > 0), (hit + reject) / 2, np.nan)


def balanced_accuracy(model_eval: dict) -> float | None:
    """The judge's balanced accuracy on the model's own answers (see the module docstring), or None without
    per-prompt outcomes or without both right and wrong answers."""
    correct, agree = outcomes(model_eval, "correct"), outcomes(model_eval, "agree")
    if correct is None or agree is None:
        return None
    judged = ~np.isnan(correct) & ~np.isnan(agree)
    right, agreed = correct[judged] == 1, agree[judged] == 1
    says_right = agreed == right  # an agreeing verdict is the checker's; a disagreeing one its opposite
    value = float(balanced_accuracy_of(right, says_right))
    return None if np.isnan(value) else value


def stratified_resampled_means(
    per_seed: Sequence[np.ndarray], rng: np.random.Generator, n_boot: int = N_BOOT
) -> np.ndarray:
    """`n_boot` bootstrap replicates of the mean over seeds of each seed's mean, every seed's values resampled
    within that seed (no NaNs, no empty seed)."""
    boots = np.zeros(n_boot)
    for g in per_seed:
        boots += g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1)
    return boots / len(per_seed)


def stratified_bootstrap(per_seed: Sequence[np.ndarray], n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Mean over seeds of each seed's mean (NaNs ignored), with a 95% percentile interval from resampling every
    seed's values within that seed."""
    groups = [np.asarray(g, dtype=np.float64) for g in per_seed]
    groups = [g[~np.isnan(g)] for g in groups]
    groups = [g for g in groups if g.size]
    if not groups:
        return Interval(None, None, None)
    boots = stratified_resampled_means(groups, np.random.default_rng(seed), n_boot)
    point = float(np.mean([g.mean() for g in groups]))
    low, high = np.quantile(boots, [0.025, 0.975])
    return Interval(point, float(low), float(high))


def _series(results: dict, arm: str, seed: int) -> list[dict]:
    return results["runs"].get(f"{arm}/{seed}", {}).get("models", [])


def _paired(
    results: dict, arm: str, key: str, k_from: int, k_to: int, seeds: Sequence[int]
) -> list[np.ndarray]:
    """Per seed: outcome(M_{k_to}) − outcome(M_{k_from}) per prompt, for the seeds that have both."""
    out = []
    for seed in seeds:
        models = _series(results, arm, seed)
        if len(models) <= max(k_from, k_to):
            continue
        a, b = outcomes(models[k_from], key), outcomes(models[k_to], key)
        if a is not None and b is not None and a.shape == b.shape:
            out.append(b - a)
    return out


def _gains_per_seed(
    a: dict, arm_a: str, b: dict, arm_b: str, metric: str, seeds: Sequence[int]
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(seed, arm a's gain, arm b's gain) per prompt, last model − M1 of each experiment (`a` and `b` may be one),
    for the seeds where both arms have it."""
    out = []
    for s in seeds:
        ga = _paired(a, arm_a, metric, 0, a["iterations"], [s])
        gb = _paired(b, arm_b, metric, 0, b["iterations"], [s])
        if ga and gb:
            out.append((s, ga[0], gb[0]))
    return out


def _seed_differences(results: dict, seeds: Sequence[int], metric: str, a: tuple[str, float],
                      b: tuple[str, float]) -> dict:  # fmt: skip
    """The bootstrap interval of (weight_a × arm a's gain − weight_b × arm b's gain) in `metric`, paired per seed
    (a seed counts only when both arms have the same prompts)."""
    gains = _gains_per_seed(results, a[0], results, b[0], metric, seeds)
    diffs = [a[1] * ga - b[1] * gb for _, ga, gb in gains if ga.shape == gb.shape]
    return stratified_bootstrap(diffs).to_dict()


def gain_contrast(a: dict, arm_a: str, b: dict, arm_b: str) -> dict[str, Any]:
    """Arm `arm_a` of experiment `a` against arm `arm_b` of experiment `b`: the difference of their gains (last
    model − M1, each from its own M1), paired per seed and prompt over the seeds both finished. For ablations that
    change M1 itself (another judge's training data), which one experiment's arms cannot share. The caller makes
    sure both evaluated the same prompts (same seed and evaluation settings); prompts of another count are refused."""
    gains = _gains_per_seed(a, arm_a, b, arm_b, "correct", sorted(set(a["seeds"]) & set(b["seeds"])))
    for s, ga, gb in gains:
        if ga.shape != gb.shape:
            raise ValueError(f"seed {s}: {ga.size} against {gb.size} prompts; not the same evaluation")
    return {
        "seeds": [s for s, _, _ in gains],
        "gain_difference": stratified_bootstrap([ga - gb for _, ga, gb in gains]).to_dict(),
    }


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f}" if pct else f"{x:.2f}"


def _fmt_interval(iv: Interval) -> str:
    if iv.value is None:
        return "–"
    if iv.low is None:
        return f"{100 * iv.value:+.1f}"
    return f"{100 * iv.value:+.1f} [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]"


def _mean(xs: Sequence[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


PAIR_KINDS = ("right", "wrong", "both_correct", "both_wrong")


def _by_family(results: dict, arm: str, seeds: Sequence[int], last: int) -> dict[str, dict]:
    """Per task family, over the seeds with every model: each model's accuracy and the pairs' checker verdicts
    summed over the iterations (means over seeds). Where the gain comes from, or why there is none: a family
    with many ✓:✗ pairs and no gain was taught something other than the skill."""
    complete = [s for s in seeds if len(_series(results, arm, s)) == last + 1]
    per_model = [[m.get("by_family") or {} for m in _series(results, arm, s)] for s in complete]
    families = sorted({f for models in per_model for m in models for f in m})
    out = {}
    for f in families:
        pairs = {}
        for kind in PAIR_KINDS:
            per_seed = [
                sum((it["candidates"].get("pairs_by_family") or {}).get(f, {}).get(kind, 0)
                    for it in results["runs"][f"{arm}/{s}"].get("iterations", []))
                for s in complete
            ]  # fmt: skip
            pairs[kind] = _mean(per_seed)
        accuracy = [_mean([models[k].get(f) for models in per_model]) for k in range(last + 1)]
        out[f] = {"accuracy": accuracy, "pairs": pairs}
    return out


def summarize(results: dict) -> dict[str, Any]:
    """Per arm: accuracy and agreement of M1 and the last model, the gains with intervals, per-seed gains, and the
    per-iteration candidate numbers; plus the comparisons between arms the experiment is for."""
    seeds, arms = results["seeds"], results["arms"]
    last = results["iterations"]
    summary: dict[str, Any] = {"arms": {}, "comparisons": {}}
    for arm in arms:
        rows = [_series(results, arm, s) for s in seeds]
        complete = [s for s, r in zip(seeds, rows) if len(r) == last + 1]
        acc = [[m.get("task_accuracy") for m in r] for r in rows]
        agree = [[m.get("judge_agreement_own") for m in r] for r in rows]
        balanced = [[balanced_accuracy(m) for m in r] for r in rows]
        gain = stratified_bootstrap(_paired(results, arm, "correct", 0, last, complete))
        agree_gain = stratified_bootstrap(_paired(results, arm, "agree", 0, last, complete))
        per_seed = {}
        for s in complete:
            iv = stratified_bootstrap(_paired(results, arm, "correct", 0, last, [s]), seed=s)
            r = _series(results, arm, s)
            per_seed[str(s)] = {
                "gain": iv.to_dict(),
                "accuracy": [m.get("task_accuracy") for m in r],
                "agreement": [m.get("judge_agreement_own") for m in r],
            }
        iters = []
        for t in range(last):
            cs = [results["runs"][f"{arm}/{s}"]["iterations"][t] for s in seeds
                  if len(results["runs"].get(f"{arm}/{s}", {}).get("iterations", [])) > t]  # fmt: skip
            checker = [c["stats"].get("pairs", {}).get("checker") or {} for c in cs]
            iters.append(
                {
                    "valid_prompts": _mean([c["candidates"].get("valid_prompts") for c in cs]),
                    "pass_at_1": _mean([c["candidates"].get("pass_at_1") for c in cs]),
                    "pass_at_n": _mean([c["candidates"].get("pass_at_n") for c in cs]),
                    "mean_chars": _mean([c["candidates"].get("mean_chars") for c in cs]),
                    "pairs": _mean([c["stats"].get("pairs", {}).get("pairs") for c in cs]),
                    "pairs_right": _mean([ch.get("right") for ch in checker]),
                    "pairs_wrong": _mean([ch.get("wrong") for ch in checker]),
                    "judge_pairs": _mean([c["stats"].get("meta", {}).get("pairs") for c in cs]),
                }
            )
        summary["arms"][arm] = {
            "seeds_complete": complete,
            "accuracy": _model_means(acc, last + 1),
            "agreement": _model_means(agree, last + 1),
            "gain": gain.to_dict(),
            "agreement_gain": agree_gain.to_dict(),
            "judge_balanced_accuracy": _model_means(balanced, last + 1),
            "per_seed": per_seed,
            "iterations": iters,
            "by_family": _by_family(results, arm, seeds, last),
        }
    if "self" in arms and "oracle" in arms:
        summary["comparisons"]["self_minus_half_oracle"] = _seed_differences(
            results, seeds, "correct", ("self", 1.0), ("oracle", 0.5)
        )
    # What the judge's information adds to DPO on the same kind of pairs.
    if "self" in arms and "random" in arms:
        summary["comparisons"]["self_minus_random"] = _seed_differences(
            results, seeds, "correct", ("self", 1.0), ("random", 1.0)
        )
    if "self" in arms and "meta" in arms:
        summary["comparisons"]["meta_minus_self_agreement_gain"] = _seed_differences(
            results, seeds, "agree", ("meta", 1.0), ("self", 1.0)
        )
    return summary


def format_markdown(results: dict, summary: dict, title: str, plots: Sequence[str]) -> str:
    seeds, last = results["seeds"], results["iterations"]
    lines = [f"# {title}", ""]
    lines.append(
        f"Seeds {', '.join(map(str, seeds))}; {last} iterations (M1 → M{last + 1}). Accuracy: checker accuracy of "
        "greedy answers to held-out task-world prompts; agreement: the judge's verdict (score ≥ 3) equals the "
        "checker's on the model's own answers; balanced: the judge's mean of its hit rate on right and its "
        "rejection rate on wrong answers (0.5: it does not tell them apart; agreement moves with accuracy, this "
        "does not). Gains in points with 95% bootstrap intervals over prompts (pooled: stratified by seed)."
    )
    lines += ["", "| arm | M1 acc | last acc | gain [95% CI] | per-seed gains | agreement M1 → last | Δ agreement [95% CI] "
              "| judge balanced M1 → last |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, a in summary["arms"].items():
        acc, agr = a["accuracy"], a["agreement"]
        per_seed = "; ".join(
            f"s{s}: {_fmt_interval(Interval(**v['gain']))}" for s, v in a["per_seed"].items()
        )
        lines.append(
            f"| {arm} | {_pct(acc[0] if acc else None)} | {_pct(acc[-1] if acc else None)} | "
            f"{_fmt_interval(Interval(**a['gain']))} | {per_seed or '–'} | "
            f"{_pct(agr[0] if agr else None)} → {_pct(agr[-1] if agr else None)} | "
            f"{_fmt_interval(Interval(**a['agreement_gain']))} | {_bal(a['judge_balanced_accuracy'])} |"
        )
    comps = summary["comparisons"]
    if comps:
        lines += ["", "Comparisons (paired within seeds, same M1 and prompts):", ""]
        if "self_minus_half_oracle" in comps:
            lines.append(
                f"- self gain − ½ oracle gain: {_fmt_interval(Interval(**comps['self_minus_half_oracle']))} points "
                "(> 0: the self-judge reaches at least half the oracle's gain)"
            )
        if "self_minus_random" in comps:
            lines.append(
                f"- self gain − random gain: {_fmt_interval(Interval(**comps['self_minus_random']))} points "
                "(> 0: the self-judge's scores carry information; the random arm shuffles them among the candidates)"
            )
        if "meta_minus_self_agreement_gain" in comps:
            lines.append(
                f"- meta − self, gain in judge agreement: "
                f"{_fmt_interval(Interval(**comps['meta_minus_self_agreement_gain']))} points "
                "(> 0: the judge's agreement rises faster with the meta-judge; read it beside the balanced accuracy, "
                "which a falling accuracy does not raise)"
            )
    lines += ["", "Per iteration (means over seeds): valid = self-instructed prompts that are tasks; pass@1 / pass@N "
              "of the candidates on those; pairs ✓:✗ = pairs preferring the correct : the wrong answer (checker).",
              "", "| arm | iter | valid | pass@1 | pass@N | pairs | ✓:✗ | judge pairs | cand chars |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, a in summary["arms"].items():
        for t, it in enumerate(a["iterations"], start=1):
            lines.append(
                f"| {arm} | {t} | {_pct(it['valid_prompts'])} | {_pct(it['pass_at_1'])} | {_pct(it['pass_at_n'])} | "
                f"{_num(it['pairs'])} | {_num(it['pairs_right'])}:{_num(it['pairs_wrong'])} | "
                f"{_num(it['judge_pairs'])} | {_num(it['mean_chars'], 1)} |"
            )
    lines += _family_table(summary)
    if plots:
        lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _family_table(summary: dict) -> list[str]:
    rows = [(arm, f, v) for arm, a in summary["arms"].items() for f, v in a.get("by_family", {}).items()]
    if not rows:
        return []
    lines = ["", "Per task family (means over seeds): accuracy of M1 and the last model, and the pairs of all "
             "iterations by the checker's verdict (✓:✗ = correct preferred : wrong preferred).", "",
             "| arm | family | M1 acc | last acc | Δ | pairs ✓:✗ | both ✓ | both ✗ |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, family, v in rows:
        acc, pairs = v["accuracy"], v["pairs"]
        first, final = (acc[0], acc[-1]) if acc else (None, None)
        delta = final - first if first is not None and final is not None else None
        lines.append(
            f"| {arm} | {family} | {_pct(first)} | {_pct(final)} | {_fmt(delta)} | "
            f"{_num(pairs['right'])}:{_num(pairs['wrong'])} | {_num(pairs['both_correct'])} | "
            f"{_num(pairs['both_wrong'])} |"
        )
    return lines


def _model_means(per_seed: Sequence[Sequence[float | None]], n_models: int) -> list[float | None]:
    """Per model, the mean over seeds of one metric; [] unless every seed has all `n_models` models."""
    if not per_seed or any(len(s) != n_models for s in per_seed):
        return []
    return [_mean(col) for col in zip(*per_seed)]


def _bal(series: Sequence[float | None]) -> str:
    if not series:
        return "–"
    return f"{_num(series[0], 2)} → {_num(series[-1], 2)}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _per_model_interval(results: dict, arm: str, key: str, k: int) -> Interval:
    groups = []
    for s in results["seeds"]:
        models = _series(results, arm, s)
        if len(models) > k:
            v = outcomes(models[k], key)
            if v is not None:
                groups.append(v)
    return stratified_bootstrap(groups)


def write_plots(results: dict, summary: dict, out_dir: Path) -> list[Path]:
    """The PNG plots of the experiment (see the module docstring); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = results["iterations"]
    xs = list(range(1, last + 2))
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, metric, label in (
        (axes[0], "correct", "accuracy", "task accuracy (checker)"),
        (axes[1], "agree", "agreement", "judge = checker on own answers"),
    ):
        for arm, a in summary["arms"].items():
            if not a[metric]:
                continue
            ivs = [_per_model_interval(results, arm, key, k) for k in range(last + 1)]
            banded = all(iv.value is not None for iv in ivs)
            mean = [iv.value for iv in ivs] if banded else a[metric]
            (line,) = ax.plot(xs, [100 * m for m in mean], marker="o", label=arm)
            if banded:
                lows, highs = [100 * iv.low for iv in ivs], [100 * iv.high for iv in ivs]
                ax.fill_between(xs, lows, highs, alpha=0.15, color=line.get_color())
        ax.set_xticks(xs, [f"M{k}" for k in xs])
        ax.set_ylabel(f"{label}, %")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"mean over seeds {', '.join(map(str, results['seeds']))}, 95% bootstrap bands")
    fig.tight_layout()
    paths.append(out_dir / "experiment_accuracy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # Score histograms of the self arm: the judge's scores of correct vs wrong candidates, per iteration.
    arm = "self" if "self" in results["arms"] else results["arms"][0]
    if last and arm in ("self", "meta", "random"):  # arms whose candidates the model's judge scored
        fig, axes = plt.subplots(1, last, figsize=(4 * last, 3.2), squeeze=False)
        bins = np.linspace(0, 5, 21)
        for t in range(last):
            ok, bad = [], []
            for s in results["seeds"]:
                its = results["runs"].get(f"{arm}/{s}", {}).get("iterations", [])
                if len(its) > t:
                    ok += its[t]["candidates"].get("scores_correct", [])
                    bad += its[t]["candidates"].get("scores_wrong", [])
            ax = axes[0][t]
            ax.hist(bad, bins=bins, alpha=0.6, label=f"wrong ({len(bad)})", color="tab:red")
            ax.hist(ok, bins=bins, alpha=0.6, label=f"correct ({len(ok)})", color="tab:green")
            ax.set_title(f"iteration {t + 1}: M{t + 1} judges its candidates")
            ax.set_xlabel("judge score")
            ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "experiment_scores.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_experiment_report(results: dict, out_dir: Path, title: str = "srlm experiment") -> dict:
    """experiment.json (the collected runs and the summary), PNG plots and experiment.md in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    plots = write_plots(results, summary, out_dir)
    write_json_atomic(out_dir / "experiment.json", {"summary": summary, "results": results})
    write_text_atomic(
        out_dir / "experiment.md", format_markdown(results, summary, title, [str(p) for p in plots])
    )
    return summary
