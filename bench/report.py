"""The table (plain or markdown) and the JSON file of a run."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import Result, cpu_count
from bench.stack import REPO_ROOT

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HEADERS = ("benchmark", "measured", "target", "result")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": "none (the CPU benchmarks never use one)",
    }
    import importlib.metadata as md

    with contextlib.suppress(md.PackageNotFoundError):  # informative only
        info["packages"] = {
            name: md.version(name)
            for name in ("torch", "diffusers", "celery", "fastapi", "uvicorn", "redis")
        }
    info["git"] = _git()
    return info


def table(results: list[Result], markdown: bool = False) -> str:
    rows = [(r.name, r.measured, r.target, r.status) for r in results]
    if markdown:
        lines = [
            "| " + " | ".join(HEADERS) + " |",
            "|" + "|".join("---" for _ in HEADERS) + "|",
        ]
        lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*HEADERS), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    return "\n".join(out)


def notes(results: list[Result]) -> str:
    lines = []
    for result in results:
        for note in result.notes:
            lines.append(f"- {result.name}: {note}")
    return "\n".join(lines)


def write_json(payload: dict[str, Any], started: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def _md(cell: str) -> str:
    return str(cell).replace("|", "\\|")


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages / 2**30, 1)


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = git("--no-optional-locks", "status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(dirty)}
