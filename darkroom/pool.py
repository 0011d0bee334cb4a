"""`darkroom worker --gpus all|0,2` / `--workers N`: one worker process per GPU (or N on CPU).

The parent never imports torch or touches CUDA: it lists GPUs with nvidia-smi
and starts each child with CUDA_VISIBLE_DEVICES set, so every child sees one
device as cuda:0 and CUDA is initialised only after its process exists.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from types import FrameType

from darkroom import process_commands
from darkroom.process_commands import threads_per_worker
from darkroom.processes import spawn
from shared.workers import unique_name
from worker import metrics_server

log = logging.getLogger("darkroom.worker")


def list_gpus() -> list[str]:
    """GPU indices from nvidia-smi (no CUDA initialisation in this process)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    result = subprocess.run(
        [smi, "--query-gpu=index", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def resolve_gpus(spec: str) -> list[str]:
    """`all`, or a comma-separated list of indices."""
    if spec == "all":
        gpus = list_gpus()
        if not gpus:
            raise SystemExit("darkroom worker --gpus all: no GPU found (nvidia-smi lists none)")
        return gpus
    gpus = [part.strip() for part in spec.split(",") if part.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise SystemExit(f"darkroom worker --gpus {spec!r}: expected 'all' or indices like 0,2")
    return gpus


def child_env(base: dict[str, str], gpu: str | None, threads: int) -> dict[str, str]:
    env = {**base, "TORCH_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
        env["DEVICE"] = "cuda"
    return env


def child_name(label: str, name: str | None) -> str:
    """`--name N` gives `<label>@N`; without one, each child gets a unique name of its own."""
    return f"{label}@{name}" if name else unique_name(label)


def run_pool(gpus: list[str | None], name: str | None, loglevel: str) -> int:
    """Start one worker per entry of `gpus` (None: a CPU worker); stop them all together."""
    threads = threads_per_worker(len(gpus), os.environ.get("TORCH_THREADS"))
    metrics_port = os.environ.pop("WORKER_METRICS_PORT", None)
    if metrics_port:
        # Before any child starts: each finds the directory in its environment and
        # writes its metrics there; this process serves them all on one port.
        os.environ[metrics_server.MULTIPROC_ENV] = str(metrics_server.fresh_multiprocess_dir())
        metrics_server.serve_or_exit(int(metrics_port))
    children = []
    for index, gpu in enumerate(gpus):
        label = f"gpu{gpu}" if gpu is not None else f"cpu{index}"
        argv = process_commands.celery_worker(child_name(label, name), loglevel, standalone=False)
        children.append(spawn(label, argv, child_env(dict(os.environ), gpu, threads)))
        log.info("started worker %s (pid %d)", label, children[-1].proc.pid)

    stopping = False

    def forward(signum: int, _: FrameType | None) -> None:
        # Once only: a second SIGTERM would cut a child's warm shutdown short.
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for child in children:
            child.send(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # A worker that dies is not restarted here: the orchestrator (systemd,
    # Kubernetes, compose) restarts the pool, and the reaper re-queues its job.
    while all(child.alive() for child in children):
        time.sleep(0.5)
    forward(signal.SIGTERM, None)  # one died on its own: stop the others too
    codes = [child.wait() for child in children]
    return next((code for code in codes if code != 0), 0)
