"""The run report: a markdown table of per-iteration metrics, plots, score histograms and lengths, plus JSON.

`write_report(run_metrics, out_dir)` takes one dict per iteration or model (e.g. the loop's `eval/m<k>.json`) and
writes, atomically, `report.md`, `report.json` and the plots `metrics.svg`, `score_histograms.svg`,
`lengths.svg` beside it.

Input conventions of an iteration dict (everything is optional):
- `iteration`: its label (an int or a name like "M2"); default: position + 1.
- numbers anywhere, nested dicts allowed: flattened to dotted names (`agreement.pairwise_accuracy`) and shown as
  table rows and plotted; a dict with `value`/`low`/`high` (a bootstrap interval) is one row `x ± CI` and is
  plotted with its interval. Counts (`n`, `n_*`) are shown in the table but not plotted.
- `scores`: the judge scores of this iteration's candidates (None = invalid) → a histogram in 0.5-wide bins.
- `lengths`: response lengths in characters → a histogram (bins shared across iterations) and mean/median rows.
Other lists are kept in `report.json` only.

Plots are SVG files written by this module, not matplotlib: matplotlib is not a dependency (it is absent from
the CI and GPU images), SVG needs nothing to produce, renders in browsers, on GitHub and in VS Code, and keeps
the report byte-for-byte deterministic. The table also carries a unicode sparkline per metric for terminals.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srlm_fast.io import write_json_atomic, write_text_atomic

_SPARKS = "▁▂▃▄▅▆▇█"
_INTERVAL_KEYS = {"value", "low", "high"}
_MAX_PANELS = 24


@dataclass(frozen=True)
class Series:
    """One metric across iterations (None where an iteration lacks it), with optional CI bounds."""

    name: str
    values: list[float | None]
    lows: list[float | None] | None = None
    highs: list[float | None] | None = None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def flatten_metrics(d: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted names for every number in nested dicts; a {value, low, high} dict stays one entry (a dict)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            if set(v) >= _INTERVAL_KEYS and _is_number(v.get("value")):
                out[name] = {key: v[key] for key in ("value", "low", "high")}
            else:
                out.update(flatten_metrics(v, f"{name}."))
        elif _is_number(v):
            out[name] = v
    return out


def _label(i: int, it: dict) -> str:
    return str(it.get("iteration", i + 1))


def _is_count(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last == "n" or last.startswith("n_")


def collect_series(run_metrics: Sequence[dict]) -> list[Series]:
    """Every metric of the run, in first-seen order, as a Series over the iterations."""
    flat = [flatten_metrics({k: v for k, v in it.items() if k not in ("iteration", "scores", "lengths")})
            for it in run_metrics]  # fmt: skip
    for f, it in zip(flat, run_metrics):
        lengths = [x for x in it.get("lengths", []) or [] if _is_number(x)]
        if lengths:
            f["length.mean"] = sum(lengths) / len(lengths)
            f["length.median"] = _median(lengths)
    names: list[str] = []
    for f in flat:
        names += [k for k in f if k not in names]
    series = []
    for name in names:
        vals = [f.get(name) for f in flat]
        if any(isinstance(v, dict) for v in vals):
            series.append(
                Series(
                    name,
                    [v.get("value") if isinstance(v, dict) else v for v in vals],
                    [v.get("low") if isinstance(v, dict) else None for v in vals],
                    [v.get("high") if isinstance(v, dict) else None for v in vals],
                )
            )
        else:
            series.append(Series(name, vals))
    return series


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return float(s[m]) if len(s) % 2 else (s[m - 1] + s[m]) / 2


def sparkline(values: Sequence[float | None]) -> str:
    """▁..█ per value, scaled to the series' range; a space where a value is missing."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    lo, hi = min(present), max(present)
    span = hi - lo
    return "".join(
        " " if v is None else _SPARKS[0 if span == 0 else round((v - lo) / span * (len(_SPARKS) - 1))]
        for v in values
    )


def _fmt(v: float | None, low: float | None = None, high: float | None = None) -> str:
    if v is None:
        return "–"
    if float(v).is_integer() and abs(v) >= 1 and low is None:
        return f"{int(v)}"
    text = f"{v:.4g}" if abs(v) >= 1 else f"{v:.3f}"
    if low is not None and high is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    return text


# ---------------------------------------------------------------- SVG


def _svg_doc(width: int, height: int, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">\n'
        f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n"
    )


def _grid(n: int, cols: int, pw: int, ph: int) -> tuple[int, int, list[tuple[int, int]]]:
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    return cols * pw, rows * ph, [((i % cols) * pw, (i // cols) * ph) for i in range(n)]


def svg_line_panels(series: Sequence[Series], labels: Sequence[str], *, cols: int = 3) -> str:
    """Small multiples: one line chart per metric over iterations, CI bands drawn as vertical bars."""
    pw, ph, m = 260, 150, 28  # panel size and inner margin
    width, height, origins = _grid(len(series), cols, pw, ph)
    body: list[str] = []
    for s, (ox, oy) in zip(series, origins):
        pts = [(i, v) for i, v in enumerate(s.values) if v is not None]
        ys = [v for _, v in pts]
        ys += [x for x in (s.lows or []) + (s.highs or []) if x is not None]
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        x0, x1, y0, y1 = ox + m + 8, ox + pw - 10, oy + ph - m, oy + 22

        def sx(i: int, x0: float = x0, x1: float = x1) -> float:
            return x0 + (x1 - x0) * (i / max(1, len(labels) - 1) if len(labels) > 1 else 0.5)

        def sy(v: float, lo: float = lo, hi: float = hi, y0: float = y0, y1: float = y1) -> float:
            return y0 + (y1 - y0) * (v - lo) / (hi - lo)

        body.append(f'<text x="{ox + pw / 2:.1f}" y="{oy + 13}" text-anchor="middle" font-weight="bold">'
                    f"{html.escape(s.name)}</text>")  # fmt: skip
        body.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/>')
        body.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#999"/>')
        for v in (lo, hi):
            body.append(f'<text x="{x0 - 3}" y="{sy(v) + 3:.1f}" text-anchor="end">{_fmt(v)}</text>')
        for i, lab in enumerate(labels):
            body.append(f'<text x="{sx(i):.1f}" y="{y0 + 12}" text-anchor="middle">{html.escape(lab)}</text>')
        if s.lows and s.highs:
            for i, (a, b) in enumerate(zip(s.lows, s.highs)):
                if a is not None and b is not None:
                    body.append(f'<line x1="{sx(i):.1f}" y1="{sy(a):.1f}" x2="{sx(i):.1f}" y2="{sy(b):.1f}" '
                                f'stroke="#9ecae1" stroke-width="4"/>')  # fmt: skip
        if len(pts) > 1:
            path = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in pts)
            body.append(f'<polyline points="{path}" fill="none" stroke="#3182bd" stroke-width="1.5"/>')
        for i, v in pts:
            body.append(f'<circle cx="{sx(i):.1f}" cy="{sy(v):.1f}" r="2.5" fill="#3182bd"/>')
    return _svg_doc(width, height, body)


def svg_histograms(panels: Sequence[tuple[str, Sequence[str], Sequence[int]]], *, cols: int = 3) -> str:
    """One bar chart per (title, bin labels, counts)."""
    pw, ph, m = 260, 150, 26
    width, height, origins = _grid(len(panels), cols, pw, ph)
    body: list[str] = []
    for (title, bins, counts), (ox, oy) in zip(panels, origins):
        x0, x1, y0, y1 = ox + m, ox + pw - 8, oy + ph - m, oy + 22
        top = max(counts) if counts and max(counts) > 0 else 1
        bw = (x1 - x0) / max(1, len(counts))
        body.append(f'<text x="{ox + pw / 2:.1f}" y="{oy + 13}" text-anchor="middle" font-weight="bold">'
                    f"{html.escape(title)}</text>")  # fmt: skip
        body.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/>')
        body.append(f'<text x="{x0 - 3}" y="{y1 + 3}" text-anchor="end">{top}</text>')
        step = max(1, math.ceil(len(bins) / 6))  # at most ~6 axis labels
        for j, (lab, c) in enumerate(zip(bins, counts)):
            h = (y0 - y1) * c / top
            body.append(f'<rect x="{x0 + j * bw + 1:.1f}" y="{y0 - h:.1f}" width="{max(1.0, bw - 2):.1f}" '
                        f'height="{h:.1f}" fill="#3182bd"><title>{html.escape(lab)}: {c}</title></rect>')  # fmt: skip
            if j % step == 0 or j == len(bins) - 1:
                body.append(f'<text x="{x0 + (j + 0.5) * bw:.1f}" y="{y0 + 12}" text-anchor="middle">'
                            f"{html.escape(lab)}</text>")  # fmt: skip
    return _svg_doc(width, height, body)


# ---------------------------------------------------------------- histograms


def score_histogram(scores: Sequence[float | None], *, step: float = 0.5, max_score: float = 5.0) -> dict:
    """Counts of scores rounded to the nearest `step` (0, 0.5, ..., 5), plus `invalid` (None)."""
    n_bins = round(max_score / step) + 1
    counts = [0] * n_bins
    invalid = 0
    for s in scores:
        if s is None or not _is_number(s):
            invalid += 1
            continue
        counts[min(n_bins - 1, max(0, round(s / step)))] += 1
    labels = [f"{i * step:g}" for i in range(n_bins)]
    return {"bins": labels, "counts": counts, "invalid": invalid}


def length_histograms(all_lengths: Sequence[Sequence[float]], *, n_bins: int = 12) -> list[dict]:
    """Histograms of response lengths with the same bins for every iteration (so they compare)."""
    top = max((max(ls) for ls in all_lengths if ls), default=0)
    width = max(1, math.ceil((top + 1) / n_bins))
    out = []
    for ls in all_lengths:
        counts = [0] * n_bins
        for x in ls:
            counts[min(n_bins - 1, int(x // width))] += 1
        out.append({"bins": [f"{i * width}" for i in range(n_bins)], "bin_width": width, "counts": counts})
    return out


# ---------------------------------------------------------------- the report


def write_report(
    run_metrics: Sequence[dict],
    out_dir: str | os.PathLike,
    *,
    title: str = "srlm run report",
    stage_costs: Sequence[dict] = (),
) -> Path:
    """Write `report.md`, `report.json` and SVG plots for the per-iteration metrics, and the wall time and peak
    memory of each stage when given (`{stage, seconds, peak_rss_mb}` in run order); returns the .md path."""
    out = Path(out_dir)
    labels = [_label(i, it) for i, it in enumerate(run_metrics)]
    series = collect_series(run_metrics)
    lines = [f"# {title}", ""]
    if not run_metrics:
        lines += ["No iterations evaluated yet.", ""]
    else:
        lines += ["## Metrics per iteration", ""]
        lines.append("| metric | " + " | ".join(labels) + " | trend |")
        lines.append("|---|" + "---:|" * len(labels) + "---|")
        for s in series:
            cells = [
                _fmt(v, s.lows[i] if s.lows else None, s.highs[i] if s.highs else None)
                for i, v in enumerate(s.values)
            ]
            lines.append(f"| {s.name} | " + " | ".join(cells) + f" | {sparkline(s.values)} |")
        lines.append("")
        plotted = [s for s in series if not _is_count(s.name) and any(v is not None for v in s.values)]
        if plotted:
            write_text_atomic(out / "metrics.svg", svg_line_panels(plotted[:_MAX_PANELS], labels))
            lines += ["![metrics across iterations](metrics.svg)", ""]
            if len(plotted) > _MAX_PANELS:
                lines += [f"(plotted the first {_MAX_PANELS} of {len(plotted)} metrics)", ""]

    hists = []
    for lab, it in zip(labels, run_metrics):
        if it.get("scores") is not None:
            hists.append((lab, score_histogram(it["scores"])))
    if hists:
        lines += ["## Judge score histograms", ""]
        lines.append("| iteration | " + " | ".join(hists[0][1]["bins"]) + " | invalid |")
        lines.append("|---|" + "---:|" * (len(hists[0][1]["bins"]) + 1))
        for lab, h in hists:
            lines.append(f"| {lab} | " + " | ".join(map(str, h["counts"])) + f" | {h['invalid']} |")
        panels = [(f"scores, iteration {lab}", h["bins"], h["counts"]) for lab, h in hists]
        write_text_atomic(out / "score_histograms.svg", svg_histograms(panels))
        lines += ["", "![judge score histograms](score_histograms.svg)", ""]

    with_len = [
        (lab, [x for x in it.get("lengths") or [] if _is_number(x)]) for lab, it in zip(labels, run_metrics)
    ]
    with_len = [(lab, ls) for lab, ls in with_len if ls]
    if with_len:
        lhists = length_histograms([ls for _, ls in with_len])
        lines += [
            "## Response length (characters)",
            "",
            "| iteration | n | mean | median | max |",
            "|---|---:|---:|---:|---:|",
        ]
        for lab, ls in with_len:
            lines.append(f"| {lab} | {len(ls)} | {sum(ls) / len(ls):.1f} | {_median(ls):g} | {max(ls):g} |")
        panels = [
            (f"length, iteration {lab}", h["bins"], h["counts"]) for (lab, _), h in zip(with_len, lhists)
        ]
        write_text_atomic(out / "lengths.svg", svg_histograms(panels))
        lines += ["", "![response lengths](lengths.svg)", ""]

    if stage_costs:
        total = sum(c["seconds"] for c in stage_costs)
        lines += [
            "## Wall time per stage",
            "",
            "| stage | seconds | share | peak RSS so far |",
            "|---|---:|---:|---:|",
        ]
        for c in stage_costs:
            rss = f"{c['peak_rss_mb'] / 1024:.2f} GiB" if c.get("peak_rss_mb") is not None else "–"
            share = f"{c['seconds'] / total:.0%}" if total else "–"
            lines.append(f"| {c['stage']} | {c['seconds']:.1f} | {share} | {rss} |")
        lines += [f"| all stages | {total:.1f} | | |", ""]

    write_json_atomic(
        out / "report.json",
        {
            "title": title,
            "iterations": labels,
            "metrics": {s.name: s.values for s in series},
            "intervals": {s.name: [s.lows, s.highs] for s in series if s.lows},
            "run_metrics": list(run_metrics),
            "stage_costs": list(stage_costs),
        },
    )
    md = out / "report.md"
    write_text_atomic(md, "\n".join(lines).rstrip("\n") + "\n")
    return md
