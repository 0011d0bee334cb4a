"""A real Prometheus server (Debian's `prometheus` package) for tests: scrape, then query."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from darkroom.processes import http_ok, spawn
from darkroom.stack import free_port
from tests.support.system import require_program


@contextmanager
def running_prometheus(
    targets: dict[str, str], workdir: Path, credentials_files: dict[str, Path] | None = None
) -> Iterator[str]:
    """Prometheus scraping `targets` (job name -> host:port) every second; yields its URL.

    `credentials_files`: per job, a file whose content Prometheus sends as a Bearer
    token (as deploy/observability's configs send METRICS_TOKEN).
    """
    credentials_files = credentials_files or {}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [target]}],
                **(
                    {"authorization": {"credentials_file": str(credentials_files[job])}}
                    if job in credentials_files
                    else {}
                ),
            }
            for job, target in targets.items()
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    argv = [
        require_program("prometheus", "prometheus"),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = spawn("prometheus", argv, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_until(
            http_ok(f"{url}/-/ready"),
            60,
            0.1,
            what=lambda: f"prometheus ready:\n{server.log_text()}",
        )
        yield url
    finally:
        server.stop(timeout_s=30)


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]
