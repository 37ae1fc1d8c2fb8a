"""The documentation holds together: links resolve, user pages carry no development log, settings are listed.

Checked, with no services and in well under a second:

- every relative link and image in README.md, CHANGELOG.md, BENCHMARKS.md and docs/*.md points to
  an existing file, and a ``#anchor`` to a heading of the page it names (GitHub's heading ids);
- README.md and docs/*.md, the user's pages, name no issues (``#7``, ``issue 5``) and carry no
  dated notes (``2026-11-28``); the history belongs in CHANGELOG.md. Fenced code blocks (example
  output) and timestamps with a time of day (data, like ``2026-01-05 00:29``) are not notes;
- every field of :class:`kernel.settings.Settings` is listed in docs/configuration.md as
  ``VITALS_<NAME>``, and nothing else is;
- the README names every ``vitalrisk`` subcommand, and its first code block is the two commands.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from stream.cli import build_parser
from kernel.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
USER_PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
ALL_PAGES = [*USER_PAGES, ROOT / "CHANGELOG.md", ROOT / "BENCHMARKS.md"]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
LINK_TARGET = re.compile(r"\]\([^)]*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# "#7", "(#12)", "PR #3", but not "#anchor", "&#8212;", "a#1" or a colour such as "#000000".
ISSUE_HASH = re.compile(r"(?<![\w/&#])#(?![0-9a-fA-F]{6}\b|[0-9a-fA-F]{8}\b)\d+\b")
ISSUE_WORD = re.compile(r"\b(?:issues?|PR)\s*#?\d+\b", re.IGNORECASE)
# A calendar date not followed by a time of day (a timestamp in data is not a dated note).
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b(?![ T]\d\d:\d\d)")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """``text`` with fenced code blocks blanked out (line numbers kept)."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            lines.append("")
        else:
            lines.append("" if in_fence else line)
    return "\n".join(lines)


def slug(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens.

    >>> slug("Trainer and scorers on Kafka (`vitalrisk trainer`)")
    'trainer-and-scorers-on-kafka-vitalrisk-trainer'
    >>> slug("The alert burden, measured")
    'the-alert-burden-measured'
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id of a Markdown page, with GitHub's -1, -2 suffixes for repeats."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    """The link and image targets of a page, outside code."""
    text = INLINE_CODE.sub("``", prose(page.read_text(encoding="utf-8")))
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked here
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {_rel(dest)}")
    return problems


@pytest.mark.parametrize("page", ALL_PAGES, ids=_rel)
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.exists(), f"{_rel(page)} is missing"
    assert broken_links(page) == [], f"{_rel(page)} has broken links"


@pytest.mark.parametrize("page", USER_PAGES, ids=_rel)
def test_user_pages_carry_no_issue_numbers_or_dated_notes(page: Path) -> None:
    found = []
    for number, line in enumerate(prose(page.read_text(encoding="utf-8")).splitlines(), start=1):
        line = LINK_TARGET.sub("]()", line)  # "(#1-heading)" anchors are not issues
        for pattern in (ISSUE_HASH, ISSUE_WORD, DATE):
            found += [f"line {number}: {m.group(0)!r}" for m in pattern.finditer(line)]
    assert found == [], f"{_rel(page)}: development history belongs in CHANGELOG.md"


def test_every_setting_is_in_the_configuration_page() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    fields = {f"VITALS_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(name for name in fields if name not in text)
    assert missing == [], "docs/configuration.md does not list these settings"
    listed = set(re.findall(r"^\| `(VITALS_[A-Z0-9_]+)`", text, re.MULTILINE))
    assert sorted(listed - fields) == [], "docs/configuration.md lists settings that do not exist"


def test_the_readme_names_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = sorted(name for name in subparsers.choices if f"vitalrisk {name}" not in readme)
    assert missing == [], "README.md's commands table lacks these subcommands"


def test_the_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    assert readme.index("```") < readme.index("\n## "), "the two commands come before the first section"


def test_the_checks_catch_what_they_should() -> None:
    notes = "Fixed in #7 (issue 5), on 2026-11-28."
    fine = "See [design](#1-design), colour #1f77b4 or #000000, at 2026-01-05 00:29, &#8212;."
    assert ISSUE_HASH.search(notes) and ISSUE_WORD.search(notes) and DATE.search(notes)
    cleaned = LINK_TARGET.sub("]()", fine)
    assert not (ISSUE_HASH.search(cleaned) or ISSUE_WORD.search(cleaned) or DATE.search(cleaned))
    assert slug("Results: the default run") == "results-the-default-run"
