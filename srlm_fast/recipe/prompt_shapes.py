"""Prompt shapes: a self-instruct filter that keeps a generated prompt only if it is worded like a seed prompt.

A prompt's shape is its wording with the content blanked out. Each of these becomes one `_`, and adjacent blanks
merge:
- every number;
- every comma-separated list (numbers or words);
- every word used by fewer than `min_count` seed prompts.

Final punctuation is dropped. So "Does the list 16, 72, 55 contain 56?" has the shape `does the list _ contain _`.
A truncated "Does the list 16, 80, 68, 36, 79?" has the shape `does the list _`, which no seed prompt has.

Why a filter of its own (issue #15). A 4M-parameter model's self-instructed prompts are 85-96% tasks, but the
other 4-15% yield about half of the preference pairs. Its answers to an ill-posed "Does the list 16, 80, 68?"
split between yes and no, so they pass every vote threshold, and DPO trains one of them.
- The model's own likelihood does not tell these prompts apart: they are fluent prefixes of real tasks (AUC 0.80,
  but no threshold keeps the tasks without the non-tasks).
- The shape filter reads only the seed prompts, which self-instruct is given anyway, and never the checker. On
  the s7 runs it keeps 93-99% of the task prompts and 7-12% of the others (`min_count` 3 to 10 alike).

Limits. This is Self-Instruct's heuristic filtering, specialised to a world whose tasks come in a few wordings. A
free-form prompt set (OASST) has as many shapes as prompts, so there the filter would keep almost nothing. It is
off by default (`selfinstruct.shape_min_count = 0`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

BLANK = "_"

# Numbers (with a decimal part), words (letters, with an inner apostrophe), and single punctuation marks.
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+(?:'[^\W\d_]+)?|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


class PromptShapes:
    """The shapes of a set of seed prompts; `matches(prompt)` says whether a prompt has one of them."""

    def __init__(self, seed_prompts: Iterable[str], min_count: int = 5) -> None:
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        seeds = list(seed_prompts)
        if not seeds:
            raise ValueError("prompt shapes need at least one seed prompt")
        used_by = Counter(w for s in seeds for w in {t.lower() for t in tokens(s)})
        self.template_words = frozenset(
            w for w, n in used_by.items() if n >= min_count and not w[0].isdigit()
        )
        self.shapes = frozenset(self.shape(s) for s in seeds)

    def shape(self, text: str) -> str:
        """`text` with numbers, lists and rare words blanked, adjacent blanks merged, final punctuation dropped."""
        ts = tokens(text)
        out: list[str] = []
        i = 0
        while i < len(ts):
            j = i  # the last item of a comma-separated list that starts at i
            while j + 2 < len(ts) and ts[j + 1] == "," and "," not in (ts[j], ts[j + 2]):
                j += 2
            word = ts[i].lower()
            blank = j > i or word not in self.template_words
            piece = BLANK if blank else word
            if not (piece == BLANK and out and out[-1] == BLANK):
                out.append(piece)
            i = j + 1
        while out and not out[-1][0].isalnum() and out[-1] != BLANK:
            out.pop()
        return " ".join(out)

    def matches(self, prompt: str) -> bool:
        return self.shape(prompt) in self.shapes
