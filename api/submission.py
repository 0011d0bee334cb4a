"""Turning a POST /jobs request into a stored, queued job."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import timedelta

from api.state import AppState
from shared import idempotency
from shared.constants import DEFAULT_QUEUE, model_queue
from shared.errors import InvalidRequest, JobNotFound, ServiceUnavailable
from shared.images import decode_init_image
from shared.jobs import (
    Job,
    JobCreate,
    JobErrorInfo,
    JobRecord,
    JobStatus,
    utcnow,
)
from shared.params import resolve_params
from shared.public import to_public
from shared.queue import publish_job
from shared.webhooks import check_webhook_url

log = logging.getLogger(__name__)


def submit_job(
    state: AppState,
    request: JobCreate,
    idempotency_key: str | None = None,
    owner: str = "anonymous",
) -> tuple[JobRecord, bool]:
    """Validate against the registry, store the job as queued, then publish it.

    Returns the job and whether it is a replay of an earlier request with the
    same Idempotency-Key. The record is written before the message: a worker
    never receives a job it cannot read. If publishing fails the record is
    marked failed and the client gets a 503, never a 202 for a job that will
    not run.
    """
    registry = state.registry
    model = request.model or registry.runtime.primary_model
    if model not in registry.models:
        raise InvalidRequest(
            f"unknown model {model!r}; available: {', '.join(sorted(registry.models))}", "model"
        )
    if request.webhook is not None:
        _check_webhook(state, request.webhook)
    init_image = decode_init_image(request.init_image) if request.init_image else None
    params = resolve_params(request, registry.models[model], init_image)
    # A job that names its model runs only where that model is loaded; one that
    # does not goes to the shared queue and runs on whichever worker is free.
    queue = model_queue(model) if request.model else DEFAULT_QUEUE
    job_id = uuid.uuid4().hex
    if idempotency_key is not None:
        earlier = idempotency.reserve(state.redis, owner, idempotency_key, request, job_id)
        if earlier is not None:
            return _replayed(state, earlier), True
    created_at = utcnow()
    record = JobRecord(
        id=job_id,
        created_at=created_at,
        priority=request.priority,
        deadline_at=(
            created_at + timedelta(seconds=request.deadline) if request.deadline else None
        ),
        model=model,
        queue=queue,
        params=params,
        webhook=request.webhook,
        webhook_events_filter=request.webhook_events_filter or ["completed"],
    )
    try:
        state.store.create(record, init_image.data if init_image else None)
        publish_job(state.celery, record.id, queue, request.priority)
    except Exception as exc:  # redis and kombu raise several types for a broker that is away
        log.error("could not enqueue job %s: %s", record.id, exc)
        _abandon(state, record.id)
        if idempotency_key is not None:
            with contextlib.suppress(Exception):
                idempotency.release(state.redis, owner, idempotency_key)
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
    return record, False


def _check_webhook(state: AppState, url: str) -> None:
    if not state.settings.webhook_secrets:
        raise InvalidRequest(
            "webhooks are not enabled on this server (it has no WEBHOOK_SECRET to sign them)",
            "webhook",
        )
    check_webhook_url(url, state.settings.webhook_allow_private_networks)


def _replayed(state: AppState, job_id: str) -> JobRecord:
    # The first request may still be writing its record: give it a moment.
    for _ in range(20):
        try:
            return state.store.get(job_id)
        except JobNotFound:
            time.sleep(0.05)
    return state.store.get(job_id)


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
    return to_public(record, state.store, state.storage, state.settings.public_base_url)
