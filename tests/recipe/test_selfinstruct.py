"""Self-instruct: few-shot prompts, parsing, length filters, near-duplicate removal at scale, the loop's counts."""

import random

import pytest

from srlm_fast.recipe.selfinstruct import (
    FEWSHOT_HEADER,
    NearDupIndex,
    SelfInstructConfig,
    SelfInstructStats,
    build_fewshot_prompt,
    filter_prompts,
    generate_prompts,
    parse_generated,
    sft_examples,
)

SEEDS = [f"Seed task number {w} about something." for w in "abcdefghij"]


def test_fewshot_prompt_mix_and_fallback() -> None:
    rng = random.Random(0)
    p = build_fewshot_prompt(SEEDS, [], rng)
    lines = p.split("\n")
    assert lines[0] == FEWSHOT_HEADER and lines[-1] == "Task:"
    assert len(lines) == 10 and all(line.removeprefix("Task: ") in SEEDS for line in lines[1:-1])
    gen = ["Generated one here.", "Generated two here.", "Generated three here."]
    p = build_fewshot_prompt(SEEDS, gen, rng)
    shots = [line.removeprefix("Task: ") for line in p.split("\n")[1:-1]]
    assert sum(s in gen for s in shots) == 2 and sum(s in SEEDS for s in shots) == 6
    one = build_fewshot_prompt(SEEDS, gen[:1], rng)
    assert sum(s in gen for s in one.split("\n")) == 0  # shots carry the "Task: " prefix
    assert sum(line.removeprefix("Task: ") in gen for line in one.split("\n")) == 1
    # A multi-line seed stays on one line.
    assert "\n" not in build_fewshot_prompt(["a\nb c"], [], rng).split("\n", 1)[1].removesuffix("\nTask:")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (" What is 3 plus 4?\nTask: more", "What is 3 plus 4?"),
        ("Task: Reverse the word cat.", "Reverse the word cat."),
        ('\n\n"Name a red fruit."', "Name a red fruit."),
        ("1. Sort these words.", "Sort these words."),
        ("   \n  ", ""),
        ("Task:", ""),
    ],
)
def test_parse_generated(text: str, want: str) -> None:
    assert parse_generated(text) == want


def test_filters_count_each_reason() -> None:
    cfg = SelfInstructConfig(min_words=3, max_words=10, min_chars=10, max_chars=60)
    index = NearDupIndex(threshold=0.7)
    index.add_many(["Write a short poem about the sea and the wind."], force=True)
    stats = SelfInstructStats()
    kept = filter_prompts(
        [
            "",
            "Hi there",  # too short
            "one two three four five six seven eight nine ten eleven",  # too long in words
            "x" * 70 + " a b",  # too long in chars
            "Write a short poem about the sea and wind.",  # near duplicate of the pool
            "Explain how rain forms in clouds.",
            "Explain how rain forms in clouds!",  # duplicate of the one just kept
            "List three uses for a paper clip.",
        ],
        index,
        cfg,
        stats,
    )
    assert kept == ["Explain how rain forms in clouds.", "List three uses for a paper clip."]
    assert stats.to_dict()["removed"] == {
        "empty": 1,
        "too_short": 1,
        "too_long": 2,
        "off_shape": 0,
        "duplicate": 2,
        "surplus": 0,
    }
    assert stats.generated == 8 and stats.kept == 2


def test_near_dup_keeps_different_numbers_apart() -> None:
    index = NearDupIndex(threshold=0.7)
    assert index.add("What is 23 plus 41?")
    assert index.add("What is 23 plus 47?")
    assert not index.add("what is 23 PLUS 47")  # same shingles: an exact duplicate after normalisation
    assert index.add("Compute 5 - 3.")
    assert index.add("Compute 5 + 3.")  # operators are words: a different task
    assert len(index) == 4


def test_near_dup_scales_to_20k_prompts() -> None:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(12, 25))) for _ in range(20000)]
    # Near duplicates: one word of a >= 12-word prompt replaced (Jaccard about 0.8).
    dups = []
    for t in texts[:300]:
        words = t.split()
        words[len(words) // 2] = "changed"
        dups.append(" ".join(words))
    index = NearDupIndex(threshold=0.7)
    first = index.add_many(texts)
    second = index.add_many(dups)
    assert sum(d is not None for d in first) == 0  # random prompts: no false positives
    assert sum(d is not None for d in second) >= 297  # LSH recall at J~0.8 is ~1
    assert all(d == t for d, t in zip(second, texts) if d is not None)
    # Scaling without timing: exact checks stay a few per query (only LSH candidates), where comparing against the
    # whole pool would make ~2e8 of them.
    assert index.comparisons < 2 * (len(texts) + len(dups))


def test_generate_prompts_loop_counts_and_seeds() -> None:
    calls = []
    outputs = iter(
        [
            "Name a fruit that is red.",
            "Name a fruit that is red.",  # duplicate of the previous
            "Seed task number a about something.",  # duplicate of a seed
            "ok",  # too short
            "Describe a rainy day in two lines.",
            "What is the tallest animal on land?",
            "Give me a word that rhymes with cat.",
        ]
        + [f"Invent a new game number {i} for kids." for i in range(20)]
    )

    def generate_fn(prompts, n, temperature, top_p, max_new_tokens, seed):
        calls.append((len(prompts), n, temperature, top_p, seed))
        assert all(p.startswith(FEWSHOT_HEADER) for p in prompts)
        return [[next(outputs)] for _ in prompts]

    cfg = SelfInstructConfig(batch_size=3)
    kept, stats = generate_prompts(generate_fn, SEEDS, n=4, config=cfg, seed=7)
    assert kept == [
        "Name a fruit that is red.",
        "Describe a rainy day in two lines.",
        "What is the tallest animal on land?",
        "Give me a word that rhymes with cat.",
    ]
    assert [c[4] for c in calls] == [7, 8, 9] and calls[0][1:4] == (1, 0.6, 0.9)
    d = stats.to_dict()
    assert d["generated"] == 9 and d["kept"] == 4
    assert d["removed"]["duplicate"] == 2 and d["removed"]["too_short"] == 1 and d["removed"]["surplus"] == 2
    assert d["generated"] == d["kept"] + sum(d["removed"].values())


def test_generate_prompts_stops_after_max_rounds() -> None:
    def generate_fn(prompts, **kw):
        return [["Seed task number a about something."] for _ in prompts]  # always a duplicate

    kept, stats = generate_prompts(
        generate_fn, SEEDS, n=5, config=SelfInstructConfig(batch_size=2, max_rounds=3)
    )
    assert kept == [] and stats.rounds == 3 and stats.removed["duplicate"] == 6


def test_sft_examples_teach_the_format() -> None:
    pool = [f"Prompt {i} asks for thing {i}." for i in range(100)]
    for prompt, target in sft_examples(pool, 20, seed=1):
        assert prompt.startswith(FEWSHOT_HEADER) and prompt.endswith("\nTask:")
        assert target in pool and f"Task: {target}\n" not in prompt
        assert prompt.count("Task:") == 5  # 3 + 1 shots and the open slot
