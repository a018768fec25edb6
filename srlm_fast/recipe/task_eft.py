"""Judge-training examples from the task world: candidates of known quality, EFT and meta-EFT examples.

For a task, a candidate of known quality gets the formulaic judgment of `judge.judgment_for_score` (score first,
`EFT_MIX` in proportion: mostly right and wrong bare answers, the judge's work in the loop; the wrong answers are
the near misses a model makes: another element of the list, a sort with one swap or a lost element, an off-by-one
count):
    5 correct   the bare answer                              (all five criteria)
    4 padded    the answer plus one fluff sentence           (not "Perfect": something extra)
    3 fluffy    the answer buried in several fluff sentences (not "Direct" either)
    2 partial   partly right (a range, a hint, half the list)(not "Correct")
    1 wrong     the right kind of answer, wrong value        (only "Relevant")
    0 off-topic unrelated text or another task's answer      (nothing)
so the checker says correct exactly for scores >= judge.CORRECT_THRESHOLD. Meta-EFT examples
(`meta_eft_examples`) teach the Meta-Rewarding arm's meta-judge to grade a judgment of such a candidate.
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from srlm_fast.recipe.judge import (
    CORRECT_THRESHOLD,
    JudgeTemplate,
    judgment_for_score,
    meta_instruction,
    meta_score,
)
from srlm_fast.recipe.task_families import BY_NAME, FAMILIES, KNOWLEDGE_FAMILY_NAMES
from srlm_fast.recipe.tasks import Task, check, is_heldout, iter_tasks, make_task

FLUFF_OPEN = ("Great question!", "Sure, happy to help.", "Let me think about this.", "Good one!")
FLUFF_CLOSE = ("Hope this helps!", "Let me know if you need more.", "Have a nice day!", "Glad to help!")
OFF_TOPIC = (
    "Cats like to sleep in the sun.",
    "The weather is nice today.",
    "I enjoy long walks by the sea.",
    "Music makes people happy.",
    "Tea is best served warm.",
    "Birds sing in the morning.",
)


@dataclass(frozen=True)
class EFTExample:
    """A judge-training example: judge prompt → formulaic judgment ending in `Score: <n>`."""

    prompt: str
    response: str
    score: int
    quality: str
    instruction: str
    candidate: str
    family: str = ""

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "response": self.response,
            "score": self.score,
            "quality": self.quality,
            "instruction": self.instruction,
            "candidate": self.candidate,
            "family": self.family,
        }


# ---------------------------------------------------------------- candidates of known quality

QUALITIES: tuple[str, ...] = ("off_topic", "wrong", "partial", "fluffy", "padded", "correct")  # index = score


def candidate(task: Task, quality: str, rng: random.Random) -> str:
    """A response to `task` of the given quality (see the module docstring for the ladder)."""
    fam = BY_NAME[task.family]
    params = dict(task.params)
    params.pop("wording", None)
    ans = task.answer
    if quality == "correct":
        return ans
    if quality == "padded":
        return f"{ans}. {rng.choice(FLUFF_CLOSE)}"
    if quality == "fluffy":
        opener, closer = rng.sample(FLUFF_OPEN, 2), rng.choice(FLUFF_CLOSE)
        return f"{opener[0]} {opener[1]} The answer is {ans}. {closer}"
    if quality == "partial":
        return fam.partial(params, ans, rng)
    if quality == "wrong":
        return fam.wrong(params, ans, rng)
    if quality == "off_topic":
        if rng.random() < 0.5:
            return rng.choice(OFF_TOPIC)
        other = rng.choice([f for f in FAMILIES if f.kind != fam.kind])
        t = make_task(other, other.sample(rng), 0)
        return t.answer if t is not None else rng.choice(OFF_TOPIC)
    raise ValueError(f"unknown quality {quality!r}; expected one of {QUALITIES}")


def blind_answer(task: Task, rng: random.Random) -> str:
    """A wrong answer that ignores the prompt: the answer to another task of the same family.

    It is the error an undertrained model makes, answering from the family's answers alone: "Which is larger, 37
    or 82?" gets 71, "Name the capital of Norway" gets Tokyo (M1 of the embedded default gives a number that is
    not in the prompt to ~95% of its wrong `max` and `larger` answers). The family's own `wrong` makes near misses
    instead (the other element, a sort with one swap), so a judge trained on those alone never sees the errors
    it will judge in the loop. Telling a number that occurs in the prompt from one that does not is a token
    match for the judge, while the actor has to produce the number: a gap between verifying and generating, in
    principle. Measured (docs/experiments.md, `seed_data.eft_blind`): the 4M-parameter judge does not learn even that.

    In the knowledge families it is another training fact's answer, which the judge's retrieved evidence then
    states about another entity: the actor's error when it copies the wrong evidence line ("Gityres is the capital
    of Pozisil" → "Gityres" for Dulem's capital). A grounded SmolLM2 judge learns to reject it (README).
    """
    fam = BY_NAME[task.family]
    # A knowledge fact's answer exists only in the corpus: another held-out fact's answer in SFT data would leak it.
    # (Only there, so the original families' examples stay those measured.)
    knowledge = fam.name in KNOWLEDGE_FAMILY_NAMES
    for _ in range(20):
        other = make_task(fam, fam.sample(rng), 0)
        if other is not None and other.answer != task.answer and not (knowledge and is_heldout(other)):
            return other.answer
    return fam.wrong(dict(task.params), task.answer, rng)


_VOWELS = "aeiouy"


def misspelled(word: str, rng: random.Random) -> str:
    """`word` with one slip of copying: a letter after the first dropped or doubled, two neighbours swapped, or a
    vowel replaced by another. These are the wrong answers a reading actor makes once it copies from its evidence
    ("Neskikrel" for Neskikral, "Pokash" for Pokaesh: SmolLM2's M4 in the evidence loop), and a judge trained on
    other names only calls them right, as they nearly match its evidence line. The result may equal `word` (a swap
    of two equal letters): the caller's checker re-grading redraws it."""
    if len(word) < 3:
        return word + word[-1]
    i = rng.randrange(1, len(word) - 1)
    slip = rng.choice(("drop", "double", "swap", "vowel"))
    if slip == "drop":
        return word[:i] + word[i + 1 :]
    if slip == "double":
        return word[: i + 1] + word[i:]
    if slip == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    vowels = [j for j, c in enumerate(word) if j and c.lower() in _VOWELS] or [i]
    j = rng.choice(vowels)
    return word[:j] + rng.choice([v for v in _VOWELS if v != word[j].lower()]) + word[j + 1 :]


#: How many EFT examples of each score (0..5) one cycle of `eft_examples` makes. The judge's job inside the loop
#: is to tell the model's right answers from its wrong ones, and those are bare answers: scores 5 and 1 get three
#: times the examples of the style rungs (off-topic, partial, fluffy, padded), which keep the rubric's ladder.
EFT_MIX: tuple[int, ...] = (1, 3, 1, 1, 1, 3)


def _graded_candidates(
    n: int,
    seed: int,
    families: Sequence[str] | None,
    mix: Sequence[int],
    stream: str,
    blind: float = 0.0,
    misspell: float = 0.0,
) -> list[tuple[Task, int, str]]:
    """n (task, score, candidate) triples, scores in proportion `mix`, each re-graded by the checker; a share
    `blind` of the wrong (score 1) candidates are prompt-blind (`blind_answer`) instead of near misses, and of the
    other wrong candidates of word families a share `misspell` are the right answer `misspelled`."""
    for name, share in (("blind", blind), ("misspell", misspell)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    if len(mix) != len(QUALITIES) or min(mix) < 0 or not sum(mix):
        raise ValueError(f"mix needs {len(QUALITIES)} non-negative counts, not all 0; got {tuple(mix)}")
    cycle = [score for score, count in enumerate(mix) for _ in range(count)]
    rng = random.Random(f"{stream}:{seed}")
    tasks = iter_tasks(seed + zlib.crc32(stream.encode()) % 1_000_003 + 1_000_003, "train", families)
    out: list[tuple[Task, int, str]] = []
    while len(out) < n:
        task = next(tasks)
        score = cycle[len(out) % len(cycle)]
        # `blind and`: with blind = 0 no random number is drawn, so the examples stay those of earlier versions.
        is_blind = score == 1 and blind and rng.random() < blind
        # Likewise `misspell and`: no draw, no change, when it is 0.
        is_misspelled = (
            score == 1 and not is_blind and misspell and BY_NAME[task.family].kind == "word"
            and rng.random() < misspell
        )  # fmt: skip
        for _ in range(10):
            if is_misspelled:
                cand = misspelled(task.answer, rng)
            elif is_blind:
                cand = blind_answer(task, rng)
            else:
                cand = candidate(task, QUALITIES[score], rng)
            if check(task.prompt, cand).correct == (score >= CORRECT_THRESHOLD):
                out.append((task, score, cand))
                break
    return out


def eft_examples(
    n: int,
    seed: int = 0,
    template: JudgeTemplate | None = None,
    families: Sequence[str] | None = None,
    mix: Sequence[int] = EFT_MIX,
    score_first: bool = True,
    verdicts: bool = False,
    evidence: Callable[[list[tuple[str, str]]], list[list[str]]] | None = None,
    reference: bool = False,
    blind: float = 0.0,
    misspell: float = 0.0,
) -> list[EFTExample]:
    """n judge-training examples; scores 0..5 in proportion `mix` (one count per score; (1,)*6 balances them).

    Every candidate is re-graded by `check` so its score agrees with the checker (a generator that happens to
    produce the right answer, e.g. a 'wrong' value that is correct, is redrawn). The judgment is the score line
    alone by default; `verdicts` adds the criteria verdicts, `score_first` puts them after the score (see
    `judge.format_judgment`). `evidence` ((instruction, candidate) items → passages, the loop's retriever) puts
    retrieved evidence into a grounded template's prompts, as the grounded judge will read it in the loop; in
    the task world "supported by the evidence" is "correct" (the corpus states every fact it asks about), so the
    scores stay the checker's ladder.
    `reference`: the judgment starts with the task's answer (`Answer: ...`), so the
    judge learns to solve the task first and then compare (the loop's expected-mode judge writes everything up
    to `Score:` greedily, its own answer included, before the score distribution is read).
    `blind`: the share of wrong answers that ignore the prompt (`blind_answer`) rather than near misses.
    `misspell`: of the other wrong answers of word families, the share that are the right answer `misspelled`.
    """
    template = template or JudgeTemplate.compact()
    graded = _graded_candidates(n, seed, families, mix, "eft", blind, misspell)
    passages = evidence([(t.prompt, c) for t, _, c in graded]) if evidence else [None] * len(graded)
    out = [
        EFTExample(
            prompt=template.render(task.prompt, cand, ev),
            response=(f"Answer: {task.answer}\n" if reference else "")
            + judgment_for_score(score, score_first, verdicts),
            score=score,
            quality=QUALITIES[score],
            instruction=task.prompt,
            candidate=cand,
            family=task.family,
        )
        for (task, score, cand), ev in zip(graded, passages)
    ]
    random.Random(f"eft-order:{seed}").shuffle(out)
    return out


@dataclass(frozen=True)
class MetaEFTExample:
    """A meta-judge training example: a judgment (of `candidate`, scoring it `judged_score`) judged."""

    prompt: str
    response: str
    score: int  # the meta score of the judgment
    true_score: int  # what the candidate is worth
    judged_score: int  # what the judged judgment says it is worth
    instruction: str
    candidate: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def meta_eft_examples(
    n: int,
    seed: int = 0,
    template: JudgeTemplate | None = None,
    families: Sequence[str] | None = None,
    mix: Sequence[int] = EFT_MIX,
    score_first: bool = True,
    verdicts: bool = False,
    p_exact: float = 0.4,
    evidence: Callable[[list[tuple[str, str]]], list[list[str]]] | None = None,
) -> list[MetaEFTExample]:
    """n meta-judge examples (Meta-Rewarding): a candidate of known score s, a judgment claiming score s' (s' = s
    with probability `p_exact`, else another score), and the meta-judgment `judge.meta_score(s, s')`.
    `evidence`: as in `eft_examples`, the retrieved passages of each (instruction, candidate), for a grounded meta
    rubric (`JudgeTemplate.meta_grounded`): the meta-judge then reads what the judge it judges read."""
    template = template or JudgeTemplate.meta()
    rng = random.Random(f"meta-eft-judged:{seed}")
    graded = _graded_candidates(n, seed, families, mix, "meta-eft")
    passages = evidence([(t.prompt, c) for t, _, c in graded]) if evidence else [None] * len(graded)
    out = []
    for (task, score, cand), ev in zip(graded, passages, strict=True):
        judged = score if rng.random() < p_exact else rng.choice([s for s in range(6) if s != score])
        meta = meta_score(score, judged)
        out.append(
            MetaEFTExample(
                prompt=template.render(
                    meta_instruction(task.prompt, cand), judgment_for_score(judged, score_first, verdicts), ev
                ),
                response=judgment_for_score(meta, score_first, verdicts),
                score=meta,
                true_score=score,
                judged_score=judged,
                instruction=task.prompt,
                candidate=cand,
            )
        )
    return out
