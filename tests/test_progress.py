"""Progress: periodic lines with done/total, rate and ETA, and a heartbeat while nothing finishes."""

import io
import time

from srlm_fast.progress import Progress, format_duration


def test_a_silent_stretch_still_prints_lines_and_finished_work_shows_rate_and_eta():
    out = io.StringIO()
    with Progress("judging", interval_s=0.2, stream=out) as p:
        p.add_total(10)
        time.sleep(0.7)  # one slow batch: nothing finishes, the heartbeat speaks anyway
        silent = out.getvalue().splitlines()
        p.update(4)
        time.sleep(0.5)
    assert len(silent) >= 2 and all("judging: 0/10 requests" in x and "ETA ?" in x for x in silent)
    last = out.getvalue().splitlines()[-1]
    assert "judging: 4/10 requests" in last and "/s, ETA 0m0" in last


def test_disabled_progress_is_silent_and_durations_read_well():
    out = io.StringIO()
    with Progress("x", enabled=False, interval_s=0.05, stream=out) as p:
        p.add_total(3)
        time.sleep(0.2)
        p.update(3)
    assert out.getvalue() == ""
    assert format_duration(75) == "1m15s" and format_duration(3 * 3600 + 120) == "3h02m"
    assert format_duration(float("inf")) == "?"


def test_a_muted_scope_counts_but_prints_nothing():
    out = io.StringIO()
    with Progress("evaluate", interval_s=0.05, stream=out) as p:
        p.muted = True  # a nested scope reports meanwhile
        p.add_total(2)
        time.sleep(0.3)
        p.update(1)
        assert out.getvalue() == ""
        p.muted = False
        time.sleep(0.3)
    assert "evaluate: 1/2 requests" in out.getvalue().splitlines()[-1]


def test_a_scope_with_no_items_yet_reports_its_elapsed_time_only():
    out = io.StringIO()
    with Progress("evaluate M1", interval_s=0.05, stream=out):
        time.sleep(0.2)  # its work went to nested scopes
    lines = out.getvalue().splitlines()
    assert lines and all(x.startswith("    evaluate M1: 0m00s elapsed") and "0/0" not in x for x in lines)
