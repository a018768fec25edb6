"""bench/reading_arms.py: arms matched by seed, gains and contrasts paired per item, bad summaries refused."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.reading_arms import common_models, contrast, load_arm, seed_of

ROOT = Path(__file__).resolve().parents[2]


def _summary(path: Path, runs: dict[str, dict[str, str]]) -> Path:
    path.write_text(json.dumps({"correct": runs}))
    return path


def _grades(rng: np.random.Generator, n: int, p: float) -> str:
    return "".join("1" if x else "0" for x in rng.random(n) < p)


def test_seed_comes_from_the_run_name_and_a_name_without_one_is_refused():
    assert seed_of("evidence-shuffled/s2-oracle") == 2
    assert seed_of("s10-self") == 10
    with pytest.raises(ValueError, match="no seed"):
        seed_of("evidence/self")


def test_load_refuses_a_summary_without_grades_or_with_a_seed_twice(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"pooled": {}}))
    with pytest.raises(ValueError, match="no per-item grades"):
        load_arm(tmp_path / "old.json")
    twice = _summary(tmp_path / "t.json", {"a/s0-self": {"M1": "01"}, "b/s0-self": {"M1": "10"}})
    with pytest.raises(ValueError, match="two runs of seed 0"):
        load_arm(twice)


def test_contrast_is_paired_per_item_and_weights_the_second_gain(tmp_path):
    # Seed 0: a gains 3 of 4 items, b gains 1; seed 1: a gains 2, b gains 2.
    a = {
        0: {"M1": np.zeros(4), "M4": np.array([1.0, 1, 1, 0])},
        1: {"M1": np.zeros(4), "M4": np.array([1.0, 1, 0, 0])},
    }
    b = {
        0: {"M1": np.zeros(4), "M4": np.array([1.0, 0, 0, 0])},
        1: {"M1": np.zeros(4), "M4": np.array([0.0, 0, 1, 1])},
    }
    full = contrast(a, b, ["M1", "M4"])
    assert full["value"] == pytest.approx(np.mean([0.75 - 0.25, 0.5 - 0.5]))
    half = contrast(a, b, ["M1", "M4"], weight=0.5)
    assert half["value"] == pytest.approx(np.mean([0.75 - 0.125, 0.5 - 0.25]))
    same = contrast(a, a, ["M1", "M4"])
    assert same["value"] == 0 and same["low"] == 0 and same["high"] == 0  # paired: no spread at all
    with pytest.raises(ValueError, match="share no seed"):
        contrast(a, {5: a[0]}, ["M1", "M4"])


def test_only_models_every_run_has_are_compared():
    arms = {
        "self": {0: {"M1": 0, "M2": 0, "M4": 0}},
        "oracle": {0: {"M1": 0, "M4": 0}, 1: {"M1": 0, "M2": 0, "M4": 0}},
    }
    assert common_models(arms) == ["M1", "M4"]


def test_cli_writes_the_table_json_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    for arm, p_last in [("self", 0.7), ("random", 0.1), ("oracle", 0.9)]:
        runs = {
            f"exp/s{s}-{arm}": {
                "M1": _grades(rng, 200, 0.1),
                "M2": _grades(rng, 200, 0.4),
                "M4": _grades(rng, 200, p_last),
            }
            for s in (0, 2)
        }
        files[arm] = _summary(tmp_path / f"{arm}.json", runs)
    out, png = tmp_path / "arms.json", tmp_path / "arms.png"
    cmd = [sys.executable, str(ROOT / "bench" / "reading_arms.py"), *(f"{a}={f}" for a, f in files.items()),
           "--half", "oracle", "--out", str(out), "--plot", str(png)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    assert "| self |" in res.stdout and "self − ½ oracle" in res.stdout
    data = json.loads(out.read_text())
    assert data["models"] == ["M1", "M2", "M4"] and data["arms"]["self"]["seeds"] == [0, 2]
    c = data["contrasts"]
    assert c["self − random"]["low"] > 0.4  # 0.7 − 0.1 on 400 items: far from 0
    assert c["self − oracle"]["high"] < 0
    assert c["self − ½ oracle"]["low"] > 0  # 0.6 against half of 0.8
    assert png.stat().st_size > 1000
    res = subprocess.run(
        [*cmd[:-6], "--seeds", "2", "--out", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0 and json.loads(out.read_text())["arms"]["oracle"]["seeds"] == [2]
    bad = subprocess.run([*cmd[:2], "self"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "expected ARM=FILE" in bad.stderr
