"""bench/copy_warmup.py's drills: each answer is read off its own prompt, the kinds alternate, a seed fixes them."""

import re

from bench.copy_warmup import KINDS, drills


def _answer_from_prompt(prompt: str) -> str:
    """What a perfect reader answers, from the prompt alone."""
    if prompt.startswith("Copy: "):
        return prompt.removeprefix("Copy: ")
    if m := re.fullmatch(r"(.*)\. (\S+)=\?", prompt):
        return dict(kv.split("=") for kv in m[1].split())[m[2]]
    m = re.fullmatch(r"(.*)\. After (\S+)\?", prompt)
    assert m, prompt
    xs = m[1].split()
    return xs[xs.index(m[2]) + 1]


def test_every_answer_is_read_off_its_prompt():
    rows = drills(600, seed=3)
    assert [r["kind"] for r in rows[:6]] == [*KINDS, *KINDS]
    for r in rows:
        assert _answer_from_prompt(r["prompt"]) == r["response"], r
        # the answer's items all occur in the prompt: no drill can be fitted from memory
        assert set(r["response"].split()) <= set(re.findall(r"[^\s=.?]+", r["prompt"]))


def test_a_seed_fixes_the_drills_and_another_seed_changes_them():
    assert drills(50, seed=0) == drills(50, seed=0)
    assert drills(50, seed=0) != drills(50, seed=1)
