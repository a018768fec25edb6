"""The run report: markdown table, JSON, SVG plots, histograms, sparklines."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from srlm_fast.eval.report import (
    collect_series,
    flatten_metrics,
    length_histograms,
    score_histogram,
    sparkline,
    write_report,
)

RUN = [
    {
        "iteration": "M1",
        "task": {"accuracy": 0.4, "n": 100},
        "agreement": {"pairwise_accuracy": 0.70, "n_invalid": 3},
        "head_to_head": {"win_rate": {"value": 0.55, "low": 0.5, "high": 0.6}},
        "scores": [0, 1, 5, 4.5, 4.67, None],
        "lengths": [10, 20, 30],
    },
    {
        "iteration": "M2",
        "task": {"accuracy": 0.5, "n": 100},
        "agreement": {"pairwise_accuracy": 0.75, "n_invalid": 1},
        "head_to_head": {"win_rate": {"value": 0.6, "low": 0.55, "high": 0.65}},
        "scores": [5, 5, 3],
        "lengths": [40, 50, 90, 100],
        "note": "kept in JSON only",
    },
]


def test_flatten_and_series() -> None:
    flat = flatten_metrics({"a": {"b": 1, "c": {"value": 0.5, "low": 0.4, "high": 0.6}}, "s": "x", "t": True})
    assert flat == {"a.b": 1, "a.c": {"value": 0.5, "low": 0.4, "high": 0.6}}
    series = {s.name: s for s in collect_series(RUN)}
    assert series["task.accuracy"].values == [0.4, 0.5]
    assert series["head_to_head.win_rate"].lows == [0.5, 0.55]
    assert series["length.mean"].values == [20, 70] and series["length.median"].values == [20, 70]


def test_histograms_and_sparkline() -> None:
    h = score_histogram([0, 1, 5, 4.5, 4.67, None, 7, 2.2])
    assert h["bins"][:3] == ["0", "0.5", "1"] and len(h["bins"]) == 11
    # 4.67 rounds to 4.5; 7 clamps to 5; 2.2 rounds to 2
    assert h["counts"] == [1, 0, 1, 0, 1, 0, 0, 0, 0, 2, 2] and h["invalid"] == 1
    a, b = length_histograms([[0, 5], [23]], n_bins=4)
    assert (
        a["bin_width"] == b["bin_width"] == 6 and a["counts"] == [2, 0, 0, 0] and b["counts"] == [0, 0, 0, 1]
    )
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert sparkline([1, None, 1]) == "▁ ▁" and sparkline([]) == ""


def test_write_report(tmp_path: Path) -> None:
    md_path = write_report(RUN, tmp_path, title="demo")
    md = md_path.read_text()
    assert md.startswith("# demo")
    assert "| metric | M1 | M2 | trend |" in md
    assert "| task.accuracy | 0.400 | 0.500 | ▁█ |" in md
    assert "| head_to_head.win_rate | 0.550 [0.500, 0.600] | 0.600 [0.550, 0.650] |" in md
    assert "| agreement.n_invalid | 3 | 1 |" in md
    assert "| M1 | 3 | 20.0 | 20 | 30 |" in md  # lengths table
    for name in ("metrics.svg", "score_histograms.svg", "lengths.svg"):
        assert f"]({name})" in md
        root = ET.parse(tmp_path / name).getroot()
        assert root.tag.endswith("svg")
    # counts are tabulated but not plotted
    svg = (tmp_path / "metrics.svg").read_text()
    assert "task.accuracy" in svg and "agreement.n_invalid" not in svg
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["iterations"] == ["M1", "M2"]
    assert data["metrics"]["agreement.pairwise_accuracy"] == [0.70, 0.75]
    assert data["run_metrics"][1]["note"] == "kept in JSON only"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # deterministic: the same input writes the same bytes
    again = tmp_path / "again"
    write_report(RUN, again, title="demo")
    for name in ("report.md", "metrics.svg", "score_histograms.svg", "lengths.svg"):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes()


def test_stage_wall_times_are_tabulated_with_their_shares_and_memory(tmp_path: Path) -> None:
    costs = [
        {"stage": "SFT → M1", "seconds": 30.0, "peak_rss_mb": 2048},
        {"stage": "iter1: judge", "seconds": 10.0},
    ]
    md = write_report(RUN, tmp_path, stage_costs=costs).read_text()
    assert "| SFT → M1 | 30.0 | 75% | 2.00 GiB |" in md and "| iter1: judge | 10.0 | 25% | – |" in md
    assert "| all stages | 40.0 | | |" in md
    assert json.loads((tmp_path / "report.json").read_text())["stage_costs"][0]["seconds"] == 30.0
    assert "Wall time per stage" not in write_report(RUN, tmp_path / "none").read_text()


def test_empty_and_missing_metrics(tmp_path: Path) -> None:
    md = write_report([], tmp_path / "empty").read_text()
    assert "No iterations evaluated yet." in md
    md = write_report([{"a": 1.0}, {"b": 2.0}], tmp_path / "gaps").read_text()
    assert "| a | 1 | – |" in md and "| b | – | 2 |" in md
