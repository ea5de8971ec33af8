"""What a benchmark records about its run, and how it writes the run into bench/RESULTS.md.

RESULTS.md opens with a summary table, one row per benchmark, then has one section per
benchmark (``## <benchmark>``) holding its latest run. ``write_run`` replaces that benchmark's
row and section, or adds them, and leaves every other benchmark's as they are: the runs before
are in git history.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
ROOT = RESULTS.parent.parent
TITLE = "# Benchmark results"
INTRO = (
    "Each benchmark's latest run, against a baseline measured in the same run where it has one;\n"
    "its section below holds that run. Running a benchmark replaces its row and its section\n"
    "(bench/results.py); git history keeps the runs before."
)
COLUMNS = ("benchmark", "latest figure", "bar", "met", "date", "commit", "reproduce")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """Cores, CPU model, system and Python version."""
    return (
        f"{os.cpu_count()} cores ({cpu_model()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def current_commit() -> str:
    """HEAD's short hash, with " + uncommitted changes" when tracked files other than
    RESULTS.md differ from it."""
    results = RESULTS.relative_to(ROOT).as_posix()
    try:
        head = _git("rev-parse", "--short", "HEAD")
        changed = _git(
            "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){results}"
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"{head} + uncommitted changes" if changed else head


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def command(argv: Sequence[str] | None = None) -> str:
    """The command line that reproduces this run: the benchmark's module (``python -m`` puts
    its file in ``sys.argv[0]``) and the arguments it was given."""
    script, *arguments = sys.argv if argv is None else argv
    return shlex.join([".venv/bin/python", "-m", f"bench.{Path(script).stem}", *arguments])


def run_line(where: str = "") -> str:
    """A section's first line: the date, the commit measured and the machine, then ``where``."""
    return f"Run {today()}, commit {current_commit()}. Machine: {machine()}{where}."


def write_run(
    benchmark: str,
    *,
    figure: str,
    command: str,
    section: str,
    bar: str = "",
    met: bool | None = None,
    date: str | None = None,
    commit: str | None = None,
    path: Path = RESULTS,
) -> None:
    """Put a run into RESULTS.md: its summary row and its section replace the benchmark's own.

    ``section`` is the run's text without its heading (``## <benchmark>`` is added). ``bar`` is
    empty and ``met`` None for a benchmark without a bar; ``date`` and ``commit`` default to
    today's and the current commit.
    """
    if not benchmark or "|" in benchmark or "\n" in benchmark:
        raise ValueError(f"benchmark name {benchmark!r}: one line, no '|'")
    if any(line.startswith("## ") for line in section.splitlines()):
        raise ValueError("a section's text holds no '## ' heading (use '###')")
    cells = [
        f"[{benchmark}](#{_anchor(benchmark)})",
        figure,
        bar or "—",
        "—" if met is None else "yes" if met else "no",
        date or today(),
        commit or current_commit(),
        f"`{command}`",
    ]
    row = "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    head, sections = _split(text)
    lines = [f"## {benchmark}", "", *section.strip("\n").splitlines(), ""]
    for index, block in enumerate(sections):
        if block[0][3:].strip() == benchmark:
            sections[index] = lines
            break
    else:
        if sections and sections[-1][-1].strip():
            sections[-1].append("")
        sections.append(lines)
    blocks = [_with_row(head, benchmark, row), *sections]
    path.write_text("\n".join(line for block in blocks for line in block) + "\n", encoding="utf-8")


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _split(text: str) -> tuple[list[str], list[list[str]]]:
    """The lines before the first section, and each section's lines (its heading first)."""
    head: list[str] = []
    sections: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            head.append(line)
    return head, sections


def _with_row(head: list[str], benchmark: str, row: str) -> list[str]:
    """The head with ``row`` in the summary table, in place of the benchmark's row if any."""
    header = "| " + " | ".join(COLUMNS) + " |"
    lines = list(head)
    while lines and not lines[-1].strip():
        lines.pop()
    if header not in lines:
        if not lines:
            lines = [TITLE, "", INTRO]
        lines += ["", header, "|" + "---|" * len(COLUMNS)]
    end = lines.index(header) + 2
    while end < len(lines) and lines[end].startswith("|"):
        if _row_name(lines[end]) == benchmark:
            lines[end] = row
            break
        end += 1
    else:
        lines.insert(end, row)
    return [*lines, ""]


def _row_name(row: str) -> str:
    cell = row.strip("|").split("|", 1)[0].strip()
    link = re.fullmatch(r"\[(.*)\]\(#[^)]*\)", cell)
    return link[1] if link else cell
