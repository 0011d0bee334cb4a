"""OpenAI's streamed image answers (`stream: true`): partial images, then the final ones.

The call is one or more ordinary jobs (`n` over 4 takes several), as without
streaming; while they run the stream marks each watched, so the worker makes
live previews, and sends up to `partial_images` of them per image as
`<kind>.partial_image` events (the k-th once its job is k/partial_images of the
way through: fewer when the job is quicker than the previews), then one
`<kind>.completed` event per image as its job finishes. For `n > 1` each event
also carries `index`, the image of the call it belongs to (0..n-1, across its
jobs). A failed, canceled or timed-out job ends the stream with an `error` event
in OpenAI's shape, which the SDKs raise; a failed or canceled one cancels the
call's other jobs too, as a call that is not streamed does (api.compat.jobs).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from api.compat.errors import WaitTimedOut
from api.compat.images import OutputFormat, b64, convert, read_stored
from api.compat.jobs import cancel_quietly
from api.compat.openai_schemas import ImageEditRequest, ImageGenerationRequest
from api.reads import fetch_record
from api.state import AppState
from shared.jobs import JobRecord, JobStatus
from shared.previews import Preview, Watching, preview_after

StreamKind = Literal["image_generation", "image_edit"]
POLL_INTERVAL_S = 0.1
# The values OpenAI's events may carry for `quality` (darkroom ignores it).
_EVENT_QUALITIES = {"low", "medium", "high", "xhigh", "max", "auto"}


def stream_response(
    state: AppState,
    jobs: list[tuple[str, int]],
    body: ImageGenerationRequest | ImageEditRequest,
    kind: StreamKind,
) -> StreamingResponse:
    """The SSE answer of a streamed call whose `jobs` were submitted: (id, images) of
    each, in the call's order."""
    return StreamingResponse(
        _events(state, jobs, _Shape(body, kind)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Shape:
    """What every event of the call repeats, as OpenAI's events carry it."""

    def __init__(self, body: ImageGenerationRequest | ImageEditRequest, kind: StreamKind):
        self.kind = kind
        self.partials = body.partial_images or 0
        self.output_format: OutputFormat = body.output_format or "png"
        self.compression = body.output_compression
        self.quality = body.quality if body.quality in _EVENT_QUALITIES else "auto"
        self.background = "opaque"

    def event(self, suffix: str, index: int, data: bytes, record: JobRecord, **extra: Any) -> str:
        fields: dict[str, Any] = {
            "type": f"{self.kind}.{suffix}",
            "b64_json": b64(data),
            "created_at": int(time.time()),
            "size": f"{record.params.width}x{record.params.height}",
            "quality": self.quality,
            "background": self.background,
            "output_format": self.output_format,
            **extra,
            "index": index,
        }
        return f"event: {fields['type']}\ndata: {json.dumps(fields)}\n\n"


async def _events(
    state: AppState, jobs: list[tuple[str, int]], shape: _Shape
) -> AsyncIterator[str]:
    deadline = time.monotonic() + state.settings.compat_wait_s
    firsts = itertools.accumulate((images for _, images in jobs), initial=0)
    following = [
        _Followed(state, job_id, first, shape.partials)
        for (job_id, _), first in zip(jobs, firsts, strict=False)  # firsts has one more
    ]
    while following:
        for followed in list(following):
            async for frame in followed.poll(state, shape):
                yield frame
            if followed.failed:
                # The call's answer is decided: its other jobs would only burn GPU time.
                rest = [f.job_id for f in following if f is not followed]
                await run_in_threadpool(cancel_quietly, state, rest)
                return
            if followed.done:
                following.remove(followed)
        if following and time.monotonic() > deadline:
            # The jobs go on: the client may still collect them (GET /jobs/{id}).
            unfinished = [f.job_id for f in following]
            timed_out = WaitTimedOut(unfinished, state.settings.compat_wait_s)
            yield _error("timeout", str(timed_out), unfinished[0])
            return
        if following:
            await asyncio.sleep(POLL_INTERVAL_S)


class _Followed:
    """One job of the streamed call, its images the call's from `first` on."""

    def __init__(self, state: AppState, job_id: str, first: int, partials: int):
        self.job_id = job_id
        self.first = first
        self.partials = _Partials(partials, first)
        self.watching = Watching(state.mux, job_id)
        self.done = False  # succeeded, its images sent
        self.failed = False  # ended without images (or expired), the error sent

    async def poll(self, state: AppState, shape: _Shape) -> AsyncIterator[str]:
        """The events since the last poll: new partial images, or how the job ended."""
        record = await fetch_record(state, self.job_id)
        if record is None or record.status in (JobStatus.FAILED, JobStatus.CANCELED):
            self.failed = True
            yield _ended_badly(record, self.job_id)
            return
        if record.status is JobStatus.SUCCEEDED:
            self.done = True
            async for frame in _completed(state, record, self.first, shape):
                yield frame
            return
        if self.partials.wanted:
            await self.watching.keep()
        if self.partials.wanted and record.status is JobStatus.RUNNING:
            for frame in await self.partials.new(state, record, shape):
                yield frame


class _Partials:
    """Which previews of a job go out as partial images: per image, the k-th of
    `count` once the job is k/count of the way through (the first at once). The
    job's images are the call's from `first` on."""

    def __init__(self, count: int, first: int):
        self.count = count
        self.first = first
        self.sent: dict[int, int] = {}
        self.seen = 0

    @property
    def wanted(self) -> bool:
        return self.count > 0

    async def new(self, state: AppState, record: JobRecord, shape: _Shape) -> list[str]:
        preview = await preview_after(state.mux, record.id, self.seen)
        if preview is None:
            return []
        self.seen = preview.seq
        due = [index for index in range(len(preview.images)) if self._due(index, preview)]
        if not due:
            return []
        encoded = await run_in_threadpool(_reencode, preview, due, shape)
        frames = []
        for index, data in zip(due, encoded, strict=True):
            number = self.sent.get(index, 0)
            frames.append(
                shape.event(
                    "partial_image", self.first + index, data, record, partial_image_index=number
                )
            )
            self.sent[index] = number + 1
        return frames

    def _due(self, index: int, preview: Preview) -> bool:
        sent = self.sent.get(index, 0)
        return sent < self.count and preview.step / preview.steps >= sent / self.count


def _reencode(preview: Preview, indexes: list[int], shape: _Shape) -> list[bytes]:
    """Previews (WebP) in the call's output format."""
    out = []
    for index in indexes:
        image = Image.open(io.BytesIO(preview.images[index])).convert("RGB")
        buffer = io.BytesIO()
        quality = 100 if shape.compression is None else shape.compression
        image.save(buffer, format=shape.output_format.upper(), quality=quality)
        out.append(buffer.getvalue())
    return out


def _ended_badly(record: JobRecord | None, job_id: str) -> str:
    """The error event of a job that ended without images, or expired."""
    if record is None:
        return _error("not_found", f"job {job_id} expired", job_id)
    reason = record.error.message if record.error else "no images"
    message = f"job {record.id} {record.status.value}: {reason}"
    return _error(f"job_{record.status.value}", message, record.id)


async def _completed(
    state: AppState, record: JobRecord, first: int, shape: _Shape
) -> AsyncIterator[str]:
    """The finished job's images, numbered in the call from `first` on."""
    for number, image in enumerate(record.images):
        png = await run_in_threadpool(read_stored, state.storage, image.key)
        data = await run_in_threadpool(convert, png, shape.output_format, shape.compression)
        yield shape.event("completed", first + number, data, record, usage=_NO_TOKENS)


# `usage` counts tokens of OpenAI's GPT image models: none here.
_NO_TOKENS = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


def _error(code: str, message: str, job_id: str) -> str:
    """OpenAI's error event: the SDKs raise it as an APIError."""
    error = {
        "type": "error",
        "error": {"type": code, "code": code, "message": message},
        "job_id": job_id,
    }
    return f"event: error\ndata: {json.dumps(error)}\n\n"
