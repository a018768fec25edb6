"""bench/unpaired_contrast.py: outcomes rebuilt from committed rates, and an unpaired stratified bootstrap that
agrees with the paired one where pairing cannot matter and is wider where it does."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.unpaired_contrast import contrast, outcomes_from_rate, unpaired_difference
from srlm_fast.eval.experiment_report import stratified_bootstrap

ROOT = Path(__file__).resolve().parents[2]


def test_outcomes_from_rate_rebuilds_the_count_and_refuses_a_wrong_n():
    x = outcomes_from_rate(27 / 62, 62)
    assert x.size == 62 and x.sum() == 27
    with pytest.raises(ValueError, match="not a count out of 60"):
        outcomes_from_rate(27 / 62, 60)


def test_one_term_is_the_stratified_bootstrap_of_srlm_experiment():
    rng = np.random.default_rng(1)
    per_seed = [rng.integers(0, 2, 62).astype(float) for _ in range(3)]
    ours = unpaired_difference([(+1, per_seed)], n_boot=2000, seed=0)
    ref = stratified_bootstrap(per_seed, n_boot=2000, seed=0)
    assert ours["value"] == pytest.approx(ref.value)
    assert (ours["low"], ours["high"]) == pytest.approx((ref.low, ref.high))


def test_a_difference_is_centred_on_the_truth_and_separates_only_real_effects():
    same = [outcomes_from_rate(0.5, 62)] * 2
    d = unpaired_difference([(+1, same), (-1, same)])
    assert d["value"] == 0 and d["low"] < 0 < d["high"]
    high, low = [outcomes_from_rate(50 / 62, 62)], [outcomes_from_rate(10 / 62, 62)]
    d = unpaired_difference([(+1, high), (-1, low)])
    assert d["value"] == pytest.approx(40 / 62) and d["low"] > 0.4


def _arm(accuracy: dict[str, list[float]], agreement: dict[str, list[float]]) -> dict:
    return {"per_seed": {s: {"accuracy": accuracy[s], "agreement": agreement[s]} for s in accuracy}}


def test_contrast_uses_the_common_seeds_and_the_difference_of_gains():
    a = _arm(
        {"0": [4 / 62, 60 / 62], "1": [4 / 62, 30 / 62], "2": [0.0, 1.0]}, {s: [1.0, 1.0] for s in "012"}
    )
    b = _arm({"0": [4 / 62, 10 / 62], "1": [4 / 62, 4 / 62]}, {s: [1.0, 0.5] for s in "01"})
    out = contrast(a, b, n=62)
    # seed 2 (A only) is left out: gains A 56/62, 26/62; B 6/62, 0
    assert out["gain_difference"]["value"] == pytest.approx(((56 - 6) + (26 - 0)) / 2 / 62)
    assert out["agreement_last_difference"]["value"] == pytest.approx(0.5)
    assert out["agreement_first_difference"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    with pytest.raises(ValueError, match="no seed in common"):
        contrast(a, _arm({"5": [0.0, 0.0]}, {"5": [1.0, 1.0]}), n=62)


def test_cli_reads_committed_summaries_and_writes_json(tmp_path):
    summary = {
        "experiments": [
            {"label": "g", "arms": {"self": _arm({"0": [4 / 62, 60 / 62]}, {"0": [1.0, 1.0]})}},
            {"label": "u", "arms": {"self": _arm({"0": [4 / 62, 7 / 62]}, {"0": [1.0, 22 / 62]})}},
        ]
    }
    src, out = tmp_path / "s.json", tmp_path / "c.json"
    src.write_text(json.dumps(summary))
    cmd = [sys.executable, "bench/unpaired_contrast.py", f"{src}:g/self", f"{src}:u/self", "--n", "62"]
    subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert result["seeds"] == [0] and result["n_per_seed"] == 62
    gain = result["unpaired"]["gain_difference"]
    assert gain["value"] == pytest.approx(53 / 62) and gain["low"] > 0.6
    bad = subprocess.run([*cmd[:3], f"{src}:g/oracle", "--n", "62", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "no arm 'oracle'" in bad.stderr
