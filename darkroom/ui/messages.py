"""What the page says: API errors a person can act on, and a job's parameters in short.

Pure functions: the page shows their text, a test reads it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from darkroom.client import ApiError, ApiUnreachable

PROMPT_PREVIEW_CHARS = 80
STATUS_ICONS = {
    "queued": "⏳",
    "running": "⚙️",
    "succeeded": "✅",
    "failed": "❌",
    "canceled": "⏹️",
}
# The modes (params.mode) that start from an input image, in words.
IMAGE_INPUT_WORDS = {"img2img": "image-to-image", "inpaint": "inpainting"}
# Characters Markdown would read as formatting: a prompt is shown as typed.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def describe_api_error(exc: ApiError, api_url: str) -> str:
    """The message for a failed call: unreachable, rate limited, refused (with why)."""
    if isinstance(exc, ApiUnreachable):
        return (
            f"cannot reach the darkroom API at {api_url}; is it running? "
            "(`darkroom up` starts one; the page reconnects by itself when it answers)"
        )
    if exc.status_code == 429:
        return f"rate limited; retry in {_retry_after(exc)} ({exc.message})"
    if exc.status_code == 401:
        return f"the API needs a valid API key: enter it in the sidebar ({exc.message})"
    if exc.status_code is not None and exc.status_code >= 500:
        return f"the darkroom API failed (HTTP {exc.status_code}): {exc.message}"
    return f"the API refused the request (HTTP {exc.status_code}): {exc.message}"


def is_transient(exc: ApiError) -> bool:
    """Worth retrying unchanged: the API is down or overloaded, not refusing this caller."""
    return isinstance(exc, ApiUnreachable) or (
        exc.status_code is not None and exc.status_code >= 500
    )


def _retry_after(exc: ApiError) -> str:
    if exc.retry_after_s is None:
        return "a moment"
    return f"{math.ceil(exc.retry_after_s)} s"


def short_prompt(prompt: str, limit: int = PROMPT_PREVIEW_CHARS) -> str:
    flat = " ".join(prompt.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def image_caption(image: dict[str, Any]) -> str:
    return f"seed {image['seed']} · {image['width']}x{image['height']}"


def params_line(job: dict[str, Any]) -> str:
    """The parameters that made the job's images, in one line."""
    params = job["params"]
    parts = [
        job.get("model_used") or job["model"],
        f"{params['width']}x{params['height']}",
        f"{params['steps']} steps",
        f"guidance {params['guidance_scale']:g}",
        f"seed {params['seed']}",
    ]
    if params.get("sampler"):
        parts.append(params["sampler"])
    if params.get("scheduler"):
        parts.append(f"{params['scheduler']} schedule")
    if params.get("mode") in IMAGE_INPUT_WORDS:
        parts.append(f"{IMAGE_INPUT_WORDS[params['mode']]}, strength {params['strength']:g}")
    hires = params.get("hires")
    if hires:
        parts.append(f"hires fix to {hires['width']}x{hires['height']} ({hires['upscaler']})")
    if params.get("tiling"):
        parts.append("tiling")
    if job.get("model_used") and job["model_used"] != job["model"]:
        parts.append(f"fallback from {job['model']}")
    return " · ".join(parts)


def optimized_prompt(job: dict[str, Any]) -> str | None:
    """The prompt the worker actually used, when prompt optimisation changed it."""
    params = job["params"]
    used = params.get("optimized_prompt")
    return used if used and used != params["prompt"] else None


def error_text(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    message = error.get("message") or "no reason given"
    return f"The job failed ({error.get('type', 'error')}): {message}"


def escape_markdown(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def job_label(job: dict[str, Any]) -> str:
    """Status, model and when: the line under a history thumbnail."""
    created = datetime.fromisoformat(job["created_at"]).strftime("%Y-%m-%d %H:%M")
    icon = STATUS_ICONS.get(job["status"], "")
    return f"{icon} {job['status']} · {job['model']} · {created}"
