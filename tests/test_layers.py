"""The packages' floors: each may import only those below it.

    darkroom/  (the command, the local stack, the client)  ->  api, worker, shared
    api/       (the HTTP service, no torch)                ->  shared
    worker/    (Celery GPU workers)                        ->  shared
    shared/    (what both sides import)                    ->  nothing of darkroom's
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"darkroom", "api", "worker", "shared"}
ALLOWED = {
    "darkroom": {"darkroom", "api", "worker", "shared"},
    "api": {"api", "shared"},
    "worker": {"worker", "shared"},
    "shared": {"shared"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & PACKAGES
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_package_imports_only_the_floors_below_it(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: found for path, found in wrong.items() if found} == {}
