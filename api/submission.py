"""Turning a POST /jobs request into a stored, queued job, and a record into its public form."""

from __future__ import annotations

import logging
import uuid

from api.state import AppState
from shared.constants import DEFAULT_QUEUE, model_queue
from shared.errors import InvalidRequest, ServiceUnavailable
from shared.images import decode_init_image
from shared.jobs import (
    ImageOut,
    Job,
    JobCreate,
    JobErrorInfo,
    JobRecord,
    JobStatus,
    JobUrls,
    utcnow,
)
from shared.params import resolve_params
from shared.queue import publish_job

log = logging.getLogger(__name__)


def submit_job(state: AppState, request: JobCreate) -> JobRecord:
    """Validate against the registry, store the job as queued, then publish it.

    The record is written before the message: a worker never receives a job
    it cannot read. If publishing fails the record is marked failed and the
    client gets a 503, never a 202 for a job that will not run.
    """
    registry = state.registry
    model = request.model or registry.runtime.primary_model
    if model not in registry.models:
        raise InvalidRequest(
            f"unknown model {model!r}; available: {', '.join(sorted(registry.models))}", "model"
        )
    init_image = decode_init_image(request.init_image) if request.init_image else None
    params = resolve_params(request, registry.models[model], init_image)
    # A job that names its model runs only where that model is loaded; one that
    # does not goes to the shared queue and runs on whichever worker is free.
    queue = model_queue(model) if request.model else DEFAULT_QUEUE
    record = JobRecord(
        id=uuid.uuid4().hex,
        created_at=utcnow(),
        model=model,
        queue=queue,
        params=params,
        webhook=request.webhook,
        webhook_events_filter=request.webhook_events_filter or ["completed"],
    )
    state.store.create(record, init_image.data if init_image else None)
    try:
        publish_job(state.celery, record.id, queue)
    except Exception as exc:  # kombu raises several types for a broker that is away
        log.error("could not enqueue job %s: %s", record.id, exc)
        _abandon(state, record.id)
        raise ServiceUnavailable("the job queue is unreachable; the job was not accepted") from exc
    log.info(
        "job %s queued on %s (%s, %dx%d, %d steps)",
        record.id,
        queue,
        params.mode,
        params.width,
        params.height,
        params.steps,
    )
    return record


def _abandon(state: AppState, job_id: str) -> None:
    try:
        state.store.transition(
            job_id,
            JobStatus.FAILED,
            error=JobErrorInfo(type="service_unavailable", message="could not be queued"),
        )
    except Exception:  # Redis is likely away too; the record then expires unseen
        log.warning("could not mark unqueued job %s as failed", job_id)


def public_job(state: AppState, record: JobRecord) -> Job:
    base = state.settings.public_base_url
    return Job(
        **record.model_dump(exclude={"images"}),
        images=[
            ImageOut(
                url=state.storage.url(image.key),
                width=image.width,
                height=image.height,
                seed=image.seed,
                content_type=image.content_type,
            )
            for image in record.images
        ],
        urls=JobUrls(get=f"{base}/jobs/{record.id}", cancel=f"{base}/jobs/{record.id}/cancel"),
    )
