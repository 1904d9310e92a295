"""Every relative link in README.md leads somewhere: the file exists, and an anchor names one of its
headings, as GitHub names their anchors (mkdocs build --strict checks the links inside docs/).
The docs map is one table in two places, README.md and docs/index.md: the same rows, every page."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def relative_links(markdown_text: str) -> list[str]:
    prose = FENCE.sub("", markdown_text)
    return [target for target in LINK.findall(prose) if not re.match(r"[a-z]+://", target)]


@cache  # a page is read once, however many links point into it
def anchors(markdown_path: Path) -> set[str]:
    prose = FENCE.sub("", markdown_path.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", prose, re.MULTILINE)
    return {github_anchor(heading) for heading in headings}


def github_anchor(heading: str) -> str:
    """How GitHub names a heading's anchor, where the README's links are followed: lower case,
    every character but letters, digits, spaces, hyphens and underscores dropped, spaces hyphens.
    (The docs site names some differently; mkdocs build --strict checks the site's own links.)"""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def test_every_relative_link_in_the_readme_resolves() -> None:
    readme = ROOT / "README.md"
    links = relative_links(readme.read_text(encoding="utf-8"))
    assert len(links) >= 10  # the docs map alone has more: a parser that finds none proves nothing
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else readme
        if not target.exists() or (anchor and anchor not in anchors(target)):
            broken.append(link)
    assert broken == []


def test_a_broken_link_is_found() -> None:
    readme = "[ok](README.md) [bad](docs/no-such-page.md)\n```\n[not a link](in/a/code/block.md)\n```"
    assert relative_links(readme) == ["README.md", "docs/no-such-page.md"]
    assert "when-is-a-record-done" in anchors(ROOT / "docs" / "guarantees.md")


def docs_map(markdown_text: str, prefix: str) -> list[tuple[str, str, str]]:
    """The map's rows, (title, page, what is in it), from a `| [Title](prefix + page) | ... |` table."""
    row = re.compile(rf"^\| \[([^]]+)\]\({re.escape(prefix)}([^)#]+)\) \| (.+) \|$", re.MULTILINE)
    return row.findall(markdown_text)


def test_the_docs_map_is_the_same_in_the_readme_and_on_the_site_and_lists_every_page() -> None:
    readme = docs_map((ROOT / "README.md").read_text(encoding="utf-8"), "docs/")
    site = docs_map((ROOT / "docs" / "index.md").read_text(encoding="utf-8"), "")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    pages = [(title, page) for entry in nav for title, page in entry.items() if page != "index.md"]
    assert len(readme) >= 10
    assert readme == site
    assert [(title, page) for title, page, _ in readme] == pages  # the nav's titles, in its order
