"""bench/split_eft.py: disjoint parts of equal prompt counts, a prompt's examples kept together."""

import pytest

from bench.split_eft import draw_ift, split


def test_parts_are_disjoint_whole_prompts_and_deterministic():
    rows = [{"prompt_index": p, "reply_index": r} for p in range(10) for r in range(p % 3 + 1)]
    parts = split(rows, prompts=4, parts=2, seed=0)
    owners = [{r["prompt_index"] for r in part} for part in parts]
    assert [len(o) for o in owners] == [4, 4] and not owners[0] & owners[1]
    for part, own in zip(parts, owners):
        assert len(part) == sum(p % 3 + 1 for p in own)  # every example of each prompt
    assert split(rows, prompts=4, parts=2, seed=0) == parts
    assert split(rows, prompts=4, parts=2, seed=1) != parts


def test_too_many_prompts_asked_for_is_an_error():
    with pytest.raises(SystemExit, match="need 12"):
        split([{"prompt_index": i} for i in range(10)], prompts=6, parts=2, seed=0)


def test_instruction_draws_are_disjoint_and_skip_held_out_prompts():
    rows = [{"prompt": f"Question {i}?", "response": "Answer."} for i in range(10)]
    draws = draw_ift(rows, n=4, parts=2, seed=0, held_out={"question 3?"})
    prompts = [{r["prompt"] for r in d} for d in draws]
    assert [len(p) for p in prompts] == [4, 4] and not prompts[0] & prompts[1]
    assert "Question 3?" not in prompts[0] | prompts[1]
    with pytest.raises(SystemExit, match="9 are usable"):
        draw_ift(rows, n=5, parts=2, seed=0, held_out={"question 3?"})
