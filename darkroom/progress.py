"""`--wait` for people: the queue position, then a step progress bar, on the terminal.

It polls `GET /jobs/{id}`, the same read every client makes. Progress is drawn on
stderr so that stdout keeps only the result (a summary line, or `--json`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from darkroom.client import TERMINAL, DarkroomClient

POLL_S = 0.2


def watch(
    client: DarkroomClient,
    job: dict[str, Any],
    console: Console,
    timeout_s: float = 3600,
    previews: Path | None = None,
) -> dict[str, Any]:
    """Follow `job` until it is terminal, drawing its state; returns the final job.
    With `previews`, its live previews are saved there as they come.

    Ctrl-C (KeyboardInterrupt) propagates: the caller says the job keeps running.
    """
    deadline = time.monotonic() + timeout_s
    steps = int(job["params"]["steps"])
    saver = PreviewSaver(client, job["id"], previews) if previews is not None else None
    with _progress(console) as bar:
        task = bar.add_task(_queued_text(job), total=steps, start=False)
        while job["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job['id']} still {job['status']} after {timeout_s:.0f}s")
            time.sleep(POLL_S)
            if saver is not None:
                saver.poll()
            job = client.get(job["id"])
            _draw(bar, task, job, steps)
        _draw(bar, task, job, steps)
    return job


class PreviewSaver:
    """Saves a job's live previews into a directory, each new step once:
    `<job id>-step<k>.webp` (`-<image>` after the step for jobs of several images)."""

    def __init__(self, client: DarkroomClient, job_id: str, directory: Path):
        self.client = client
        self.job_id = job_id
        self.directory = directory
        self.saved: list[Path] = []
        self._last_step = 0
        directory.mkdir(parents=True, exist_ok=True)

    def poll(self) -> None:
        first = self.client.preview(self.job_id)
        if first is None or first.step == self._last_step:
            return
        self._last_step = first.step
        for index in range(first.images):
            latest = first if index == 0 else self.client.preview(self.job_id, index)
            if latest is None:
                continue
            suffix = f"-{index}" if first.images > 1 else ""
            path = self.directory / f"{self.job_id}-step{first.step:03d}{suffix}.webp"
            path.write_bytes(latest.webp)
            self.saved.append(path)


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _draw(bar: Progress, task: TaskID, job: dict[str, Any], steps: int) -> None:
    status = job["status"]
    if status == "queued":
        bar.update(task, description=_queued_text(job))
        return
    if not bar.tasks[task].started:
        # The clock of the time-left estimate starts when the job does.
        bar.start_task(task)
    done = steps if status == "succeeded" else round(float(job["progress"]) * steps)
    bar.update(task, description=f"{status:9}", completed=done)


def _queued_text(job: dict[str, Any]) -> str:
    position = job.get("queue_position")
    if position is None:
        return "queued   "
    ahead = "next in line" if position == 0 else f"{position} ahead"
    eta = job.get("eta_s")
    if eta is not None and eta >= 1:
        ahead += f", ~{round(eta)} s"
    return f"queued ({ahead})"
