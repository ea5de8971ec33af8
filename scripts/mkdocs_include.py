"""A mkdocs hook: ``<!-- include PATH -->`` on a line of its own becomes PATH's text (relative to
the repository) in a fenced block, so a file the code reads (the alert rules the Helm chart
installs) is shown by the docs without a second copy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"^<!-- include (\S+) -->$", re.M)


def on_page_markdown(markdown: str, **_: Any) -> str:
    def fenced(match: re.Match[str]) -> str:
        path = ROOT / match.group(1)
        return f"```{path.suffix.lstrip('.')}\n{path.read_text()}```"

    return INCLUDE.sub(fenced, markdown)
