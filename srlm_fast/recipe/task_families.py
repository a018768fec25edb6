"""The task world's families: for each, its wordings (templates), a sampler of parameters, a solver, generators
of wrong and partly correct answers, and how its answers are compared (`answer_matches`).

Everything is deterministic from the caller's `random.Random` (never the global one). The world API built on these
(tasks, the train/eval split, the checker) is `recipe.tasks`; the judge-training examples are `recipe.task_eft`.

The default world (`DEFAULT_FAMILIES`) holds the families a 4M-parameter model with a byte-level BPE can learn
partly in minutes of SFT: each works on whole tokens (compare, select, order, count, copy numbers and words;
small sums; parity; capitals). Partly is the point: self-rewarding can only amplify answers the model gets right
some of the time. The spelling families stay gradeable by the checker (self-instructed prompts may use them).

At ~540 lines this module is over the project's ~500: it is one table (`_build_families`), and the samplers,
solvers and wrong-answer makers above it are the one- or two-line helpers only that table uses; split apart, a
family would be read across files.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from srlm_fast.recipe.task_knowledge import CAPITAL_OF, DECOY_NAMES, RIVER_KM

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
    "place": r"[A-Za-z]+",
    "river": r"[A-Za-z]+",
}


@dataclass(frozen=True)
class Family:
    """One family of tasks: what `recipe.tasks` needs to sample, phrase, solve and grade its instances."""

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


def _build_families() -> tuple[Family, ...]:
    fams = [
        Family(
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
        Family(
            "min",
            ("What is the smallest of {xs}?", "Which number is smallest: {xs}?", "Find the minimum of {xs}."),
            _sample_list(3, 5),
            lambda p: str(min(_ints(p["xs"]))),
            "number",
            _other_element(min),
            lambda p, ans, rng: f"Either {ans} or {sorted(_ints(p['xs']))[1]}.",
        ),
        Family(
            "count_items",
            ("How many numbers are in {xs}?", "Count the numbers in {xs}."),
            _sample_list(2, 7),
            lambda p: str(len(_ints(p["xs"]))),
            "number",
            _count_wrong,
            _num_partial,
        ),
        Family(
            "position",
            ("What is the {pos} word in {ws}?", "Name the {pos} word of {ws}."),
            _sample_position,
            _solve_position,
            "pick",
            _position_wrong,
            _hint_partial,
        ),
        Family(
            "member",
            ("Is {a} in the list {xs}?", "Does the list {xs} contain {a}?"),
            _sample_member,
            _solve_member,
            "yesno",
            lambda p, ans, rng: "no" if ans == "yes" else "yes",
            lambda p, ans, rng: "It might be.",
        ),
        Family(
            "add",
            ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."),
            _sample_ab(1, 20),
            lambda p: str(int(p["a"]) + int(p["b"])),
            "number",
            _num_wrong,
            _num_partial,
        ),
        Family(
            "sub",
            ("What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}."),
            _sample_sub,
            lambda p: str(int(p["a"]) - int(p["b"])),
            "number",
            _num_wrong,
            _num_partial,
        ),
        Family(
            "mul",
            ("What is {a} times {b}?", "Multiply {a} by {b}.", "Compute {a} * {b}."),
            _sample_ab(2, 12),
            lambda p: str(int(p["a"]) * int(p["b"])),
            "number",
            _num_wrong,
            _num_partial,
        ),
        Family(
            "reverse",
            ("Reverse the word {w}.", "Spell {w} backwards.", "Write {w} in reverse."),
            _sample_word,
            lambda p: p["w"].lower()[::-1],
            "word",
            lambda p, ans, rng: p["w"].lower(),
            _reverse_partial,
        ),
        Family(
            "upper",
            ("Write {w} in capital letters.", "Convert {w} to uppercase.", "Make {w} all caps."),
            _sample_word,
            lambda p: p["w"].upper(),
            "wordcase",
            lambda p, ans, rng: p["w"].lower(),
            lambda p, ans, rng: p["w"].capitalize(),
        ),
        Family(
            "length",
            ("How many letters are in {w}?", "Count the letters in {w}.", "How long is the word {w}?"),
            _sample_word,
            lambda p: str(len(p["w"])),
            "number",
            _num_wrong,
            _num_partial,
        ),
        Family(
            "count_letter",
            ("How many times does {c} appear in {w}?", "Count the letter {c} in {w}."),
            _sample_count_char,
            lambda p: str(p["w"].lower().count(p["c"].lower())),
            "number",
            lambda p, ans, rng: str(int(ans) + rng.choice([1, 2])),
            _num_partial,
        ),
        Family(
            "sort_nums",
            ("Sort from smallest to largest: {xs}.", "Put these numbers in order: {xs}."),
            _sample_short_nums,
            _sorted_nums,
            "numlist",
            _sort_wrong,
            lambda p, ans, rng: ", ".join(_swap_last_two(ans.split(", "))),
        ),
        Family(
            "max",
            ("What is the largest of {xs}?", "Which number is biggest: {xs}?", "Find the maximum of {xs}."),
            _sample_list(3, 5),
            lambda p: str(max(_ints(p["xs"]))),
            "number",
            _other_element(max),
            lambda p, ans, rng: f"Either {ans} or {sorted(_ints(p['xs']))[-2]}.",
        ),
        Family(
            "sort_words",
            ("Sort these words alphabetically: {ws}.", "Put in alphabetical order: {ws}."),
            _sample_wordlist,
            _sorted_words,
            "wordseq",
            lambda p, ans, rng: ", ".join(reversed(ans.split(", "))),
            lambda p, ans, rng: ", ".join(_swap_last_two(ans.split(", "))),
        ),
        Family(
            "join_dash",
            ("Join these words with dashes: {ws}.", "Connect with hyphens: {ws}."),
            _sample_wordlist,
            lambda p: "-".join(w.lower() for w in _words(p["ws"])),
            "dashed",
            lambda p, ans, rng: " ".join(ans.split("-")),
            lambda p, ans, rng: "-".join(ans.split("-")[:2]) + " " + " ".join(ans.split("-")[2:]),
        ),
        Family(
            "next_number",
            ("What comes next: {xs}?", "Continue the pattern: {xs}."),
            _sample_seq,
            _solve_seq,
            "number",
            _num_wrong,
            _num_partial,
        ),
        Family(
            "parity",
            ("Is {a} even or odd?", "Is the number {a} odd or even?"),
            lambda rng: {"a": str(rng.randint(1, 999))},
            lambda p: "even" if int(p["a"]) % 2 == 0 else "odd",
            "parity",
            lambda p, ans, rng: "odd" if ans == "even" else "even",
            lambda p, ans, rng: "It depends on the last digit.",
        ),
        Family(
            "capital",
            ("What is the capital of {country}?", "Name the capital city of {country}."),
            lambda rng: {"country": rng.choice(sorted(CAPITALS))},
            lambda p: _lookup(CAPITALS, p["country"]),
            "word",
            lambda p, ans, rng: rng.choice([c for c in CAPITALS.values() if c != ans]),
            _hint_partial,
            split_on_wording=True,
        ),
        Family(
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


def _with_regexes(f: Family) -> Family:
    return dataclasses.replace(f, regexes=tuple(_template_regex(t) for t in f.templates))


def _build_knowledge_families() -> tuple[Family, ...]:
    """Questions about the invented facts of `task_knowledge` (known only from its corpus). They split on the
    entity (no `split_on_wording`), so a held-out entity is held out in every wording."""
    fams = [
        Family(
            "kb_capital",
            ("Which city is the capital of {place}?", "Name the capital of the land of {place}."),
            lambda rng: {"place": rng.choice(sorted(CAPITAL_OF))},
            lambda p: _lookup(CAPITAL_OF, p["place"]),
            "word",
            lambda p, ans, rng: rng.choice(DECOY_NAMES),  # never another fact's city: see DECOY_NAMES
            _hint_partial,
        ),
        Family(
            "kb_river",
            ("How long is the {river} river?", "What is the length of the {river} river in km?"),
            lambda rng: {"river": rng.choice(sorted(RIVER_KM))},
            lambda p: _lookup(RIVER_KM, p["river"]),
            "number",
            _num_wrong,
            _num_partial,
        ),
    ]
    return tuple(_with_regexes(f) for f in fams)


#: The families of the original world. Kept apart from the knowledge families because judge-training examples
#: draw off-topic answers from this tuple: adding families to it would change every default run's seed data.
FAMILIES: tuple[Family, ...] = _build_families()
#: Questions answerable only from the task world's knowledge corpus (`task_knowledge`): opt-in through
#: `seed_data.families`, not in `DEFAULT_FAMILIES`.
KNOWLEDGE_FAMILIES: tuple[Family, ...] = _build_knowledge_families()
KNOWLEDGE_FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in KNOWLEDGE_FAMILIES)
#: Every family the checker grades: the original ones first, so an original prompt parses as it always did.
ALL_FAMILIES: tuple[Family, ...] = FAMILIES + KNOWLEDGE_FAMILIES
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in ALL_FAMILIES)
BY_NAME = {f.name: f for f in ALL_FAMILIES}

#: The families the embedded default samples (training, evaluation, self-instruct seeds). A byte-level BPE makes
#: every word and every number below 100 one token, so a family can only generalise to held-out prompts when it
#: works on whole tokens: comparing, selecting, ordering, counting and copying them, small sums, facts. The
#: spelling families (reverse, upper, length, count_letter, sort_words, join_dash) ask for letters inside a
#: token: a 4M model trained for minutes answers their held-out words from the wording's priors at best (0% for
#: reverse and upper), so they stay gradeable by the checker but out of the default world.
DEFAULT_FAMILIES: tuple[str, ...] = (
    "larger", "max", "min", "sort_nums", "count_items", "position", "member", "add", "parity", "capital",
)  # fmt: skip


def select_families(families: Sequence[str] | None) -> list[Family]:
    """The named families (the default world for None); unknown names are a ValueError listing the known."""
    names = families or DEFAULT_FAMILIES
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {', '.join(FAMILY_NAMES)}")
    return [BY_NAME[n] for n in names]


def answer_matches(kind: str, answer: str, response: str, params: dict[str, str] | None = None) -> bool:
    """Whether `response` gives `answer` in the sense of answer kind `kind` (a family's `kind`)."""
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
