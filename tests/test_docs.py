"""The documentation (issue 27, item 8): a short README, and a docs/ site that builds strictly.

`mkdocs build --strict` (mkdocs.yml's `validation:` turns a link to a missing page or
heading, or a page left out of the nav, into a warning, and strict mode into a failure)
checks the links between the pages of docs/. It never reads the README, so its links are
checked here: every relative link and image points at a file that exists, every #anchor at
a heading (GitHub's slugs, as GitHub renders the README), and every page of docs/ can be
reached from the README by following links.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 300

# [text](target) and ![alt](target), with an optional "title"; text may hold `code`.
LINK = re.compile(r"(?<!\\)!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def links(text: str) -> list[str]:
    """Every link and image target in markdown prose (not inside code)."""
    found = []
    for line in _prose(text):
        # A link's text may be a code span ([`docs/`](docs/index.md)); a code span elsewhere
        # is not a link, so blank out spans that are not the whole text of a link.
        stripped = re.sub(r"(?<!\[)`[^`]*`(?!\]\()", "``", line)
        found += LINK.findall(stripped)
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed,
    spaces made hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for line in _prose(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(path: Path) -> list[str]:
    """The relative links of a markdown file that point at no file or no heading."""
    broken = []
    for target in links(path.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {dest.name}")
    return broken


def reachable_pages(start: Path) -> set[Path]:
    """The markdown files under docs/ reached from `start` by following relative links."""
    reached: set[Path] = set()
    todo = [start]
    while todo:
        page = todo.pop()
        for target in links(page.read_text()):
            file_part = target.partition("#")[0]
            if not file_part or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue
            dest = (page.parent / file_part).resolve()
            if dest.suffix == ".md" and dest.is_file() and DOCS in dest.parents and dest not in reached:
                reached.add(dest)
                todo.append(dest)
    return reached


def mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess:
    # NO_MKDOCS_2_WARNING: mkdocs-material's end-of-life banner, not a warning of the build.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    built = mkdocs_build(ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    pages = sorted(p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md"))
    for page in pages:   # every page was rendered (a page outside the nav would fail the build)
        html = tmp_path / "site" / ("index.html" if page.name == "index" else page / "index.html")
        assert html.is_file(), f"docs/{page}.md was not built"


def test_the_strict_build_fails_on_a_broken_link_between_pages(tmp_path: Path) -> None:
    """The check above can fail: the same site with one link to a heading that is not there."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    with (tmp_path / "docs" / "index.md").open("a") as page:
        page.write("\n[nowhere](pipeline.md#no-such-heading)\n")
    built = mkdocs_build(tmp_path, tmp_path / "site")
    assert built.returncode != 0, built.stdout + built.stderr
    assert "no-such-heading" in built.stdout + built.stderr


def test_every_relative_link_of_the_readme_points_at_something() -> None:
    found = links(README.read_text())
    assert len(found) >= 15 and "docs/index.md" in found, found   # the links were really read
    assert broken_links(README) == []


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text("# Title\n\n## A section: `code`\n\n[ok](#a-section-code) [gone](missing.md) "
                    "![img](pic.png) [bad anchor](#nope) `[code](not-a-link.md)`\n\n"
                    "```\n[in a block](also-not-a-link.md)\n```\n")
    (tmp_path / "pic.png").write_bytes(b"")
    assert [b.split(":")[0] for b in broken_links(page)] == ["missing.md", "#nope"]


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    pages = set(p.resolve() for p in DOCS.rglob("*.md"))
    assert len(pages) >= 10
    unreached = sorted(str(p.relative_to(ROOT)) for p in pages - reachable_pages(README))
    assert unreached == [], f"not linked from the README, nor from a page it links: {unreached}"


def test_the_readme_stays_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, (f"README.md has {lines} lines (at most {MAX_README_LINES}): "
                                       f"move reference text to a page of docs/")
