"""The evaluation entry points (score_fn / verdict_fn glue) and the `srlm eval` command."""

import json
from pathlib import Path

import pytest

from srlm_fast.cli import main as srlm
from srlm_fast.eval.judge_agreement import (
    agreement_from_scores,
    evaluate_judge_on_pairs,
    evaluate_judge_on_rankings,
    pair_items,
    ranked_items,
)
from srlm_fast.eval.readers import PreferencePair, RankedPrompt, read_hh_pairs, read_oasst_trees

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

PROMPTS = [
    RankedPrompt("q1", ("best", "mid", "worst"), (0, 1, 2)),
    RankedPrompt("q2", ("good", "bad"), (0, 1), history=(("prompter", "hi"), ("assistant", "hello"))),
]


def test_ranked_glue() -> None:
    items = ranked_items(PROMPTS)
    assert items[0] == ("q1", "best") and items[3] == ("User: hi\n\nAssistant: hello\n\nUser: q2", "good")
    m = agreement_from_scores(PROMPTS, [5, 4, 1, 2, 3])
    assert (m.n_pairs, m.n_pairs_correct) == (4, 3) and m.exact_match == 0.5
    with pytest.raises(ValueError, match="4 scores for 5 responses"):
        agreement_from_scores(PROMPTS, [1, 2, 3, 4])
    calls = []
    m = evaluate_judge_on_rankings(PROMPTS, lambda xs: calls.append(len(xs)) or [5, 3, 0, None, 1])
    assert calls == [5] and m.n_pairs_invalid == 1 and m.pairwise_accuracy == 1.0


def test_pair_glue() -> None:
    pairs = [PreferencePair("q", "yes", "no"), PreferencePair("r", "a", "bb")]
    assert pair_items(pairs) == [("q", "yes"), ("q", "no"), ("r", "a"), ("r", "bb")]
    m = evaluate_judge_on_pairs(pairs, lambda xs: [float(len(r)) for _, r in xs])
    assert (m.n_pairs, m.n_correct) == (2, 1)


def test_oracle_and_length_judges_on_real_data() -> None:
    trees, hh = DATA / "prefs/oasst_en_100_trees.jsonl", DATA / "prefs/hh_rlhf_helpful_base_test.jsonl.gz"
    if not trees.is_file() or not hh.is_file():
        pytest.skip("shared data not available")
    ranked = read_oasst_trees(trees)
    oracle = {(p.instruction, r): 5.0 - k for p in ranked for r, k in zip(p.responses, p.ranks)}
    m = evaluate_judge_on_rankings(ranked, lambda xs: [oracle[x] for x in xs])
    assert m.pairwise_accuracy == m.exact_match == m.top1 == m.spearman == m.kendall_tau == 1.0
    assert m.n_prompts == 99 and m.n_invalid == 0
    # a length-only judge: a weak baseline a trained judge must beat
    m = evaluate_judge_on_rankings(ranked, lambda xs: [float(len(r)) for _, r in xs])
    assert 0.3 < m.pairwise_accuracy < 0.8
    pairs = read_hh_pairs(hh).pairs[:300]
    pm = evaluate_judge_on_pairs(pairs, lambda xs: [float(len(r)) for _, r in xs])
    assert pm.n_pairs + pm.n_invalid == 300 and 0.3 < pm.accuracy < 0.8


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_cli_agreement(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = _write(
        tmp_path / "j.jsonl",
        [
            {"prompt": "q", "ranks": [0, 1, 2], "scores": [5, 3, 4]},
            {"ranks": [0, 1], "scores": [4, 4]},
            {"chosen_score": 5, "rejected_score": 1},
            {"chosen_score": None, "rejected_score": 1},
        ],
    )
    assert srlm(["eval", "agreement", "--judgments", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ranked"]["n_pairs"] == 4 and out["ranked"]["n_pairs_correct"] == 2
    assert out["pairs"]["accuracy"] == 1.0 and out["pairs"]["n_invalid"] == 1
    assert srlm(["eval", "agreement", "--judgments", str(p)]) == 0
    text = capsys.readouterr().out
    assert "pairwise accuracy  50.0%" in text and "tie rate 0.0%" in text


def test_cli_bad_file_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = _write(tmp_path / "bad.jsonl", [{"ranks": [0, 1], "scores": [1, 2]}, "{oops"])
    assert srlm(["eval", "agreement", "--judgments", str(p)]) == 1
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert srlm(["eval", "report", str(tmp_path / "nope")]) == 1
    assert "no such run directory" in capsys.readouterr().err


def test_cli_head2head(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"verdict_ab": "1", "verdict_ba": "2"}, {"verdict_ab": "1", "verdict_ba": "1"}]
    p = _write(tmp_path / "v.jsonl", rows)
    assert srlm(["eval", "head2head", "--verdicts", str(p), "--json", "--n-boot", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["win"]["value"] == 0.5 and out["tie"]["value"] == 0.5 and out["n_flips"] == 1
    rows = [dict(r, output="x" * 20, reference="x" * 10) for r in rows]
    p = _write(tmp_path / "v2.jsonl", rows)
    assert srlm(["eval", "head2head", "--verdicts", str(p), "--n-boot", "50"]) == 0
    text = capsys.readouterr().out
    assert "win_rate" in text and "LC win rate" in text


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for k in (1, 2, 10):
        d = tmp_path / f"iter{k}"
        d.mkdir()
        (d / "eval.json").write_text(json.dumps({"task": {"accuracy": k / 10}, "scores": [k % 6]}))
    assert srlm(["eval", "report", str(tmp_path)]) == 0
    assert "3 iteration(s)" in capsys.readouterr().out
    md = (tmp_path / "report.md").read_text()
    assert "| metric | iter1 | iter2 | iter10 | trend |" in md  # numeric, not lexical, order
    (tmp_path / "iter2" / "eval.json").write_text("[1, 2]")
    assert srlm(["eval", "report", str(tmp_path)]) == 1
    assert "expected a JSON object" in capsys.readouterr().err
    # the loop's layout, eval/m<k>.json, wins over iter<t>/eval.json
    (tmp_path / "eval").mkdir()
    for k in (1, 2, 11):
        (tmp_path / "eval" / f"m{k}.json").write_text(json.dumps({"task": {"accuracy": k / 20}}))
    assert srlm(["eval", "report", str(tmp_path)]) == 1  # report.md is there: replaced only when asked
    assert "pass --overwrite" in capsys.readouterr().err
    assert srlm(["eval", "report", str(tmp_path), "--overwrite"]) == 0
    assert "| metric | M1 | M2 | M11 | trend |" in (tmp_path / "report.md").read_text()


def test_cli_data(capsys: pytest.CaptureFixture) -> None:
    path = DATA / "eval/mt_bench_questions.jsonl"
    if not path.is_file():
        pytest.skip("shared data not available")
    assert srlm(["eval", "data", str(path)]) == 0
    assert "80 prompts" in capsys.readouterr().out
