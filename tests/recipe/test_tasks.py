"""Task world: determinism, split disjointness, checker correctness for every family, EFT scores by quality."""

import random
from collections import Counter

import pytest

from srlm_fast.recipe import task_eft, task_families, tasks
from srlm_fast.recipe.judge import CORRECT_THRESHOLD, JudgeTemplate, parse_score
from srlm_fast.recipe.task_families import KNOWLEDGE_FAMILY_NAMES


def test_deterministic_from_seed() -> None:
    assert tasks.sample_tasks(200, seed=3) == tasks.sample_tasks(200, seed=3)
    assert tasks.sample_tasks(200, seed=3) != tasks.sample_tasks(200, seed=4)
    assert [e.to_dict() for e in task_eft.eft_examples(60, seed=1)] == [
        e.to_dict() for e in task_eft.eft_examples(60, 1)
    ]
    assert tasks.eval_prompts(50, seed=0) == tasks.eval_prompts(50, seed=0)


def test_eval_prompts_disjoint_from_training() -> None:
    train = {t.prompt for t in tasks.sample_tasks(20000, seed=0)}
    train |= {e.instruction for e in task_eft.eft_examples(600, seed=0)}
    ev = tasks.eval_prompts(300, seed=0)
    assert len({t.prompt for t in ev}) == 300
    assert not train & {t.prompt for t in ev}
    assert all(tasks.is_heldout(t) for t in ev)
    # Every family of the default world reaches the eval split, and only those.
    assert set(Counter(t.family for t in ev)) == set(task_families.DEFAULT_FAMILIES)


def test_prompts_and_responses_are_short() -> None:
    for t in tasks.sample_tasks(2000, seed=5):
        assert len(t.prompt.split()) <= 30
        assert len(t.answer) <= 40
    for e in task_eft.eft_examples(120, seed=5):
        assert len(e.candidate.split()) <= 20


@pytest.mark.parametrize("family", task_families.FAMILY_NAMES)
def test_checker_grades_each_family(family: str) -> None:
    rng = random.Random(family)
    for t in tasks.sample_tasks(40, seed=11, families=[family]):
        assert tasks.check(t.prompt, t.answer).status == "correct", t
        # Any wording variation of case, spacing and final punctuation still parses.
        messy = "  " + t.prompt.upper().rstrip(".?").replace(" ", "  ") + "  "
        assert tasks.check(messy, t.answer).family == family
        for quality in ("off_topic", "wrong", "partial"):
            cand = task_eft.candidate(t, quality, rng)
            if cand == t.answer:
                continue
            assert not tasks.check(t.prompt, cand).correct, (t, quality, cand)
        for quality in ("fluffy", "padded"):
            assert tasks.check(t.prompt, task_eft.candidate(t, quality, rng)).correct


CHECKER_CASES = [  # (prompt, response, correct)
    ("What is 17 plus 25?", "42", True),
    ("what is 17 plus 25", "The answer is 42.", True),
    ("What is 17 plus 25?", "41", False),
    ("What is 17 plus 25?", "40 41 42 43", False),  # listing numbers is not answering
    ("What is 300 plus 1000?", "1300", True),  # outside the sampled range, still graded
    ("Reverse the word house.", "esuoh", True),
    ("Sort from smallest to largest: 9, 3, 5.", "3, 5, 9", True),
    ("Sort from smallest to largest: 9, 3, 5.", "3, 9, 5", False),
    ("Join these words with dashes: red, sky, cat.", "red - sky - cat", True),
    ("Is 14 even or odd?", "even or odd", False),
    ("Convert dog to uppercase.", "DOG", True),
    ("Convert dog to uppercase.", "Dog", False),
    ("What is the capital of japan?", "tokyo", True),
    ("What comes next: 3, 6, 9, 12?", "15", True),
    ("Which is larger, 17 or 71?", "71", True),
    ("Which is larger, 17 or 71?", "17 or 71", False),
    ("Find the minimum of 8, 3, 12.", "3", True),
    ("Find the minimum of 8, 3, 12.", "8", False),
    ("How many numbers are in 4, 9, 2, 7?", "4", True),
    ("What is the second word in apple, river, stone?", "river", True),
    ("What is the last word in apple, river, stone?", "It is Stone.", True),
    # Naming every word of the list is not picking one.
    ("What is the last word in apple, river, stone?", "apple, river, stone", False),
    ("Is 5 in the list 1, 5, 9?", "yes", True),
    ("Is 5 in the list 1, 5, 9?", "yes or no", False),
    ("Does the list 1, 5, 9 contain 4?", "No.", True),
]


@pytest.mark.parametrize(("prompt", "response", "correct"), CHECKER_CASES)
def test_checker_on_hand_written_cases(prompt: str, response: str, correct: bool) -> None:
    assert tasks.check(prompt, response).correct is correct


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "Write a poem about the sea.",
        "What is seventeen plus two?",
        "What is the capital of Atlantis?",  # parses as a shape, but no such fact
        "What comes next: 1, 2, 4, 8?",  # not an arithmetic progression
        "Is 12 even or odd or prime?",
    ],
)
def test_unparseable_prompts_are_counted_not_graded(prompt: str) -> None:
    r = tasks.check(prompt, "anything")
    assert r.status == "unparseable" and not r.correct and not r.parsed


def test_check_many_counts() -> None:
    items = [("What is 2 plus 2?", "4"), ("What is 2 plus 2?", "5"), ("Tell me a joke.", "no")]
    s = tasks.check_many(items)
    assert (s.correct, s.wrong, s.unparseable) == (1, 1, 1)
    assert s.accuracy == 0.5 and s.by_family == {"add": (1, 2)}


def test_eft_scores_order_by_quality_and_agree_with_checker() -> None:
    examples = task_eft.eft_examples(600, seed=2, template=JudgeTemplate.compact())
    # The default mix: right and wrong bare answers (5 and 1) three times as often as each style rung.
    assert Counter(e.score for e in examples) == {0: 60, 1: 180, 2: 60, 3: 60, 4: 60, 5: 180}
    balanced = task_eft.eft_examples(60, seed=2, mix=(1,) * 6)
    assert Counter(e.score for e in balanced) == {s: 10 for s in range(6)}
    with pytest.raises(ValueError, match="mix"):
        task_eft.eft_examples(6, mix=(1, 1))
    # The judgment is the score line alone by default; with verdicts, either order parses to the same score.
    assert all(e.response == f"Score: {e.score}" for e in examples)
    for first in (True, False):
        wordy = task_eft.eft_examples(12, seed=2, score_first=first, verdicts=True)
        assert all(
            e.response.startswith("Score:") == first and parse_score(e.response) == e.score for e in wordy
        )
    for e in examples:
        assert parse_score(e.response) == e.score
        assert task_eft.QUALITIES[e.score] == e.quality
        assert tasks.check(e.instruction, e.candidate).correct == (e.score >= CORRECT_THRESHOLD)
        assert e.prompt == JudgeTemplate.compact().render(e.instruction, e.candidate)
    # Among correct candidates, more fluff → lower score (the judge learns to dislike padding).
    mean_len = {q: 0.0 for q in ("correct", "padded", "fluffy")}
    for q in mean_len:
        lens = [len(e.candidate) for e in examples if e.quality == q]
        mean_len[q] = sum(lens) / len(lens)
    assert mean_len["correct"] < mean_len["padded"] < mean_len["fluffy"]


def _knowledge_tasks() -> list:
    return [tasks.make_task(fam, fields, 0) for fam, _, fields in tasks.knowledge_facts()]


def test_blind_wrong_answers_ignore_the_prompt() -> None:
    """`blind`: that share of the wrong examples answer another task of the family (a number from no list of the
    prompt, another country's capital); blind = 0 draws no random number, so the examples stay as they were."""
    plain = task_eft.eft_examples(600, seed=2)
    assert [e.to_dict() for e in task_eft.eft_examples(600, seed=2, blind=0.0)] == [
        e.to_dict() for e in plain
    ]
    blind = task_eft.eft_examples(600, seed=2, blind=1.0)
    assert Counter(e.score for e in blind) == Counter(e.score for e in plain)
    wrong = [e for e in blind if e.score == 1]
    for e in wrong:
        assert not tasks.check(e.instruction, e.candidate).correct

    # The near misses of `max`/`min`/`larger` are mostly other numbers of the prompt; blind answers mostly not.
    def from_prompt(examples: list) -> float:
        picked = [e for e in examples if e.score == 1 and e.family in ("max", "min", "larger")]
        inside = [e.candidate in e.instruction.replace(",", " ").replace("?", " ").split() for e in picked]
        return sum(inside) / len(inside)

    assert from_prompt(plain) > 0.6 and from_prompt(blind) < 0.2
    # Each family's blind answer is an answer of that family: a capital for a capital question.
    capitals = set(task_families.CAPITALS.values())
    assert all(e.candidate in capitals for e in wrong if e.family == "capital")
    # In the knowledge families: another training fact's answer (the corpus states it about another entity), never
    # a held-out fact's, which SFT data must not show.
    kb = task_eft.eft_examples(400, seed=2, families=KNOWLEDGE_FAMILY_NAMES, blind=1.0)
    training = {t.answer for t in _knowledge_tasks() if not tasks.is_heldout(t)}
    kb_wrong = [e.candidate for e in kb if e.score == 1]
    assert len(kb_wrong) > 50 and set(kb_wrong) <= training
    half = task_eft.eft_examples(600, seed=2, blind=0.5)
    assert 0.2 < from_prompt(half) < 0.6
    with pytest.raises(ValueError, match="blind"):
        task_eft.eft_examples(6, blind=1.5)


def _one_slip_apart(a: str, b: str) -> bool:
    """Whether `b` is `a` with one letter dropped or doubled, two neighbours swapped, or one letter replaced."""
    if abs(len(a) - len(b)) == 1:
        short, long = sorted((a, b), key=len)
        return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))
    diff = [i for i in range(len(a)) if a[i] != b[i]] if len(a) == len(b) else None
    return diff is not None and (
        len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]])
    )


def test_misspelled_makes_one_slip_and_keeps_the_first_letter() -> None:
    rng = random.Random(0)
    for word in ("Neskikral", "Pokaesh", "Metro", "Oslo", "Rio"):
        for _ in range(50):
            slip = task_eft.misspelled(word, rng)
            assert slip[0] == word[0] and (slip == word or _one_slip_apart(word, slip)), (word, slip)
    assert task_eft.misspelled("Xi", rng) == "Xii"
    assert not _one_slip_apart("Pokaesh", "Pokaesh!!") and not _one_slip_apart("Metro", "Mrteo")


def test_misspelled_wrong_answers_are_the_right_name_with_one_slip() -> None:
    """`misspell`: that share of the wrong examples of word families (not blind) are the right answer misspelled;
    numbers keep their near misses, and misspell = 0 draws no random number (examples as they were)."""
    fams = KNOWLEDGE_FAMILY_NAMES
    plain = task_eft.eft_examples(400, seed=3, families=fams, blind=0.5)
    same = task_eft.eft_examples(400, seed=3, families=fams, blind=0.5, misspell=0.0)
    assert [e.to_dict() for e in same] == [e.to_dict() for e in plain]
    slips = task_eft.eft_examples(400, seed=3, families=fams, blind=0.5, misspell=1.0)
    assert Counter(e.score for e in slips) == Counter(e.score for e in plain)
    wrong = [e for e in slips if e.score == 1]
    assert all(not tasks.check(e.instruction, e.candidate).correct for e in wrong)
    capitals = [e for e in wrong if e.family == "kb_capital"]
    near = [_one_slip_apart(tasks.parse_prompt(e.instruction)[2], e.candidate) for e in capitals]
    assert len(capitals) > 30 and 0.3 < sum(near) / len(near) < 0.7  # blind ones stay other facts' answers
    rivers = [e.candidate for e in wrong if e.family == "kb_river"]
    assert rivers and all(c.isdigit() for c in rivers)
    with pytest.raises(ValueError, match="misspell"):
        task_eft.eft_examples(6, misspell=-0.1)


def test_ift_examples_are_correct() -> None:
    for ex in tasks.ift_examples(300, seed=9):
        assert tasks.check(ex.prompt, ex.response).correct
    assert len(tasks.train_prompts(100, seed=0)) == 100
