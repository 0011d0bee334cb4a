"""What the client commands print for people: one summary line per job, and tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "canceled": "yellow",
    "running": "cyan",
    "queued": "blue",
}


def status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def summary_line(job: dict[str, Any], saved: Sequence[Path] = ()) -> Text:
    """One line: status, id, model, seed(s), size, time, then the images or the error."""
    params = job["params"]
    line = status_text(job["status"])
    line.append(f"  {job['id']}  {job.get('model_used') or job['model']}")
    seeds = [image["seed"] for image in job["images"]] or [params["seed"]]
    line.append(f"  seed {', '.join(str(s) for s in seeds)}")
    line.append(f"  {params['width']}x{params['height']}  {params['steps']} steps")
    timings = job.get("timings") or {}
    if timings.get("running_s") is not None:
        line.append(f"  {timings['running_s']:.2f} s")
    if job.get("error"):
        line.append(f"  {job['error']['type']}: {job['error']['message']}", style="red")
    if saved:
        line.append("  saved " + ", ".join(str(path) for path in saved))
    elif job["images"]:
        line.append("  " + ", ".join(image["url"] for image in job["images"]))
    return line


def jobs_table(jobs: Sequence[dict[str, Any]]) -> Table:
    table = Table("id", "status", "model", "created", "size", "images", "prompt", box=None)
    for job in jobs:
        params = job["params"]
        table.add_row(
            job["id"],
            status_text(job["status"]),
            job.get("model_used") or job["model"],
            job["created_at"][:19].replace("T", " "),
            f"{params['width']}x{params['height']}",
            str(len(job["images"])),
            _shorten(params["prompt"], 48),
        )
    return table


def job_table(job: dict[str, Any]) -> Table:
    """`darkroom get`: every parameter of one job, one per row."""
    table = Table(show_header=False, box=None)
    table.add_row("id", job["id"])
    table.add_row("status", status_text(job["status"]))
    if job["status"] == "queued" and job.get("queue_position") is not None:
        table.add_row("queue position", str(job["queue_position"]))
        if job.get("eta_s") is not None:
            table.add_row("starts in", f"about {round(job['eta_s'])} s")
    if job["status"] == "running":
        table.add_row("progress", f"{float(job['progress']):.0%}")
    table.add_row("model", job.get("model_used") or job["model"])
    for name, value in job["params"].items():
        if value is not None:
            table.add_row(name, str(value))
    if job.get("error"):
        table.add_row("error", Text(f"{job['error']['type']}: {job['error']['message']}", "red"))
    for n, image in enumerate(job["images"], start=1):
        table.add_row(f"image {n}", f"{image['width']}x{image['height']} seed {image['seed']}")
    return table


def status_tables(status: dict[str, Any]) -> list[Table | Text]:
    """`darkroom status`: the service line, workers, models, queues, problems."""
    parts: list[Table | Text] = [Text(f"darkroom is {status['status']}", style="bold")]
    if not status["redis"]["reachable"]:
        parts.append(Text(f"Redis unreachable: {status['redis'].get('error')}", style="red"))
    workers = Table(
        "worker", "state", "model", "device", "jobs done", title="workers", title_justify="left"
    )
    for worker in status.get("workers", []):
        workers.add_row(
            worker["name"],
            worker["state"],
            worker.get("model") or "-",
            worker.get("device") or "-",
            str(worker.get("jobs_done", 0)),
        )
    models = Table("model", "workers", "queued", title="models", title_justify="left")
    for name, load in status.get("models", {}).items():
        models.add_row(name, str(load["workers"]), str(load["queued"]))
    queues = Table("queue", "messages", title="queues", title_justify="left")
    for name, depth in status.get("queues", {}).items():
        queues.add_row(name, str(depth))
    parts += [workers, models, queues]
    for problem in status.get("problems", []):
        parts.append(Text(f"problem: {problem}", style="yellow"))
    return parts


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
