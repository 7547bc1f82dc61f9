"""mkdocs hook: the site mirrors the repository's README.md, docs/ and findings/.

A page's relative links are written for the repository (GitHub renders them), so the site keeps
the same layout: README.md is the home page, docs/usage.md is /docs/usage/, findings/*.md sit
under /findings/. One layout means one set of links, checked by tests/unit/test_docs.py.
mkdocs refuses the repository root as docs_dir (it holds mkdocs.yml and the site), hence this.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
TREES = ("docs", "findings")
# What the site serves from those trees: pages and the images they show (not this hook).
SUFFIXES = {".md", ".png", ".svg", ".jpg"}


def site_sources() -> list[Path]:
    """README.md, then every page and image under docs/ and findings/, repository-relative."""
    found = [ROOT / "README.md"]
    for tree in TREES:
        found += sorted(p for p in (ROOT / tree).rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    return [p.relative_to(ROOT) for p in found]


def on_files(files: Files, config: MkDocsConfig) -> Files:
    theme = [f for f in files if f.src_dir != config.docs_dir]  # the theme's assets stay
    ours = [File(p.as_posix(), str(ROOT), config.site_dir, config.use_directory_urls) for p in site_sources()]
    return Files(theme + ours)
