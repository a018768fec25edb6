"""The self-instruct shape filter: a generated prompt passes only if it is worded like some seed prompt."""

import pytest

from srlm_fast.recipe import tasks
from srlm_fast.recipe.prompt_shapes import PromptShapes
from srlm_fast.recipe.selfinstruct import NearDupIndex, SelfInstructConfig, SelfInstructStats, filter_prompts

SEEDS = [
    "Does the list 16, 72, 55 contain 56?",
    "Does the list 3, 9 contain 4?",
    "Which number is bigger, 34 or 78?",
    "What is the capital of Chile?",
    "What is the capital of France?",
    "What is the third word in river, basket, stone?",
]


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("Does the list 16, 72, 55 contain 56?", "does the list _ contain _"),
        ("Does the list 16, 80, 68, 36, 79?", "does the list _"),  # truncated: the question is gone
        ("Which number is bigger, 34 or 78?", "which number is _ or _"),  # "bigger, 34" reads as a list
        ("What is the capital of Peru.", "what is the capital of _"),  # final punctuation is not wording
        ("What is the capital of New Zealand?", "what is the capital of _"),  # blanks merge
        ("What is the third word in a, b, c, d?", "what is the third word in _"),
        ("Sing me a song", "_"),  # no template word at all
    ],
)
def test_shape_blanks_numbers_lists_and_rare_words(text, shape):
    assert PromptShapes(SEEDS, min_count=1).shape(text) == shape


def test_matches_the_seed_wordings_only():
    shapes = PromptShapes(SEEDS, min_count=2)
    assert all(shapes.matches(s) for s in SEEDS)
    assert shapes.matches("Does the list 1, 2, 3, 4, 5 contain 6?")
    assert shapes.matches("What is the capital of Japan")
    assert not shapes.matches("Does the list 16, 80, 68, 36, 79?")
    assert not shapes.matches("What is the capital letters of 7?")  # "letters" is no seed's word
    assert not shapes.matches("Is the number 251 odd?")


def test_min_count_decides_what_is_wording():
    # "third" is used by one seed: wording at min_count 1, a blank at 2 (so any ordinal passes).
    assert "third" in PromptShapes(SEEDS, min_count=1).template_words
    assert PromptShapes(SEEDS, min_count=2).matches("What is the fourth word in a, b, c?")
    assert not PromptShapes(SEEDS, min_count=1).matches("What is the fourth word in a, b, c?")


def test_numbers_are_never_wording():
    shapes = PromptShapes(["Compute 16 + 17."] * 5, min_count=1)
    assert "16" not in shapes.template_words and shapes.shape("Compute 99 + 1.") == "compute _ + _"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="min_count must be >= 1"):
        PromptShapes(SEEDS, min_count=0)
    with pytest.raises(ValueError, match="at least one seed prompt"):
        PromptShapes([], min_count=1)


def test_filter_counts_off_shape_prompts():
    cfg = SelfInstructConfig(min_words=1, shapes=PromptShapes(SEEDS, min_count=2))
    stats = SelfInstructStats()
    kept = filter_prompts(
        ["What is the capital of Peru?", "Does the list 4, 5?", "Is the number 251 odd?"],
        NearDupIndex(),
        cfg,
        stats,
    )
    assert kept == ["What is the capital of Peru?"]
    assert stats.to_dict()["removed"]["off_shape"] == 2 and stats.kept == 1


def test_task_world_prompts_pass_their_own_shapes():
    """Held-out task-world prompts are worded like the seed prompts of the same world: the filter keeps them."""
    seeds = [t.prompt for t in tasks.eval_prompts(300, seed=1)]
    shapes = PromptShapes(seeds, min_count=5)
    held_out = [t.prompt for t in tasks.eval_prompts(500, seed=2)]
    kept = sum(shapes.matches(p) for p in held_out) / len(held_out)
    assert kept >= 0.95, kept
