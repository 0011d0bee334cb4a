"""Serve a worker's Prometheus metrics on WORKER_METRICS_PORT.

A single worker serves them from its own process. A `--gpus`/`--workers` pool
serves every child's on one port from the parent, in prometheus_client's
multiprocess mode: the pool points PROMETHEUS_MULTIPROC_DIR at an empty
directory before any child starts; each child writes its values to files there
and the parent adds them up at scrape time. This module defines no metric, so
the pool's parent exposes only its children's.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(port: int) -> None:
    """Serve this process's metrics, or with multiprocess mode on, every process's."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, addr="0.0.0.0", registry=registry)
    else:
        start_http_server(port, addr="0.0.0.0")
    log.info("metrics on http://0.0.0.0:%d/metrics", port)


def serve_or_exit(port: int) -> None:
    """serve(), or stop the process with one clear line when the port is taken."""
    try:
        serve(port)
    except OSError as exc:
        log.critical("cannot serve metrics on port %d: %s (WORKER_METRICS_PORT)", port, exc)
        raise SystemExit(1) from None


def in_pool_child() -> bool:
    """Whether a pool's parent serves this process's metrics (it set the directory)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def fresh_multiprocess_dir() -> Path:
    """An empty directory for a pool's metric files.

    The files of an earlier run would be summed with this run's (counters that
    never reset, gauges of dead pids), so an existing PROMETHEUS_MULTIPROC_DIR
    is emptied; without one, a new temporary directory is made.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path
    return Path(tempfile.mkdtemp(prefix="darkroom-metrics-"))
