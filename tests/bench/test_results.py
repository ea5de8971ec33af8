"""bench/results.py: a run replaces its benchmark's summary row and section, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import results


def write(path: Path, benchmark: str, figure: str, text: str, met: bool | None = None) -> None:
    results.write_run(
        benchmark,
        figure=figure,
        bar="50 % of the bare loop" if met is not None else "",
        met=met,
        command=".venv/bin/python -m bench.x --records 10",
        section=f"Run 2026-12-02, commit abc1234. {text}\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        date="2026-12-02",
        commit="abc1234",
        path=path,
    )


def rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| [")]


def test_runs_replace_their_row_and_section(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    write(path, "Archive throughput", "archive at 40.0 %", "first archive run", met=False)
    write(path, "Window rebuild", "1.20x a bare read", "the rebuild run")
    after_two = path.read_text()
    write(path, "Archive throughput", "archive at 55.1 %", "second archive run", met=True)
    text = path.read_text()

    assert text.startswith(results.TITLE + "\n")
    assert rows(text) == [
        "| [Archive throughput](#archive-throughput) | archive at 55.1 % | 50 % of the bare loop"
        " | yes | 2026-12-02 | abc1234 | `.venv/bin/python -m bench.x --records 10` |",
        rows(after_two)[1],
    ]
    assert rows(after_two)[1] == (
        "| [Window rebuild](#window-rebuild) | 1.20x a bare read | — | — | 2026-12-02 | abc1234"
        " | `.venv/bin/python -m bench.x --records 10` |"
    )
    assert text.count("## Archive throughput\n") == 1
    assert "first archive run" not in text and "second archive run" in text
    # The other benchmark's section is as it was, and the sections keep their order.
    rebuild = after_two[after_two.index("## Window rebuild") :]
    assert text.endswith(rebuild)
    assert text.index("## Archive throughput") < text.index("## Window rebuild")
    assert text.count("| 1 | 2 |") == 2


def test_a_hand_written_head_and_unknown_sections_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(
        "# Benchmark results\n\nNotes by hand.\n\n"
        "| benchmark | latest figure | bar | met | date | commit | reproduce |\n"
        "|---|---|---|---|---|---|---|\n"
        "| [Other](#other) | 1 | — | — | 2026-11-25 | c6fceee (from git history) | `x` |\n\n"
        "## Other\n\nKept as it is.\n### A sub-heading\n"
    )
    write(path, "New one", "2", "new")
    text = path.read_text()
    assert text.startswith("# Benchmark results\n\nNotes by hand.\n\n| benchmark |")
    assert rows(text)[0].startswith("| [Other](#other) | 1 |")
    assert rows(text)[1].startswith("| [New one](#new-one) | 2 |")
    assert "## Other\n\nKept as it is.\n### A sub-heading\n\n## New one\n\nRun 2026-12-02" in text


def test_a_section_cannot_open_another(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write(tmp_path / "RESULTS.md", "Archive throughput", "1", "text\n## Stray heading")
    assert not (tmp_path / "RESULTS.md").exists()


def test_command_names_the_module_and_its_arguments() -> None:
    argv = ["/work/main/bench/archive_throughput.py", "--records", "300000", "--x", "a b"]
    assert results.command(argv) == (
        ".venv/bin/python -m bench.archive_throughput --records 300000 --x 'a b'"
    )
