"""bench/ablate_pairs.py keeps the pairs of the asked checker outcomes, and every replay row."""

from bench.ablate_pairs import kept_pairs

ROWS = [
    {"prompt": "What is 2 plus 3?", "chosen": "5", "rejected": "6"},  # right
    {"prompt": "What is 2 plus 3?", "chosen": "6", "rejected": "5"},  # wrong
    {"prompt": "What is 2 plus 3?", "chosen": "7", "rejected": "6"},  # both wrong
    {"prompt": "Write a poem.", "chosen": "a", "rejected": "b"},  # no task
    {"prompt": "What is 2 plus 3?", "chosen": "6", "rejected": "6", "replay": True},
]


def test_abstain_keeps_the_decided_pairs_and_precise_only_the_right_ones():
    rows, removed = kept_pairs(ROWS, {"right", "wrong"})
    assert [r["chosen"] for r in rows] == ["5", "6", "6"] and removed == 2
    rows, removed = kept_pairs(ROWS, {"right"})
    assert [r["chosen"] for r in rows] == ["5", "6"] and rows[1].get("replay") and removed == 3
