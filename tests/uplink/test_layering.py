"""The shared package stands below the workers: nothing in ``uplink`` but its composition root
(``uplink.cli``, which wires every process) imports a worker or the ingress."""

from __future__ import annotations

import ast
from pathlib import Path

import uplink

ABOVE = ("consumers", "ingress")
PACKAGE = Path(uplink.__file__).parent


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_uplink_package_imports_no_worker_outside_its_command_line() -> None:
    checked = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]
    assert len(checked) > 20  # the package's modules, not an empty glob
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in imported(path) if name.split(".")[0] in ABOVE
        )
        for path in checked
    }
    assert {path: names for path, names in wrong.items() if names} == {}
