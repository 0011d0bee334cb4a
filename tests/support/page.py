"""`darkroom ui` as a person starts it: the web page's Streamlit server in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from darkroom.stack import free_port
from tests.support.polling import wait_until
from tests.support.processes import REPO_ROOT

START_TIMEOUT_S = 90.0


def _healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"darkroom ui exited early:\n{log_path.read_text()}")
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
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "darkroom.cli", "ui", "--port", str(port), *args],
            env={**inherited, **(env or {})},
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _healthy(url, proc, log_path),
            timeout_s=START_TIMEOUT_S,
            interval_s=0.2,
            what=f"darkroom ui answering (log: {log_path})",
        )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
