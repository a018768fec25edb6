"""The loop's summary table shows the columns its evaluations produced, and only those."""

from srlm_fast.recipe.summary import format_table


def test_a_run_judged_against_humans_shows_no_task_world_columns():
    rows = [{"model": "M1", "judge_pairwise_humans": 0.375, "judge_accuracy_human_pairs": 0.6}]
    header, _, row = format_table(rows).splitlines()
    assert "judge~ranks" in header and "judge~pairs" in header
    assert "task acc" not in header and "judge=checker" not in header
    assert "37.5%" in row and "60.0%" in row


def test_a_task_world_run_shows_its_columns_and_dashes_for_missing_values():
    rows = [{"model": "M1", "task_accuracy": 0.4, "judge_agreement_own": 0.5},
            {"model": "M2", "task_accuracy": 0.45, "judge_agreement_own": 0.55, "pass_at_1": 0.39}]  # fmt: skip
    lines = format_table(rows).splitlines()
    assert "task acc" in lines[0] and "cand pass@1" in lines[0] and "judge~pairs" not in lines[0]
    assert "45.0%" in lines[3] and lines[2].split("|")[3].strip() == "-"  # M1 has no candidates
