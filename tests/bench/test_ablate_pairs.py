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


def test_subsample_keeps_a_seeded_random_subset_in_order_and_every_replay_row():
    rows = [{"prompt": "What is 2 plus 3?", "chosen": "5", "rejected": str(6 + i)} for i in range(10)] + ROWS[
        -1:
    ]
    kept, removed = kept_pairs(rows, {"right"}, subsample=4, seed=1)
    assert removed == 6 and kept[-1].get("replay") and len(kept) == 5
    assert (
        kept
        == kept_pairs(rows, {"right"}, subsample=4, seed=1)[0]
        != kept_pairs(rows, {"right"}, 4, seed=2)[0]
    )
    assert [rows.index(r) for r in kept] == sorted(rows.index(r) for r in kept)
