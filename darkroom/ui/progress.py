"""A job's live state in words: queue position, step k/N, the time left.

Pure functions of a `GET /jobs/{id}` answer, so a test checks them without a page.
"""

from __future__ import annotations

from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
FINISHED_TEXT = {"succeeded": "Done", "failed": "Failed", "canceled": "Canceled"}
# The modes (params.mode) that start from an init image, at its strength.
IMAGE_INPUT_MODES = frozenset({"img2img", "inpaint"})


def is_terminal(job: dict[str, Any]) -> bool:
    return job["status"] in TERMINAL


def total_steps(params: dict[str, Any]) -> int:
    """Denoising steps the worker runs: image-to-image (and inpainting) skips the first
    (1 - strength); the hires fix adds its second pass, which the job's progress counts."""
    steps = int(params["steps"])
    if params.get("mode") in IMAGE_INPUT_MODES and params.get("strength") is not None:
        steps = _strength_steps(steps, float(params["strength"]))
    hires = params.get("hires")
    if hires:
        steps += _strength_steps(int(hires["steps"]), float(hires["strength"]))
    return steps


def _strength_steps(steps: int, strength: float) -> int:
    # diffusers' img2img: int(steps * strength) steps, at least one.
    return max(1, min(steps, int(steps * strength)))


def steps_done(progress: float, total: int) -> int:
    return max(0, min(total, round(progress * total)))


def seconds_left(progress: float, running_s: float | None) -> float | None:
    """The time left if the steps still to run take as long as those done.

    None before the first step is reported: there is nothing to go by yet.
    """
    if running_s is None or progress <= 0:
        return None
    return max(0.0, running_s * (1 - progress) / progress)


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def queued_text(job: dict[str, Any]) -> str:
    position = job.get("queue_position")
    if position is None:
        return "Queued"
    if position == 0:
        text = "Queued: next in line"
    else:
        ahead = "1 job" if position == 1 else f"{position} jobs"
        text = f"Queued: {ahead} ahead"
    eta = job.get("eta_s")
    if eta is not None and eta >= 1:
        text += f", starts in about {format_duration(eta)}"
    return text


def running_text(job: dict[str, Any]) -> str:
    """ "step k/N, about T left" (with "stopping" once a cancel was asked for)."""
    total = total_steps(job["params"])
    progress = float(job.get("progress") or 0.0)
    text = f"step {steps_done(progress, total)}/{total}"
    left = seconds_left(progress, (job.get("timings") or {}).get("running_s"))
    if left is None:
        text += ", estimating the time left"
    else:
        text += f", about {format_duration(left)} left"
    if job.get("cancel_requested"):
        text += " (cancel requested: stops after this step)"
    return text


def status_text(job: dict[str, Any]) -> str:
    """One line for any status."""
    status = job["status"]
    if status == "queued":
        return queued_text(job)
    if status == "running":
        return "Running: " + running_text(job)
    return FINISHED_TEXT.get(status, str(status))
