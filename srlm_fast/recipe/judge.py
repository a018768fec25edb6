"""LLM-as-a-judge: the additive 5-point rubric, judge prompts, score parsing and aggregation.

The model judges its own candidates (Yuan et al., 2024): a judge prompt holds the rubric, then the instruction and
the response; the model answers with a short justification and a final line `Score: <0-5>`. This module only
builds prompts and reads already-generated text; generation is a callable supplied by the caller, so the module
stays independent of the model and the engine.

Two scoring modes:
- `sample`: k sampled judgments per candidate, parsed and averaged; invalid ones are dropped and counted.
- `expected`: the engine forces `Score: ` and returns the next-token probabilities over the digits 0..5;
  `expected_score` turns them into a probability-weighted score (one forward pass, almost never a tie).

Prompt layout: the rubric text comes before the instruction and the response, so every judge prompt shares a long
common prefix and the sampler's prefix cache can reuse it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from srlm_fast.io import read_text
from srlm_fast.recipe.evidence import evidence_lines

MIN_SCORE = 0
MAX_SCORE = 5

#: The five additive criteria, in order. The formulaic justifications of the task world name them in this order.
CRITERIA: tuple[str, ...] = ("Relevant", "Substantial", "Correct", "Direct", "Perfect")

#: A judge score at or above this means "answers the basic elements usefully" (criterion 3); the task world
#: gives exactly its correct responses such scores, so it is the threshold for judge/checker agreement.
CORRECT_THRESHOLD = 3.0

DEFAULT_TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "templates" / "judge_rubric.txt"
#: The paper-style rubric that also reads retrieved evidence: its 3rd point asks that what the response states be
#: supported by the evidence (a criterion replaced, not added: the 0-5 scale stays), for real checkpoints.
GROUNDED_TEMPLATE_PATH = DEFAULT_TEMPLATE_PATH.with_name("judge_rubric_grounded.txt")

#: The compact rubric for the tiny default model: the same five additive criteria, named, in 17 tokens (the full
#: rubric's 250 would be most of every judge prompt: in SFT the compact rubric is a third of a judge example).
COMPACT_TEMPLATE_TEXT = (
    "Judge the response: one point each for Relevant, Substantial, Correct, Direct, Perfect.\n"
    "Instruction: {instruction}\n"
    "Response: {response}"
)

#: The meta-judge's rubric (Meta-Rewarding, Wu et al., 2024): the model judges one of its own judgments. Its
#: instruction is the judged instruction and response (`meta_instruction`), its response the judgment. The points
#: (see `meta_score`): Relevant and Substantial for a valid score, Correct when right about correctness, Direct
#: when off by at most 1, Perfect when exact.
META_TEMPLATE_TEXT = (
    "Judge the judgment: one point each for Relevant, Substantial, Correct, Direct, Perfect.\n"
    "Instruction: {instruction}\n"
    "Judgment: {response}"
)

#: The meta rubric when the judge reads retrieved evidence (`retrieval.judge` with `judge.meta`): the meta-judge
#: reads the evidence the judge read, so it can tell whether the judgment was right about support, not only
#: whether it looks like a judgment. Same points as `META_TEMPLATE_TEXT`.
META_GROUNDED_TEMPLATE_TEXT = (
    "Judge the judgment by the evidence: one point each for Relevant, Substantial, Correct, Direct, Perfect.\n"
    "{evidence}\n"
    "Instruction: {instruction}\n"
    "Judgment: {response}"
)

#: The grounded variant of the compact rubric (`retrieval.judge`): the judge also reads the retrieved evidence
#: (`Evidence:` lines, recipe/evidence.py) and "Correct" becomes "Supported": correct and backed by the
#: evidence. The criterion replaces one rather than adding a sixth so the 0-5 scale, the expected-score digits
#: and the EFT ladder stay as they are; the evidence sits before the instruction, after the shared rubric.
GROUNDED_TEMPLATE_TEXT = (
    "Judge the response by the evidence: one point each for Relevant, Substantial, Supported, Direct, Perfect.\n"
    "{evidence}\n"
    "Instruction: {instruction}\n"
    "Response: {response}"
)

#: The template names `judge.template` accepts (anything else is a template file's path).
NAMED_TEMPLATES: tuple[str, ...] = ("compact", "full", "grounded", "full_grounded")
#: What each shipped rubric becomes when the judge reads retrieved evidence (`retrieval.judge`).
GROUNDED_VARIANT: dict[str, str] = {"compact": "grounded", "full": "full_grounded"}

_PLACEHOLDER_RE = re.compile(r"\{(instruction|response|evidence)\}")


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt template with the placeholders `{instruction}` and `{response}`.

    The rubric must come before `{instruction}`, which must come before `{response}`: that order gives every
    judge prompt the same prefix (`self.prefix`). Substitution is a single pass, so an instruction that itself
    contains the text `{response}` is not expanded a second time.
    """

    text: str
    name: str = "custom"

    def __post_init__(self) -> None:
        for ph in ("{instruction}", "{response}"):
            if self.text.count(ph) != 1:
                raise ValueError(
                    f"judge template {self.name!r}: needs exactly one {ph} (found {self.text.count(ph)})"
                )
        i, r = self.text.index("{instruction}"), self.text.index("{response}")
        if not i < r:
            raise ValueError(f"judge template {self.name!r}: {{instruction}} must come before {{response}}")
        if not self.text[:i].strip():
            raise ValueError(
                f"judge template {self.name!r}: the rubric text must come before {{instruction}}"
            )
        n_ev = self.text.count("{evidence}")
        if n_ev > 1 or (n_ev and not 0 < self.text.index("{evidence}") < i):
            raise ValueError(
                f"judge template {self.name!r}: at most one {{evidence}}, after the rubric and before {{instruction}}"
            )

    @classmethod
    def load(cls, path: str | Path) -> JudgeTemplate:
        """Read a template file (a user may replace the default with their own); bytes that are not UTF-8 are a
        `DataError` naming the file and line."""
        path = Path(path)
        return cls(read_text(path).strip("\n"), name=str(path))

    @classmethod
    def full(cls) -> JudgeTemplate:
        """The paper-style rubric shipped in `templates/judge_rubric.txt`."""
        return cls.load(DEFAULT_TEMPLATE_PATH)

    @classmethod
    def compact(cls) -> JudgeTemplate:
        """The short rubric used by the tiny default run."""
        return cls(COMPACT_TEMPLATE_TEXT, name="compact")

    @classmethod
    def meta(cls) -> JudgeTemplate:
        """The meta-judge's rubric: a judgment of (instruction, response) judged (see `meta_instruction`)."""
        return cls(META_TEMPLATE_TEXT, name="meta")

    @classmethod
    def meta_grounded(cls) -> JudgeTemplate:
        """The meta rubric that also reads the evidence the judged judgment read (`retrieval.judge`)."""
        return cls(META_GROUNDED_TEMPLATE_TEXT, name="meta_grounded")

    @classmethod
    def meta_for(cls, judge: JudgeTemplate) -> JudgeTemplate:
        """The meta rubric for a judge that uses `judge`: grounded when the judge reads evidence."""
        return cls.meta_grounded() if judge.is_grounded else cls.meta()

    @classmethod
    def from_spec(cls, spec: str) -> JudgeTemplate:
        """A name of `NAMED_TEMPLATES`, `"meta"`, `"meta_grounded"`, or a path to a template file (for config
        values)."""
        if spec == "compact":
            return cls.compact()
        if spec == "full":
            return cls.full()
        if spec == "meta":
            return cls.meta()
        if spec == "meta_grounded":
            return cls.meta_grounded()
        if spec == "grounded":
            return cls.grounded()
        if spec == "full_grounded":
            return cls.full_grounded()
        return cls.load(spec)

    @classmethod
    def grounded(cls) -> JudgeTemplate:
        """The compact rubric that also reads retrieved evidence (`retrieval.judge`)."""
        return cls(GROUNDED_TEMPLATE_TEXT, name="grounded")

    @classmethod
    def full_grounded(cls) -> JudgeTemplate:
        """The paper-style rubric that also reads retrieved evidence (`retrieval.judge` with `full`)."""
        return cls(read_text(GROUNDED_TEMPLATE_PATH).strip("\n"), name="full_grounded")

    @property
    def is_grounded(self) -> bool:
        """Whether the template has an `{evidence}` placeholder (the judge reads retrieved passages)."""
        return "{evidence}" in self.text

    @property
    def prefix(self) -> str:
        """The text shared by every prompt built from this template (everything before the first placeholder)."""
        return self.text[: _PLACEHOLDER_RE.search(self.text).start()]

    def render(self, instruction: str, response: str, evidence: Sequence[str] | None = None) -> str:
        """The judge prompt for one (instruction, response), with retrieved `evidence` passages in a grounded
        template (`Evidence:` lines; an ungrounded template given evidence is an error, not a silent drop)."""
        if evidence is not None and not self.is_grounded:
            raise ValueError(f"judge template {self.name!r} has no {{evidence}} placeholder")
        values = {"instruction": instruction.strip(), "response": response.strip(),
                  "evidence": evidence_lines(evidence or ())}  # fmt: skip
        return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], self.text)


def format_judgment(met: Sequence[bool], score_first: bool = False, verdicts: bool = True) -> str:
    """The formulaic judgment the task world trains: one verdict per criterion and `Score: <count>`.

    Example: `Relevant: yes. Substantial: yes. Correct: no. Direct: no. Perfect: no.\nScore: 2`. With
    `score_first` the score line comes first and the verdicts explain it on the next line: a judge in `expected`
    mode then reads the score distribution after writing two tokens instead of twenty, and the distribution
    holds the judge's whole uncertainty (with the verdicts first, the greedy "Correct: yes/no" has decided the
    score before the digit is read). `verdicts=False`: the score line alone (the verdicts of the additive ladder
    follow from the score; for a tiny model they are 20 tokens of every judge example that teach nothing).
    """
    if len(met) != len(CRITERIA):
        raise ValueError(f"expected {len(CRITERIA)} criteria verdicts, got {len(met)}")
    score = f"Score: {sum(bool(m) for m in met)}"
    if not verdicts:
        return score
    lines = " ".join(f"{name}: {'yes' if ok else 'no'}." for name, ok in zip(CRITERIA, met))
    return f"{score}\n{lines}" if score_first else f"{lines}\n{score}"


def judgment_for_score(score: int, score_first: bool = False, verdicts: bool = True) -> str:
    """The formulaic judgment of a response that meets the first `score` criteria (the additive ladder)."""
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise ValueError(f"score must be in {MIN_SCORE}..{MAX_SCORE}, got {score}")
    return format_judgment([i < score for i in range(len(CRITERIA))], score_first, verdicts)


def meta_instruction(instruction: str, response: str) -> str:
    """What the meta-judge reads as its instruction: the judged instruction and response, one block."""
    return f"{instruction.strip()}\nResponse: {response.strip()}"


def meta_score(true_score: float, judged_score: float) -> int:
    """The meta rubric's score of a judgment that gave `judged_score` to a response worth `true_score`.

    The additive ladder of `META_TEMPLATE_TEXT`: relevant and substantial (2) for any valid score; +1 when it is
    right about correctness (both sides of CORRECT_THRESHOLD agree); +1 when off by at most 1; +1 when exact.
    A judgment wrong about correctness but off by 1 (a 2 for a 3) keeps its "Direct" point: 3.
    """
    right_side = (judged_score >= CORRECT_THRESHOLD) == (true_score >= CORRECT_THRESHOLD)
    off = abs(judged_score - true_score)
    return 2 + int(right_side) + int(off <= 1) + int(off == 0)


# `score` as a word (not `subscore`), a colon, optional markdown/whitespace around both, then the number, then
# only a scale suffix ("/5", "out of 5", "points"), closing markdown and a full stop before the end of the line.
# Anything else after the number ("Score: 3 or 4", "Score: 4 because...") makes the line ambiguous: invalid.
_SCORE_RE = re.compile(
    r"(?<![A-Za-z])score[*_\s]*:[*_ \t]*(?P<rest>[^\n]*)",
    re.IGNORECASE,
)
_VALUE_RE = re.compile(
    r"^(?P<num>[+-]?\d+(?:\.\d+)?)"
    r"(?:\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?))?"
    r"(?:\s*points?)?"
    r"[*_ \t]*[.!]?[*_ \t]*$",
    re.IGNORECASE,
)


def parse_score(text: str) -> float | None:
    """The score of a judgment, or None when there is no valid one.

    Accepts `Score: 4`, `Score: 4/5`, `score: 3.5`, `**Score:** 4`, `Score: **4**`, `Score: 4.`, `Score: 4 points`.
    The last `Score:` in the text wins, even if it is invalid (a judge that changes its mind to something
    unreadable has no score). Out of range, a scale other than /5, words (`Score: five`) or trailing text → None.
    """
    matches = list(_SCORE_RE.finditer(text))
    if not matches:
        return None
    m = _VALUE_RE.match(matches[-1].group("rest").strip())
    if m is None:
        return None
    den = m.group("den")
    if den is not None and float(den) != MAX_SCORE:
        return None
    value = float(m.group("num"))
    if not MIN_SCORE <= value <= MAX_SCORE:
        return None
    return value


def score_distribution(probs: Mapping[str | int, float]) -> tuple[float, ...] | None:
    """The distribution over the scores MIN_SCORE..MAX_SCORE that the score tokens' probabilities give.

    `probs` maps tokens (`"4"`, `" 4"`, `4`) to probabilities (or unnormalised weights); other keys are ignored.
    Several keys for the same digit (e.g. `"4"` and `" 4"`) add up, and the result is renormalised over the
    score tokens. None when they carry no probability mass. Negative or non-finite weights are a caller bug and
    raise ValueError.
    """
    mass = [0.0] * (MAX_SCORE - MIN_SCORE + 1)
    for key, p in probs.items():
        digit = key if isinstance(key, int) else (key.strip() if isinstance(key, str) else None)
        if isinstance(digit, str):
            if not (len(digit) == 1 and digit.isdigit()):
                continue
            digit = int(digit)
        if not isinstance(digit, int) or not MIN_SCORE <= digit <= MAX_SCORE:
            continue
        p = float(p)
        if not math.isfinite(p) or p < 0:
            raise ValueError(f"probability for score token {key!r} is {p}")
        mass[digit - MIN_SCORE] += p
    total = sum(mass)
    if total <= 0:
        return None
    return tuple(m / total for m in mass)


def expected_score(probs: Mapping[str | int, float]) -> float | None:
    """Probability-weighted score over the score tokens 0..5 (see `score_distribution`); None without mass."""
    dist = score_distribution(probs)
    return None if dist is None else sum((MIN_SCORE + i) * p for i, p in enumerate(dist))


@dataclass(frozen=True)
class ScoreAggregate:
    """k judgments of one candidate: the mean of the valid scores (None if none), and what was thrown away."""

    mean: float | None
    n_valid: int
    n_invalid: int
    scores: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "score": self.mean,
            "n_valid": self.n_valid,
            "n_invalid": self.n_invalid,
            "scores": list(self.scores),
        }


def aggregate_scores(scores: Sequence[float | None]) -> ScoreAggregate:
    """Average the valid scores; None entries are invalid judgments, counted but never scored."""
    valid = tuple(float(s) for s in scores if s is not None)
    mean = sum(valid) / len(valid) if valid else None
    return ScoreAggregate(mean=mean, n_valid=len(valid), n_invalid=len(scores) - len(valid), scores=valid)


def aggregate_judgments(texts: Sequence[str]) -> ScoreAggregate:
    """Parse k judgment texts and average the valid ones (`sample` mode)."""
    return aggregate_scores([parse_score(t) for t in texts])


#: generate_fn(prompts, n, temperature, top_p, max_new_tokens, seed) -> n completions per prompt.
GenerateFn = Callable[..., list[list[str]]]
#: score_probs_fn(prompts) -> for each prompt, next-token probabilities after the forced text "Score: ".
ScoreProbsFn = Callable[[list[str]], list[Mapping[str | int, float]]]


@dataclass(frozen=True)
class JudgeConfig:
    """How to judge: mode `sample` (k judgments, averaged) or `expected` (probability-weighted score)."""

    mode: str = "sample"
    k: int = 3
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 48

    def __post_init__(self) -> None:
        if self.mode not in ("sample", "expected"):
            raise ValueError(f"judge mode must be 'sample' or 'expected', not {self.mode!r}")
        if self.k < 1:
            raise ValueError(f"judge k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class JudgeResult:
    """The judgment of one (instruction, response): aggregated score plus the raw judgments for the artifact.

    `probs`: in `expected` mode, the judge's distribution over the scores MIN_SCORE..MAX_SCORE (renormalised over
    the score tokens; empty when it has none, and in `sample` mode).
    """

    score: float | None
    n_valid: int
    n_invalid: int
    scores: tuple[float, ...]
    judgments: tuple[str, ...]
    probs: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {
            "score": self.score,
            "n_valid": self.n_valid,
            "n_invalid": self.n_invalid,
            "scores": list(self.scores),
            "judgments": list(self.judgments),
            "probs": list(self.probs),
        }


def judge(
    items: Sequence[tuple[str, str]],
    template: JudgeTemplate,
    config: JudgeConfig,
    *,
    generate_fn: GenerateFn | None = None,
    score_probs_fn: ScoreProbsFn | None = None,
    seed: int = 0,
) -> list[JudgeResult]:
    """Score each (instruction, response) with the model behind the given callable.

    `sample` mode needs `generate_fn(prompts, n, temperature, top_p, max_new_tokens, seed) -> list[list[str]]`;
    `expected` mode needs `score_probs_fn(prompts) -> list[Mapping[token, prob]]`, where the engine has appended
    the forced text `Score: ` after the (chat-formatted) prompt.
    """
    prompts = [template.render(*item) for item in items]  # (instruction, response[, evidence])
    if not prompts:
        return []
    if config.mode == "expected":
        if score_probs_fn is None:
            raise ValueError("judge mode 'expected' needs score_probs_fn")
        dists = score_probs_fn(prompts)
        _check_len("score_probs_fn", dists, len(prompts))
        out = []
        for d in dists:
            dist = score_distribution(d)
            s = None if dist is None else sum((MIN_SCORE + i) * p for i, p in enumerate(dist))
            scores = (s,) if s is not None else ()
            out.append(JudgeResult(s, int(s is not None), int(s is None), scores, (), dist or ()))
        return out
    if generate_fn is None:
        raise ValueError("judge mode 'sample' needs generate_fn")
    outs = generate_fn(
        prompts,
        n=config.k,
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=seed,
    )
    _check_len("generate_fn", outs, len(prompts))
    results = []
    for texts in outs:
        agg = aggregate_judgments(texts)
        results.append(JudgeResult(agg.mean, agg.n_valid, agg.n_invalid, agg.scores, tuple(texts)))
    return results


def _check_len(name: str, got: Sequence, want: int) -> None:
    if len(got) != want:
        raise ValueError(f"{name} returned {len(got)} results for {want} prompts")
