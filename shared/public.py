"""A job record as clients see it: fresh image URLs, queue position, timings, webhook log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import redis

from shared import lua
from shared.jobs import (
    ImageOut,
    Job,
    JobRecord,
    JobStatus,
    JobTimings,
    JobUrls,
    WebhookInfo,
    utcnow,
)
from shared.storage import Storage
from shared.webhooks import log_key, webhook_info

# The record's attributes a client sees as they are (the rest is built below).
_SHARED_FIELDS = [
    name
    for name in JobRecord.model_fields
    if name
    not in {"images", "webhook", "owner", "cost", "arrival_ms", "adapters", "events", "history"}
]


# shared/lua/position.lua: a queued job's position and ETA, as the scheduler sees them.
POSITION_SCRIPT = lua.script("position")


class _Pipeline(Protocol):
    """What queue_view_reads needs of a pipeline: redis-py's, or the API's batch of
    commands for the multiplexed client (api.reads)."""

    def lrange(self, name: str, start: int, end: int) -> Any: ...
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any: ...


def queue_view_reads(pipe: _Pipeline, record: JobRecord, half_life_s: float) -> None:
    """Queue on `pipe` what the public view needs beyond the record: the webhook
    log of a job with a webhook, the position and ETA of a queued one (else nothing).
    Redis must know POSITION_SCRIPT (lua.preload) before the pipeline runs."""
    if record.webhook is not None:
        pipe.lrange(log_key(record.id), 0, -1)
    if record.status is JobStatus.QUEUED:
        POSITION_SCRIPT.call(args={"job": record.id, "half_life": repr(half_life_s)}).queue_on(pipe)


def view_from_reads(
    record: JobRecord, answers: Iterator[Any], storage: Storage, base_url: str
) -> Job:
    """The public view, taking queue_view_reads' answers for `record` from `answers`."""
    log = next(answers) if record.webhook is not None else []
    position = eta = None
    if record.status is JobStatus.QUEUED:
        rank, seconds = next(answers)
        position = int(rank) if rank is not None else None
        eta = round(float(seconds), 1) if seconds is not None else None
    return job_view(record, position, webhook_info(record, log), storage, base_url, eta)


def read_views(
    client: redis.Redis,
    records: list[JobRecord],
    storage: Storage,
    base_url: str,
    half_life_s: float,
) -> list[Job]:
    """Public views of `records`, their extra reads in one round trip (none if none).

    Synchronous, for the worker side (webhook payloads); the API reads through its
    multiplexed client with the same queue_view_reads and view_from_reads.
    """
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        for record in records:
            queue_view_reads(pipe, record, half_life_s)
        try:
            answers = iter(pipe.execute())
            break
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            lua.preload(client, POSITION_SCRIPT.lua)  # Redis restarted: it forgot the script
    return [view_from_reads(record, answers, storage, base_url) for record in records]


def job_view(
    record: JobRecord,
    queue_position: int | None,
    webhook: WebhookInfo | None,
    storage: Storage,
    base_url: str,
    eta_s: float | None = None,
) -> Job:
    """The public view from what was already read (no I/O: usable on an event loop)."""
    return Job(
        # The attributes as they are: nested models pass through without a
        # dump-and-revalidate round trip.
        **{name: getattr(record, name) for name in _SHARED_FIELDS},
        queue_position=queue_position,
        eta_s=eta_s,
        timings=timings(record),
        images=[
            ImageOut(
                url=storage.url(image.key),
                width=image.width,
                height=image.height,
                seed=image.seed,
                content_type=image.content_type,
            )
            for image in record.images
        ],
        urls=JobUrls(
            get=f"{base_url}/jobs/{record.id}",
            cancel=f"{base_url}/jobs/{record.id}/cancel",
            events=f"{base_url}/jobs/{record.id}/events",
            preview=f"{base_url}/jobs/{record.id}/preview",
        ),
        webhook=webhook,
    )


def timings(record: JobRecord) -> JobTimings:
    now = utcnow()
    queued_until = record.started_at or record.finished_at or now
    running_until = record.finished_at or now
    return JobTimings(
        queued_s=round((queued_until - record.created_at).total_seconds(), 4),
        running_s=(
            round((running_until - record.started_at).total_seconds(), 4)
            if record.started_at
            else None
        ),
        inference_s=record.inference_s,
    )
