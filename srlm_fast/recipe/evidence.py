"""The one prompt format of retrieved evidence in the loop (`[retrieval]`), and reading it back.

A candidate's prompt with `retrieval.candidates` (and every IFT example's, so M1 knows the format):
    Evidence: Kelmira is the capital of Trelos.
    Evidence: The Zorvath river is 412 km long.
    Question: Which city is the capital of Trelos?
one line per passage, best first (a passage's own newlines become spaces, it is cut to `max_words` words), then
the prompt. The grounded judge's prompt holds the same `Evidence:` lines between its rubric and the instruction
(judge.GROUNDED_TEMPLATE_TEXT). Plain lines with a fixed prefix, as `Instruction:` / `Response:` in the compact
rubric: a tiny model learns a line prefix in a few hundred examples, and `question_of` can read the prompt back
exactly, so the task world's checker grades an evidence prompt as its question.
"""

from __future__ import annotations

from collections.abc import Sequence

EVIDENCE = "Evidence: "
QUESTION = "Question: "
#: What the grounded judge reads when a retriever returned nothing (the line stays, so the layout is fixed).
NO_EVIDENCE = "Evidence: none"


def clip(text: str, max_words: int) -> str:
    """A passage as one evidence line's text: whitespace collapsed, at most `max_words` words."""
    return " ".join(text.split()[:max_words])


def evidence_lines(passages: Sequence[str]) -> str:
    """The `Evidence:` lines of `passages` (already clipped), or `NO_EVIDENCE` for none."""
    if not passages:
        return NO_EVIDENCE
    return "\n".join(EVIDENCE + " ".join(p.split()) for p in passages)


def with_evidence(question: str, passages: Sequence[str]) -> str:
    """A prompt with its evidence: the `Evidence:` lines, then `Question: <question>`."""
    return f"{evidence_lines(passages)}\n{QUESTION}{question.strip()}"


def split_evidence(prompt: str) -> tuple[list[str], str]:
    """(passages, question) of a prompt in the evidence format; ([], prompt) for any other prompt."""
    lines = prompt.split("\n")
    passages: list[str] = []
    i = 0
    while i < len(lines) and lines[i].startswith(EVIDENCE):
        if lines[i] != NO_EVIDENCE:
            passages.append(lines[i][len(EVIDENCE) :])
        i += 1
    if i == 0 or i == len(lines) or not lines[i].startswith(QUESTION):
        return [], prompt
    return passages, "\n".join([lines[i][len(QUESTION) :], *lines[i + 1 :]])


def question_of(prompt: str) -> str:
    """The question of an evidence prompt; any other prompt unchanged."""
    return split_evidence(prompt)[1]
