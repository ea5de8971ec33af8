"""The README stays a front door: short, every link in it resolves, and it links every page of
the documentation site, so any page is one hop away and any section two.

The site's own links and anchors are checked by `mkdocs build --strict` (scripts/test)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub and mkdocs' toc give a heading (for the headings these pages use)."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[\s]+", "-", text)


def local_links(text: str) -> list[tuple[Path, str]]:
    found = []
    for target in LINK.findall(text):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        found.append(((ROOT / path).resolve(), anchor))
    return found


def nav_pages(nav: list[Any]) -> list[str]:
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 200


def test_every_link_in_the_readme_resolves() -> None:
    links = local_links(README.read_text())
    assert links
    for path, anchor in links:
        assert path.is_file(), f"README links {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"no #{anchor} in {path.name}"


def test_the_readme_links_every_page_of_the_site() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = {(ROOT / config["docs_dir"] / page).resolve() for page in nav_pages(config["nav"])}
    assert len(pages) >= 10
    linked = {path for path, _ in local_links(README.read_text())}
    assert pages <= linked, f"pages the README does not link: {sorted(map(str, pages - linked))}"
