"""The command lines of darkroom's processes: Redis, the API, the workers.

`darkroom up`, the benchmark and the tests all build them here, so the three
start the same processes the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from darkroom.ui.access import ALLOWED_API_URLS_ENV
from shared.constants import WEBHOOK_QUEUE


def redis_server(binary: str, port: int, data_dir: str | Path) -> list[str]:
    """A throwaway Redis on loopback: no persistence, quiet."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--loglevel",
        "warning",
    ]


def uvicorn(app: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """One uvicorn process serving `app` (e.g. "api.main:app")."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def celery_worker(
    hostname: str, loglevel: str = "INFO", app: str = "worker.celery_app", standalone: bool = True
) -> list[str]:
    """A Celery worker of `app`. Standalone: no mingle/gossip chatter with other workers
    at start (each worker's state is in Redis; it needs nothing from its peers)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        f"--hostname={hostname}",
        f"--loglevel={loglevel}",
    ]
    if standalone:
        argv += ["--without-mingle", "--without-gossip"]
    return argv


def webhook_worker(hostname: str, loglevel: str = "INFO") -> list[str]:
    """The light webhook delivery worker, on its own queue."""
    return [
        *celery_worker(hostname, loglevel, app="worker.webhook_app"),
        f"--queues={WEBHOOK_QUEUE}",
    ]


def threads_per_worker(workers: int, configured: str | None = None) -> int:
    """TORCH_THREADS when set, else the cores split evenly (at least one each).

    CPU workers that each took every core would fight over them; a GPU worker
    needs only a few for its host-side work.
    """
    if configured:
        return int(configured)
    return max(1, (os.cpu_count() or 1) // workers)


UI_SCRIPT = Path(__file__).resolve().parent / "ui" / "app.py"


def streamlit_ui(port: int, host: str = "127.0.0.1") -> list[str]:
    """The web page: `streamlit run darkroom/ui/app.py`, headless (no browser opened,
    no usage statistics sent). The API's URL and key reach it through the
    environment (`streamlit_ui_env`), never argv: `ps` shows argv."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(UI_SCRIPT),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        # No "Deploy" button: this page is served by darkroom, not Streamlit's cloud.
        "--client.toolbarMode",
        "minimal",
    ]


def streamlit_ui_env(
    api_url: str, api_key: str | None, allowed_api_urls: Sequence[str] = ()
) -> dict[str, str]:
    """What the web page reads from its environment: the API it calls, the key it calls
    that API with (kept on the server), and the other URLs visitors may choose.

    Without `allowed_api_urls`, an inherited DARKROOM_UI_ALLOWED_API_URLS stands
    (else the page calls the configured URL only).
    """
    env = {"DARKROOM_API_URL": api_url}
    if allowed_api_urls:
        env[ALLOWED_API_URLS_ENV] = " ".join(allowed_api_urls)
    if api_key:
        env["DARKROOM_API_KEY"] = api_key
    return env
