"""bench/collect_run.py's readers of a run's printed log and of a `/usr/bin/time -v` report."""

from bench.collect_run import stages_from_log, time_v

LOG = """  ▶ evaluate M1
    judging human rankings: 0/30 requests, 0m30s elapsed, 0.00/s, ETA ?
    evaluate M1 took 211.5s
  ▶ iter1: DPO → M2
step 1/6 | loss 0.6931 | took 3s
    iter1: DPO → M2 took 147.2s
"""

TIME_V = """\tCommand being timed: "srlm run"
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5
\tMaximum resident set size (kbytes): 8608788
"""


def test_stage_times_come_from_the_took_lines_only():
    assert stages_from_log(LOG) == [
        {"stage": "evaluate M1", "seconds": 211.5},
        {"stage": "iter1: DPO → M2", "seconds": 147.2},
    ]


def test_time_v_reads_wall_time_in_either_format_and_peak_rss():
    assert time_v(TIME_V) == {"wall_s": 3723.5, "peak_rss_mb": 8407}
    assert time_v("Elapsed (wall clock) time (h:mm:ss or m:ss): 8:31.12")["wall_s"] == 511.12
    assert time_v("nothing here") == {}
