"""The embedded verifiable task world: short instruction tasks with a programmatic checker.

It lets anyone watch, with ground truth, whether self-rewarding improves a model: a tiny model trained from scratch
on CPU learns these tasks in minutes, and every prompt — including prompts the model invents during self-instruct —
is graded by parsing it back into a task and solving it.

Each family has a few wordings (templates), a sampler of parameters, a solver, and generators of wrong and partly
correct answers. Everything is deterministic from a seed (a private `random.Random`, never the global one).

The default world (`DEFAULT_FAMILIES`) holds the families a 4M-parameter model with a byte-level BPE can learn
partly in minutes of SFT: each works on whole tokens (compare, select, order, count, copy numbers and words;
small sums; parity; capitals). Partly is the point: self-rewarding can only amplify answers the model gets right
some of the time. The spelling families stay gradeable by the checker (self-instructed prompts may use them).

Train/eval split: a task's canonical key (family + parameters, plus the wording for lookup families) is hashed;
about `HELDOUT_PERCENT`% of keys are evaluation-only, so evaluation prompts never occur in training. Lookup
families split on wording because their facts are few and a fact never seen in training cannot be known.

EFT (judge-training) examples: for a task, a candidate of known quality gets the formulaic judgment of
`judge.judgment_for_score` (score first, `EFT_MIX` in proportion: mostly right and wrong bare answers, the
judge's work in the loop; the wrong answers are the near misses a model makes: another element of the list, a
sort with one swap or a lost element, an off-by-one count):
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
import itertools
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from srlm_fast.recipe.judge import (
    CORRECT_THRESHOLD,
    JudgeTemplate,
    judgment_for_score,
    meta_instruction,
    meta_score,
)

HELDOUT_PERCENT = 10

WORDS = (
    "apple", "river", "stone", "cloud", "tiger", "lemon", "pencil", "garden", "window", "rocket",
    "button", "candle", "forest", "guitar", "honey", "island", "jacket", "kitten", "ladder", "mirror",
    "orange", "planet", "rabbit", "silver", "turtle", "violin", "wagon", "yellow", "zebra", "bottle",
    "castle", "dragon", "engine", "flower", "hammer", "monkey", "needle", "pepper", "bridge", "cherry",
    "banana", "letter", "summer", "coffee", "puzzle", "marble", "basket", "pocket", "camera", "spider",
)  # fmt: skip

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo", "Greece": "Athens",
    "Russia": "Moscow", "China": "Beijing", "Canada": "Ottawa", "Chile": "Santiago", "Cuba": "Havana",
    "Ireland": "Dublin", "Poland": "Warsaw", "Austria": "Vienna", "Portugal": "Lisbon", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Thailand": "Bangkok", "Hungary": "Budapest", "Denmark": "Copenhagen",
}  # fmt: skip

ANTONYMS = {
    "hot": "cold", "big": "small", "fast": "slow", "up": "down", "light": "dark", "happy": "sad",
    "old": "young", "open": "closed", "full": "empty", "early": "late", "hard": "soft", "high": "low",
    "rich": "poor", "strong": "weak", "wet": "dry", "loud": "quiet", "long": "short", "thick": "thin",
    "clean": "dirty", "win": "lose", "push": "pull", "day": "night", "left": "right", "first": "last",
}  # fmt: skip

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

# Field name -> regex for parsing prompts back into tasks. Numbers allow a sign so that model-invented
# prompts with negative numbers still parse; word lists are comma-separated.
_FIELD_RE = {
    "a": r"-?\d+",
    "b": r"-?\d+",
    "w": r"[A-Za-z]+",
    "c": r"[A-Za-z]",
    "xs": r"-?\d+(?:\s*,\s*-?\d+)+",
    "ws": r"[A-Za-z]+(?:\s*,\s*[A-Za-z]+)+",
    "country": r"[A-Za-z][A-Za-z ]*?",
    "pos": r"first|second|third|fourth|last",
}


@dataclass(frozen=True)
class Task:
    """One task instance: its prompt (in one wording), the reference answer and what it was built from."""

    family: str
    prompt: str
    answer: str
    params: tuple[tuple[str, str], ...]
    wording: int

    @property
    def key(self) -> str:
        """Canonical identity used for the train/eval split."""
        return f"{self.family}|" + "|".join(f"{k}={v}" for k, v in self.params)


@dataclass(frozen=True)
class IFTExample:
    """An instruction-following example: prompt → reference response."""

    prompt: str
    response: str
    family: str = ""

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "response": self.response, "family": self.family}


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


@dataclass(frozen=True)
class CheckResult:
    """The checker's verdict: status is 'correct', 'wrong' or 'unparseable' (the prompt is no known task)."""

    status: str
    family: str | None = None
    expected: str | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def parsed(self) -> bool:
        return self.status != "unparseable"


@dataclass(frozen=True)
class _Family:
    name: str
    templates: tuple[str, ...]
    sample: Callable[[random.Random], dict[str, str]]
    solve: Callable[[dict[str, str]], str | None]
    kind: str  # how answers are compared: number | numlist | word | wordcase | wordseq | dashed | parity
    wrong: Callable[[dict[str, str], str, random.Random], str]
    partial: Callable[[dict[str, str], str, random.Random], str]
    split_on_wording: bool = False
    regexes: tuple[re.Pattern, ...] = field(default=(), compare=False)


# ---------------------------------------------------------------- answer helpers


def _ints(s: str) -> list[int]:
    return [int(x) for x in re.findall(r"-?\d+", s)]


def _words(s: str) -> list[str]:
    return [w.strip() for w in s.split(",")]


def _num_wrong(p: dict, ans: str, rng: random.Random) -> str:
    delta = rng.choice([-3, -2, -1, 1, 2, 3, 10, -10])
    return str(int(ans) + delta)


def _num_partial(p: dict, ans: str, rng: random.Random) -> str:
    # A range that contains the answer: on the right track, not an answer.
    v = int(ans)
    lo = v - rng.randint(1, 3)
    return f"It is between {max(lo, 0) if v >= 0 else lo} and {v + rng.randint(1, 3)}."


def _hint_partial(p: dict, ans: str, rng: random.Random) -> str:
    return f"It starts with {ans[0].upper()}."


def _swap_last_two(items: list[str]) -> list[str]:
    return [*items[:-2], items[-1], items[-2]]


# ---------------------------------------------------------------- families


def _sample_ab(lo: int, hi: int) -> Callable[[random.Random], dict[str, str]]:
    return lambda rng: {"a": str(rng.randint(lo, hi)), "b": str(rng.randint(lo, hi))}


def _sample_sub(rng: random.Random) -> dict[str, str]:
    a = rng.randint(10, 99)
    return {"a": str(a), "b": str(rng.randint(1, a - 1))}


def _sample_word(rng: random.Random) -> dict[str, str]:
    return {"w": rng.choice(WORDS)}


def _sample_count_char(rng: random.Random) -> dict[str, str]:
    w = rng.choice(WORDS)
    return {"c": rng.choice(w), "w": w}


def _sample_wordlist(rng: random.Random) -> dict[str, str]:
    ws = rng.sample(WORDS, rng.randint(3, 4))
    if ws == sorted(ws):
        ws.reverse()
    return {"ws": ", ".join(ws)}


def _sample_seq(rng: random.Random) -> dict[str, str]:
    start, step = rng.randint(1, 20), rng.randint(2, 9)
    return {"xs": ", ".join(str(start + i * step) for i in range(4))}


def _solve_seq(p: dict) -> str | None:
    xs = _ints(p["xs"])
    steps = {b - a for a, b in itertools.pairwise(xs)}
    return str(xs[-1] + steps.pop()) if len(xs) >= 3 and len(steps) == 1 else None


def _reverse_partial(p: dict, ans: str, rng: random.Random) -> str:
    return ans[: len(ans) // 2] + p["w"][len(ans) // 2 :].lower()  # half reversed


def _sorted_nums(p: dict) -> str:
    return ", ".join(map(str, sorted(_ints(p["xs"]))))


def _sorted_words(p: dict) -> str:
    return ", ".join(sorted(w.lower() for w in _words(p["ws"])))


def _sample_pair(rng: random.Random) -> dict[str, str]:
    a, b = rng.sample(range(1, 100), 2)
    return {"a": str(a), "b": str(b)}


def _sample_list(lo: int, hi: int) -> Callable[[random.Random], dict[str, str]]:
    return lambda rng: {"xs": ", ".join(map(str, rng.sample(range(1, 100), rng.randint(lo, hi))))}


def _sample_short_nums(rng: random.Random) -> dict[str, str]:
    xs = rng.sample(range(1, 100), rng.randint(3, 4))
    if xs == sorted(xs):
        xs.reverse()
    return {"xs": ", ".join(map(str, xs))}


def _sample_member(rng: random.Random) -> dict[str, str]:
    xs = rng.sample(range(1, 100), rng.randint(3, 5))
    a = rng.choice(xs) if rng.random() < 0.5 else rng.choice([v for v in range(1, 100) if v not in xs])
    return {"a": str(a), "xs": ", ".join(map(str, xs))}


def _sample_position(rng: random.Random) -> dict[str, str]:
    ws = rng.sample(WORDS, rng.randint(3, 4))
    return {"pos": rng.choice((*POSITIONS[: len(ws)], "last")), "ws": ", ".join(ws)}


POSITIONS = ("first", "second", "third", "fourth")


def _solve_position(p: dict) -> str | None:
    ws = [w.lower() for w in _words(p["ws"])]
    pos = p["pos"].lower()
    i = len(ws) - 1 if pos == "last" else POSITIONS.index(pos)
    return ws[i] if i < len(ws) else None


def _solve_larger(p: dict) -> str | None:
    a, b = int(p["a"]), int(p["b"])
    return None if a == b else str(max(a, b))


def _solve_member(p: dict) -> str:
    return "yes" if int(p["a"]) in _ints(p["xs"]) else "no"


def _other_element(pick: Callable[[list[int]], int]) -> Callable[[dict, str, random.Random], str]:
    """A wrong answer a model makes: another element of the list, or now and then a number close to the
    right one that is not in the list at all."""

    def wrong(p: dict, ans: str, rng: random.Random) -> str:
        xs = _ints(p["xs"])
        if rng.random() < 0.25:
            return str(pick(xs) + rng.choice([-2, -1, 1, 2]))
        return str(rng.choice([x for x in xs if x != int(ans)]))

    return wrong


def _sort_wrong(p: dict, ans: str, rng: random.Random) -> str:
    """Near misses of a sorted list: one adjacent swap, an element lost or doubled, the input order."""
    xs = _ints(ans)
    kind = rng.randrange(4)
    if kind == 0:
        i = rng.randrange(len(xs) - 1)
        xs[i], xs[i + 1] = xs[i + 1], xs[i]
    elif kind == 1:
        del xs[rng.randrange(len(xs))]
    elif kind == 2:
        i = rng.randrange(len(xs))
        xs.insert(i, xs[i])
    else:
        xs = _ints(p["xs"])
    return ", ".join(map(str, xs))


def _count_wrong(p: dict, ans: str, rng: random.Random) -> str:
    return str(max(1, int(ans) + rng.choice([-2, -1, 1, 1, 2])))


def _position_wrong(p: dict, ans: str, rng: random.Random) -> str:
    return rng.choice([w.lower() for w in _words(p["ws"]) if w.lower() != ans])


def _build_families() -> tuple[_Family, ...]:
    fams = [
        _Family(
            "larger",
            (
                "Which is larger, {a} or {b}?",
                "Pick the bigger number: {a} or {b}.",
                "Which number is bigger, {a} or {b}?",
            ),
            _sample_pair,
            _solve_larger,
            "number",
            lambda p, ans, rng: str(min(int(p["a"]), int(p["b"]))),
            lambda p, ans, rng: f"Either {p['a']} or {p['b']}.",
        ),
        _Family(
            "min",
            ("What is the smallest of {xs}?", "Which number is smallest: {xs}?", "Find the minimum of {xs}."),
            _sample_list(3, 5),
            lambda p: str(min(_ints(p["xs"]))),
            "number",
            _other_element(min),
            lambda p, ans, rng: f"Either {ans} or {sorted(_ints(p['xs']))[1]}.",
        ),
        _Family(
            "count_items",
            ("How many numbers are in {xs}?", "Count the numbers in {xs}."),
            _sample_list(2, 7),
            lambda p: str(len(_ints(p["xs"]))),
            "number",
            _count_wrong,
            _num_partial,
        ),
        _Family(
            "position",
            ("What is the {pos} word in {ws}?", "Name the {pos} word of {ws}."),
            _sample_position,
            _solve_position,
            "pick",
            _position_wrong,
            _hint_partial,
        ),
        _Family(
            "member",
            ("Is {a} in the list {xs}?", "Does the list {xs} contain {a}?"),
            _sample_member,
            _solve_member,
            "yesno",
            lambda p, ans, rng: "no" if ans == "yes" else "yes",
            lambda p, ans, rng: "It might be.",
        ),
        _Family(
            "add",
            ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."),
            _sample_ab(1, 20),
            lambda p: str(int(p["a"]) + int(p["b"])),
            "number",
            _num_wrong,
            _num_partial,
        ),
        _Family(
            "sub",
            ("What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}."),
            _sample_sub,
            lambda p: str(int(p["a"]) - int(p["b"])),
            "number",
            _num_wrong,
            _num_partial,
        ),
        _Family(
            "mul",
            ("What is {a} times {b}?", "Multiply {a} by {b}.", "Compute {a} * {b}."),
            _sample_ab(2, 12),
            lambda p: str(int(p["a"]) * int(p["b"])),
            "number",
            _num_wrong,
            _num_partial,
        ),
        _Family(
            "reverse",
            ("Reverse the word {w}.", "Spell {w} backwards.", "Write {w} in reverse."),
            _sample_word,
            lambda p: p["w"].lower()[::-1],
            "word",
            lambda p, ans, rng: p["w"].lower(),
            _reverse_partial,
        ),
        _Family(
            "upper",
            ("Write {w} in capital letters.", "Convert {w} to uppercase.", "Make {w} all caps."),
            _sample_word,
            lambda p: p["w"].upper(),
            "wordcase",
            lambda p, ans, rng: p["w"].lower(),
            lambda p, ans, rng: p["w"].capitalize(),
        ),
        _Family(
            "length",
            ("How many letters are in {w}?", "Count the letters in {w}.", "How long is the word {w}?"),
            _sample_word,
            lambda p: str(len(p["w"])),
            "number",
            _num_wrong,
            _num_partial,
        ),
        _Family(
            "count_letter",
            ("How many times does {c} appear in {w}?", "Count the letter {c} in {w}."),
            _sample_count_char,
            lambda p: str(p["w"].lower().count(p["c"].lower())),
            "number",
            lambda p, ans, rng: str(int(ans) + rng.choice([1, 2])),
            _num_partial,
        ),
        _Family(
            "sort_nums",
            ("Sort from smallest to largest: {xs}.", "Put these numbers in order: {xs}."),
            _sample_short_nums,
            _sorted_nums,
            "numlist",
            _sort_wrong,
            lambda p, ans, rng: ", ".join(_swap_last_two(ans.split(", "))),
        ),
        _Family(
            "max",
            ("What is the largest of {xs}?", "Which number is biggest: {xs}?", "Find the maximum of {xs}."),
            _sample_list(3, 5),
            lambda p: str(max(_ints(p["xs"]))),
            "number",
            _other_element(max),
            lambda p, ans, rng: f"Either {ans} or {sorted(_ints(p['xs']))[-2]}.",
        ),
        _Family(
            "sort_words",
            ("Sort these words alphabetically: {ws}.", "Put in alphabetical order: {ws}."),
            _sample_wordlist,
            _sorted_words,
            "wordseq",
            lambda p, ans, rng: ", ".join(reversed(ans.split(", "))),
            lambda p, ans, rng: ", ".join(_swap_last_two(ans.split(", "))),
        ),
        _Family(
            "join_dash",
            ("Join these words with dashes: {ws}.", "Connect with hyphens: {ws}."),
            _sample_wordlist,
            lambda p: "-".join(w.lower() for w in _words(p["ws"])),
            "dashed",
            lambda p, ans, rng: " ".join(ans.split("-")),
            lambda p, ans, rng: "-".join(ans.split("-")[:2]) + " " + " ".join(ans.split("-")[2:]),
        ),
        _Family(
            "next_number",
            ("What comes next: {xs}?", "Continue the pattern: {xs}."),
            _sample_seq,
            _solve_seq,
            "number",
            _num_wrong,
            _num_partial,
        ),
        _Family(
            "parity",
            ("Is {a} even or odd?", "Is the number {a} odd or even?"),
            lambda rng: {"a": str(rng.randint(1, 999))},
            lambda p: "even" if int(p["a"]) % 2 == 0 else "odd",
            "parity",
            lambda p, ans, rng: "odd" if ans == "even" else "even",
            lambda p, ans, rng: "It depends on the last digit.",
        ),
        _Family(
            "capital",
            ("What is the capital of {country}?", "Name the capital city of {country}."),
            lambda rng: {"country": rng.choice(sorted(CAPITALS))},
            lambda p: _lookup(CAPITALS, p["country"]),
            "word",
            lambda p, ans, rng: rng.choice([c for c in CAPITALS.values() if c != ans]),
            _hint_partial,
            split_on_wording=True,
        ),
        _Family(
            "antonym",
            ("What is the opposite of {w}?", "Give the antonym of {w}."),
            lambda rng: {"w": rng.choice(sorted(ANTONYMS))},
            lambda p: _lookup(ANTONYMS, p["w"]),
            "word",
            lambda p, ans, rng: rng.choice([a for a in ANTONYMS.values() if a != ans]),
            _hint_partial,
            split_on_wording=True,
        ),
    ]
    return tuple(_with_regexes(f) for f in fams)


def _lookup(table: dict[str, str], key: str) -> str | None:
    lowered = {k.lower(): v for k, v in table.items()}
    return lowered.get(key.strip().lower())


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template.rstrip(".?"))
    out = []
    for part in parts:
        m = re.fullmatch(r"\{(\w+)\}", part)
        if m:
            out.append(f"(?P<{m.group(1)}>{_FIELD_RE[m.group(1)]})")
        else:
            out.append(r"\s+".join(re.escape(w) for w in part.split(" ")))
    # Tolerate case, runs of whitespace and the final punctuation: model-invented prompts vary in these.
    return re.compile(r"^\s*" + "".join(out) + r"\s*[.?!]?\s*$", re.IGNORECASE)


def _with_regexes(f: _Family) -> _Family:
    return dataclasses.replace(f, regexes=tuple(_template_regex(t) for t in f.templates))


FAMILIES: tuple[_Family, ...] = _build_families()
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)
_BY_NAME = {f.name: f for f in FAMILIES}

#: The families the embedded default samples (training, evaluation, self-instruct seeds). A byte-level BPE makes
#: every word and every number below 100 one token, so a family can only generalise to held-out prompts when it
#: works on whole tokens: comparing, selecting, ordering, counting and copying them, small sums, facts. The
#: spelling families (reverse, upper, length, count_letter, sort_words, join_dash) ask for letters inside a
#: token: a 4M model trained for minutes answers their held-out words from the wording's priors at best (0% for
#: reverse and upper), so they stay gradeable by the checker but out of the default world.
DEFAULT_FAMILIES: tuple[str, ...] = (
    "larger", "max", "min", "sort_nums", "count_items", "position", "member", "add", "parity", "capital",
)  # fmt: skip


def _families(families: Sequence[str] | None) -> list[_Family]:
    names = families or DEFAULT_FAMILIES
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {', '.join(FAMILY_NAMES)}")
    return [_BY_NAME[n] for n in names]


# ---------------------------------------------------------------- building tasks


def _make_task(fam: _Family, params: dict[str, str], wording: int) -> Task | None:
    answer = fam.solve(params)
    if answer is None:
        return None
    prompt = fam.templates[wording].format(**params)
    key_params = tuple(sorted(params.items()))
    if fam.split_on_wording:
        key_params = (*key_params, ("wording", str(wording)))
    return Task(fam.name, prompt, answer, key_params, wording)


def is_heldout(task: Task) -> bool:
    """True for the ~HELDOUT_PERCENT% of tasks reserved for evaluation (stable across processes)."""
    return zlib.crc32(task.key.encode()) % 100 < HELDOUT_PERCENT


def iter_tasks(seed: int, split: str = "train", families: Sequence[str] | None = None) -> Iterator[Task]:
    """An endless, deterministic stream of tasks from one split ('train' or 'eval'), families drawn uniformly."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    fams = _families(families)
    rng = random.Random(f"tasks:{seed}:{split}")
    want_heldout = split == "eval"
    while True:
        fam = rng.choice(fams)
        task = _make_task(fam, fam.sample(rng), rng.randrange(len(fam.templates)))
        if task is not None and is_heldout(task) == want_heldout:
            yield task


def sample_tasks(
    n: int, seed: int, split: str = "train", families: Sequence[str] | None = None
) -> list[Task]:
    """The first n tasks of `iter_tasks` (repeats possible: lookup families have few facts)."""
    it = iter_tasks(seed, split, families)
    return [next(it) for _ in range(n)]


def ift_examples(n: int, seed: int = 0, families: Sequence[str] | None = None) -> list[IFTExample]:
    """n training examples prompt → correct, concise response."""
    return [IFTExample(t.prompt, t.answer, t.family) for t in sample_tasks(n, seed, "train", families)]


def eval_prompts(n: int, seed: int = 0, families: Sequence[str] | None = None) -> list[Task]:
    """n distinct held-out evaluation tasks (their prompts never occur in any training split)."""
    out: list[Task] = []
    seen: set[str] = set()
    it = iter_tasks(seed, "eval", families)
    for _ in range(200 * n + 1000):  # bounded: a small family set may have fewer than n distinct prompts
        if len(out) == n:
            break
        t = next(it)
        if t.prompt not in seen:
            seen.add(t.prompt)
            out.append(t)
    return out


def train_prompts(n: int, seed: int = 0, families: Sequence[str] | None = None) -> list[str]:
    """n training-split prompts (for self-instruct seeds), without duplicates where the task space allows."""
    seen: dict[str, None] = {}
    it = iter_tasks(seed, "train", families)
    for _ in range(50 * n + 1000):
        if len(seen) == n:
            break
        seen.setdefault(next(it).prompt, None)
    return list(seen)


# ---------------------------------------------------------------- candidates of known quality

QUALITIES: tuple[str, ...] = ("off_topic", "wrong", "partial", "fluffy", "padded", "correct")  # index = score


def candidate(task: Task, quality: str, rng: random.Random) -> str:
    """A response to `task` of the given quality (see the module docstring for the ladder)."""
    fam = _BY_NAME[task.family]
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
        t = _make_task(other, other.sample(rng), 0)
        return t.answer if t is not None else rng.choice(OFF_TOPIC)
    raise ValueError(f"unknown quality {quality!r}; expected one of {QUALITIES}")


#: How many EFT examples of each score (0..5) one cycle of `eft_examples` makes. The judge's job inside the loop
#: is to tell the model's right answers from its wrong ones, and those are bare answers: scores 5 and 1 get three
#: times the examples of the style rungs (off-topic, partial, fluffy, padded), which keep the rubric's ladder.
EFT_MIX: tuple[int, ...] = (1, 3, 1, 1, 1, 3)


def _graded_candidates(
    n: int, seed: int, families: Sequence[str] | None, mix: Sequence[int], stream: str
) -> list[tuple[Task, int, str]]:
    """n (task, score, candidate) triples, scores in proportion `mix`, each re-graded by the checker."""
    if len(mix) != len(QUALITIES) or min(mix) < 0 or not sum(mix):
        raise ValueError(f"mix needs {len(QUALITIES)} non-negative counts, not all 0; got {tuple(mix)}")
    cycle = [score for score, count in enumerate(mix) for _ in range(count)]
    rng = random.Random(f"{stream}:{seed}")
    tasks = iter_tasks(seed + zlib.crc32(stream.encode()) % 1_000_003 + 1_000_003, "train", families)
    out: list[tuple[Task, int, str]] = []
    while len(out) < n:
        task = next(tasks)
        score = cycle[len(out) % len(cycle)]
        for _ in range(10):
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
) -> list[EFTExample]:
    """n judge-training examples; scores 0..5 in proportion `mix` (one count per score; (1,)*6 balances them).

    Every candidate is re-graded by `check` so its score agrees with the checker (a generator that happens to
    produce the right answer, e.g. a 'wrong' value that is correct, is redrawn). The judgment is the score line
    alone by default; `verdicts` adds the criteria verdicts, `score_first` puts them after the score (see
    `judge.format_judgment`).
    """
    template = template or JudgeTemplate.compact()
    out = [
        EFTExample(
            prompt=template.render(task.prompt, cand),
            response=judgment_for_score(score, score_first, verdicts),
            score=score,
            quality=QUALITIES[score],
            instruction=task.prompt,
            candidate=cand,
            family=task.family,
        )
        for task, score, cand in _graded_candidates(n, seed, families, mix, "eft")
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
) -> list[MetaEFTExample]:
    """n meta-judge examples (Meta-Rewarding): a candidate of known score s, a judgment claiming score s' (s' = s
    with probability `p_exact`, else another score), and the meta-judgment `judge.meta_score(s, s')`."""
    template = template or JudgeTemplate.meta()
    rng = random.Random(f"meta-eft-judged:{seed}")
    out = []
    for task, score, cand in _graded_candidates(n, seed, families, mix, "meta-eft"):
        judged = score if rng.random() < p_exact else rng.choice([s for s in range(6) if s != score])
        meta = meta_score(score, judged)
        out.append(
            MetaEFTExample(
                prompt=template.render(
                    meta_instruction(task.prompt, cand), judgment_for_score(judged, score_first)
                ),
                response=judgment_for_score(meta, score_first),
                score=meta,
                true_score=score,
                judged_score=judged,
                instruction=task.prompt,
                candidate=cand,
            )
        )
    return out


# ---------------------------------------------------------------- the checker


def parse_prompt(prompt: str) -> tuple[str, dict[str, str], str] | None:
    """Parse a prompt back into (family, params, reference answer), or None if it is no known task."""
    for fam in FAMILIES:
        for rx in fam.regexes:
            m = rx.match(prompt)
            if m is None:
                continue
            params = {k: v.strip() for k, v in m.groupdict().items()}
            answer = fam.solve(params)
            if answer is not None:
                return fam.name, params, answer
    return None


def _answer_matches(kind: str, answer: str, response: str, params: dict[str, str] | None = None) -> bool:
    if kind == "number":
        # Exactly one number, the right one: listing several numbers must not count as answering.
        return _ints(response) == [int(answer)]
    if kind == "numlist":
        return _ints(response) == _ints(answer)
    tokens = re.findall(r"[A-Za-z]+", response)
    if kind == "wordcase":
        return answer in tokens
    lower = [t.lower() for t in tokens]
    if kind == "word":
        return answer.lower() in lower
    if kind == "parity":
        other = "odd" if answer == "even" else "even"
        return answer in lower and other not in lower
    if kind == "yesno":
        other = "no" if answer == "yes" else "yes"
        return answer in lower and other not in lower
    if kind == "pick":
        # The picked word and no other word of the list: naming every word is not picking one.
        others = {w.lower() for w in _words((params or {}).get("ws", ""))} - {answer}
        return answer in lower and not others & set(lower)
    if kind == "wordseq":
        seq = answer.split(", ")
        return any(lower[i : i + len(seq)] == seq for i in range(len(lower) - len(seq) + 1))
    if kind == "dashed":
        return answer in re.findall(r"[a-z]+(?:-[a-z]+)+", re.sub(r"\s*-\s*", "-", response.lower()))
    raise ValueError(f"unknown answer kind {kind!r}")


def check(prompt: str, response: str) -> CheckResult:
    """Grade any (prompt, response): 'correct', 'wrong', or 'unparseable' when the prompt is no known task.

    The response is correct when it contains the reference answer in the family's sense (see `_answer_matches`):
    fluff around the answer is allowed, so padded answers count as correct (the judge, not the checker,
    penalises padding).
    """
    parsed = parse_prompt(prompt)
    if parsed is None:
        return CheckResult("unparseable")
    family, params, answer = parsed
    ok = _answer_matches(_BY_NAME[family].kind, answer, response, params)
    return CheckResult("correct" if ok else "wrong", family, answer)


@dataclass(frozen=True)
class CheckSummary:
    """Counts over many graded (prompt, response) pairs; accuracy is over parseable prompts."""

    n: int
    correct: int
    wrong: int
    unparseable: int
    by_family: dict[str, tuple[int, int]]  # family -> (correct, total)

    @property
    def accuracy(self) -> float | None:
        parsed = self.correct + self.wrong
        return self.correct / parsed if parsed else None

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "correct": self.correct,
            "wrong": self.wrong,
            "unparseable": self.unparseable,
            "accuracy": self.accuracy,
            "by_family": {k: list(v) for k, v in self.by_family.items()},
        }


def check_many(items: Sequence[tuple[str, str]]) -> CheckSummary:
    """Grade many (prompt, response) pairs and count the outcomes."""
    counts: Counter[str] = Counter()
    fam_ok: Counter[str] = Counter()
    fam_n: Counter[str] = Counter()
    for prompt, response in items:
        r = check(prompt, response)
        counts[r.status] += 1
        if r.family is not None:
            fam_n[r.family] += 1
            fam_ok[r.family] += r.correct
    return CheckSummary(
        n=len(items),
        correct=counts["correct"],
        wrong=counts["wrong"],
        unparseable=counts["unparseable"],
        by_family={f: (fam_ok[f], fam_n[f]) for f in sorted(fam_n)},
    )
