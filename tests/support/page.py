"""`darkroom ui` as a person starts it: the web page's Streamlit server in a real process."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from darkroom.processes import spawn
from darkroom.stack import free_port
from tests.support.processes import REPO_ROOT

START_TIMEOUT_S = 90.0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok"
    except httpx.TransportError:
        return False


@contextmanager
def running_page(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`darkroom ui ARGS...` on a free port, with no inherited DARKROOM_ settings and
    `env` added; yields its URL once Streamlit answers its health check."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
    page = spawn(
        "darkroom ui",
        [sys.executable, "-m", "darkroom.cli", "ui", "--port", str(port), *args],
        {**inherited, **(env or {})},
        REPO_ROOT,
        log_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        page.wait_until(
            lambda: _healthy(url),
            timeout_s=START_TIMEOUT_S,
            interval_s=0.2,
            what=f"darkroom ui answering (log: {log_path})",
        )
        yield url
    finally:
        page.stop()
