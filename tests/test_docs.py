"""The front page and the pages in docs/ link only to what exists: every relative link names a
file or folder of the repository, and every ``#anchor`` a heading of the page it points at (as
GitHub makes anchors from headings), so a page moved or a heading renamed fails the build."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: ``[text](target)`` outside code; images too. The target ends at the first space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose_lines(text: str) -> List[str]:
    """The page's lines outside fenced code blocks, where links and headings mean something."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation other than
    hyphens and underscores removed, each space a hyphen."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*_]{1,2}([^*_]+)[*_]{1,2}", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(page: Path) -> Set[str]:
    """Every anchor of a page; a repeated heading gets ``-1``, ``-2``… as on GitHub."""
    seen: Dict[str, int] = {}
    anchors = set()
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def links_of(page: Path) -> List[str]:
    found = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        found += LINK.findall(line)
    return found


def broken_links(page: Path, root: Path = ROOT) -> List[str]:
    """The links of ``page`` that lead nowhere within ``root`` (the repository)."""
    broken = []
    for target in links_of(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: …: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists() or root not in (resolved, *resolved.parents):
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors_of(resolved)):
            broken.append(f"{target}: no such heading")
    return broken


@pytest.mark.unit
def test_the_checker_sees_headings_and_links_as_github_does(tmp_path: Path) -> None:
    assert slug("The fleet test and `make soak`: measured, not promised") == (
        "the-fleet-test-and-make-soak-measured-not-promised"
    )
    assert slug("Flat turns: turn 1,000 costs what turn 10 costs") == (
        "flat-turns-turn-1000-costs-what-turn-10-costs"
    )
    assert slug('"Text me that" and "talk to a person"') == "text-me-that-and-talk-to-a-person"
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Part\n\n## Part\n\n```\n## not a heading [x](#nowhere)\n```\n"
        "[ok](#part-1) [ok](#title) [bad](#part-2) [bad](missing.md) `[code](#nowhere)`\n"
        "[web](https://example.com/#x) [self](page.md#part)\n"
    )
    assert anchors_of(page) == {"title", "part", "part-1"}
    assert broken_links(page, tmp_path) == ["#part-2: no such heading", "missing.md: no such file"]


@pytest.mark.unit
def test_the_front_page_leads_to_every_page_of_docs() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in links_of(ROOT / "README.md")
        if target.startswith("docs/")
    }
    assert set(PAGES[1:]) <= linked


@pytest.mark.unit
@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert links_of(page) or page.name == "DESIGN.md", "a page that links nowhere"
    assert broken_links(page) == []


#: "issue 13", "Issue #14", "issues 12 and 13": a tracker's numbers say nothing to a reader.
ISSUE_NUMBER = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)
SOURCE_SUFFIXES = {".py", ".js", ".html", ".css", ".yml", ".yaml", ".cfg", ".toml", ".md"}


def test_no_issue_numbers_in_the_code_or_its_docs() -> None:
    """Comments and docstrings say why, not which ticket asked (quoting another project's
    tracker in the vendor notes of docs/specs/ is a reference, not ours)."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = [
        f"{name}:{number}: {line.strip()}"
        for name in tracked
        if Path(name).suffix in SOURCE_SUFFIXES
        and not name.startswith("docs/specs/")
        and name != "tests/test_docs.py"  # the examples above
        for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1)
        if ISSUE_NUMBER.search(line)
    ]
    assert offenders == []
