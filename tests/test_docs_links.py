"""Every relative link of the README and docs/ points to a file that exists, and every #anchor to a heading of it.

The results live in docs/ and the README links into them by heading; a renamed heading or a moved file would
otherwise break the links silently."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation other than `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a `#` in a code block is no heading
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_github_anchor_drops_punctuation_like_github():
    heading = "Where DPO moves the loop's own pairs: likelihood displacement (measured 2026-12-06)"
    assert (
        github_anchor(heading)
        == "where-dpo-moves-the-loops-own-pairs-likelihood-displacement-measured-2026-12-06"
    )
    assert github_anchor("A judge needs ~30,000 examples") == "a-judge-needs-30000-examples"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {file.name}")
    assert not broken, "\n".join(broken)
