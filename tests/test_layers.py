"""The packages' floors: each may import only those below it.

    darkroom/  (the command, the local stack, the client)  ->  api, worker, shared
    api/       (the HTTP service, no torch)                ->  shared
    worker/    (Celery GPU workers)                        ->  shared
    shared/    (what both sides import)                    ->  nothing of darkroom's

The web page, darkroom/ui/, is a client like any other: darkroom.client and
its own modules, no server code and no server-side libraries.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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


# The web page is a client like any other (`darkroom ui` runs where only the
# API can be reached): its own modules, the HTTP client and UI libraries.
UI_ALLOWED = ("darkroom.client", "darkroom.ui")
SERVER_LIBRARIES = {"redis", "celery", "torch", "diffusers", "transformers", "boto3", "fastapi"}


def imported_modules(path: Path) -> set[str]:
    """Full dotted names; `from darkroom import client` counts as darkroom.client."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in PACKAGES:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found


def _allowed_in_the_ui(module: str) -> bool:
    top = module.split(".")[0]
    if top in PACKAGES:
        return any(module == allowed or module.startswith(allowed + ".") for allowed in UI_ALLOWED)
    return top not in SERVER_LIBRARIES


def test_the_web_page_imports_only_the_client_and_itself() -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(
            module for module in imported_modules(path) if not _allowed_in_the_ui(module)
        )
        for path in sorted((ROOT / "darkroom" / "ui").rglob("*.py"))
    }
    assert {path: found for path, found in wrong.items() if found} == {}
    assert wrong, "no darkroom/ui modules found"


def test_the_web_page_loads_no_server_side_library() -> None:
    """What the page's modules pull in at import, transitively (the AST check sees one file)."""
    modules = sorted(path.stem for path in (ROOT / "darkroom" / "ui").glob("*.py"))
    pages = [f"darkroom.ui.{name}" for name in modules if name not in {"__init__", "app"}]
    probe = (
        f"import sys\nfor name in {pages!r}: __import__(name)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(set(loaded) & (SERVER_LIBRARIES | PACKAGES - {"darkroom"})) == []
