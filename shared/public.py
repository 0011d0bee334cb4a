"""A job record as clients see it: fresh image URLs, queue position, timings, webhook log."""

from __future__ import annotations

from shared.jobs import ImageOut, Job, JobRecord, JobTimings, JobUrls, WebhookInfo, utcnow
from shared.storage import Storage
from shared.store import JobStore
from shared.webhooks import webhook_section


def to_public(record: JobRecord, store: JobStore, storage: Storage, base_url: str) -> Job:
    """The public view, reading what it needs (queue position, webhook log) from Redis."""
    return build_public(
        record,
        store.queue_position(record),
        webhook_section(store.redis, record),
        storage,
        base_url,
    )


def build_public(
    record: JobRecord,
    queue_position: int | None,
    webhook: WebhookInfo | None,
    storage: Storage,
    base_url: str,
) -> Job:
    """The public view from what was already read (no I/O: usable on an event loop)."""
    return Job(
        **record.model_dump(exclude={"images", "webhook", "owner"}),
        queue_position=queue_position,
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
            get=f"{base_url}/jobs/{record.id}", cancel=f"{base_url}/jobs/{record.id}/cancel"
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
    )
