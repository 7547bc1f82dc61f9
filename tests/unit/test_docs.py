"""The documentation holds together: links and anchors resolve, make targets exist, the README stays short.

The pages are README.md, docs/ and findings/; mkdocs builds them as one site that mirrors the
repository (docs/hooks.py), so a relative link is checked once, against the repository. These
checks need no mkdocs; `test_site_builds_strict` runs the real build where mkdocs is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "findings").rglob("*.md"))]
README_MAX_LINES = 150

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
MAKE = re.compile(r"(?<![\w-])make ([a-z][\w-]*)")
TARGET = re.compile(r"^([a-z][\w-]*)\s*:(?!=)", re.M)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def code(text: str) -> str:
    """Only the code: fenced blocks and code spans, where commands are written."""
    return "\n".join(FENCE.findall(text) + CODE_SPAN.findall(FENCE.sub("", text)))


def slugify(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs and material use) of a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*]", "", text)  # code and emphasis marks (underscores stay: snake_case)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """Every heading's id on the page; a repeated slug gets _1, _2 ... as toc does."""
    found: set[str] = set()
    for _, title in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = base = slugify(title)
        n = 0
        while slug in found:
            n += 1
            slug = f"{base}_{n}"
        found.add(slug)
    return found


def in_site(target: Path) -> bool:
    """The site serves README.md and what is under docs/ and findings/ (docs/hooks.py)."""
    return target == README or target.parts[len(ROOT.parts)] in ("docs", "findings")


def test_every_internal_link_and_anchor_resolves() -> None:
    broken = []
    for page in PAGES:
        for url in LINK.findall(prose(page.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", url):  # http:, https:, mailto:
                continue
            path, _, anchor = url.partition("#")
            target = (page.parent / path).resolve() if path else page
            where = f"{rel(page)}: {url}"
            if not target.is_file():
                broken.append(f"{where} (no such file)")
            elif not in_site(target):
                broken.append(f"{where} (outside README.md, docs/ and findings/: the site has no such page)")
            elif anchor and (target.suffix != ".md" or anchor not in anchors(target)):
                broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def makefile_targets() -> set[str]:
    return set(TARGET.findall((ROOT / "Makefile").read_text()))


def test_every_make_target_named_in_the_docs_exists() -> None:
    targets = makefile_targets()
    unknown = sorted(
        {f"{rel(page)}: make {t}" for page in PAGES for t in MAKE.findall(code(page.read_text())) if t not in targets}
    )
    assert not unknown, f"make targets the Makefile does not have: {unknown}"


def test_usage_page_documents_every_make_target() -> None:
    usage = (ROOT / "docs" / "usage.md").read_text()
    missing = sorted(t for t in makefile_targets() if f"`make {t}" not in usage)
    assert not missing, f"docs/usage.md does not document these make targets: {missing}"


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/ or findings/"
    )


def test_code_does_not_point_at_readme_prose() -> None:
    """Docstrings and messages say what the code does; pages and findings say what was measured."""
    pointers = []
    for source in sorted((ROOT / "bench").rglob("*.py")):
        for n, line in enumerate(source.read_text().splitlines(), 1):
            for m in re.finditer(r"[\w./-]*README[\w.]*|finding below", line):
                if not (ROOT / m.group()).is_file():  # a real file path is fine
                    pointers.append(f"{rel(source)}:{n}: {line.strip()}")
    assert not pointers, "code points at prose:\n" + "\n".join(pointers)


def test_strategy_summaries_stand_alone() -> None:
    """A summary becomes a row of the generated table: it cannot point 'below' or at the README."""
    from bench.strategies import STRATEGIES

    bad = [
        f"{n}: {STRATEGIES.get(n).summary}" for n in STRATEGIES.names() if re.search(r"below|README", STRATEGIES.get(n).summary)
    ]
    assert not bad, "summaries that point at prose:\n" + "\n".join(bad)


def test_concepts_page_names_every_room() -> None:
    concepts = (ROOT / "docs" / "concepts.md").read_text()
    rooms = sorted(p.name for p in (ROOT / "bench").iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    missing = [r for r in rooms if f"  {r}/" not in concepts]
    assert rooms and not missing, f"docs/concepts.md's layout does not name these rooms of bench/: {missing}"


def test_site_navigation_lists_every_page() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [rel(p) for p in PAGES if rel(p) not in nav]
    assert not missing, f"mkdocs.yml's nav lacks: {missing}"


def test_findings_are_dated_reports_listed_in_the_index() -> None:
    index = (ROOT / "findings" / "README.md").read_text()
    reports = sorted(p for p in (ROOT / "findings").glob("*.md") if p.name != "README.md")
    assert reports
    problems = []
    for report in reports:
        text = report.read_text()
        if not re.match(r"\d{4}-\d{2}-\d{2}-[a-z0-9.-]+\.md$", report.name):
            problems.append(f"{report.name}: not named YYYY-MM-DD-topic.md")
        problems += [
            f"{report.name}: no {part}"
            for part in ("**Command**", "**Commit**", "**Machine**", "## Conclusion")
            if part not in text
        ]
        if f"({report.name})" not in index:
            problems.append(f"{report.name}: not in findings/README.md")
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs and mkdocs-material are not installed (the `docs` extra: make install)",
)
def test_site_builds_strict(tmp_path: Path) -> None:
    """`make docs`' build: strict, so a broken link, anchor or nav entry fails it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        str(ROOT / "mkdocs.yml"),
        "--site-dir",
        str(tmp_path / "site"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "findings" / "index.html").is_file()
