"""Turning a POST /jobs request into a stored, queued job."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import redis

from api import idempotency, ratelimit
from api.images import decode_image, decode_init_image
from api.params import resolve_params
from api.state import AppState
from shared.apikeys import ANONYMOUS
from shared.constants import DEFAULT_QUEUE, model_queue
from shared.errors import InvalidRequest, InvalidTransition, JobNotFound, ServiceUnavailable
from shared.jobs import (
    GenerationParams,
    JobCreate,
    JobErrorInfo,
    JobRecord,
    JobStatus,
    utcnow,
)
from shared.queue import publish_job
from shared.webhooks import check_webhook_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    record: JobRecord
    # A replay of an earlier request with the same Idempotency-Key: no new job.
    replayed: bool
    # Where a new job entered its queue (None for a replay).
    queue_position: int | None = None


def submit_job(
    state: AppState,
    request: JobCreate,
    idempotency_key: str | None = None,
    owner: str = ANONYMOUS,
) -> Submission:
    """Validate against the registry, store the job as queued, then publish it.

    Returns the job, whether it is a replay of an earlier request with the
    same Idempotency-Key, and a new job's queue position. The record is
    written before the message: a worker never receives a job it cannot
    read. If publishing fails the record is marked failed and the client gets
    a 503, never a 202 for a job that will not run. The job belongs to
    `owner`; a new one (not a replay) counts against the owner's rate limits,
    RateLimited (429) when over one.
    """
    registry = state.registry
    model = request.model or registry.runtime.primary_model
    if model not in registry.models:
        raise InvalidRequest(
            f"unknown model {model!r}; available: {', '.join(sorted(registry.models))}", "model"
        )
    if request.webhook is not None:
        _check_webhook(state, request.webhook)
    # An empty init_image is a malformed image, not "no image".
    init_image = decode_init_image(request.init_image) if request.init_image is not None else None
    mask = (
        decode_image(request.mask_image, "mask_image") if request.mask_image is not None else None
    )
    params = resolve_params(request, registry.models[model], init_image, mask)
    # A job that names its model runs only where that model is loaded; one that
    # does not goes to the shared queue and runs on whichever worker is free.
    queue = model_queue(model) if request.model else DEFAULT_QUEUE
    job_id = uuid.uuid4().hex
    if idempotency_key is not None:
        earlier = idempotency.reserve(state.redis, owner, idempotency_key, request, job_id)
        if earlier is not None:
            return Submission(_replayed(state, earlier), replayed=True)
    try:
        # After the idempotency check: a replay is no new job and counts against nothing.
        ratelimit.admit(state.redis, state.settings, owner, job_id)
    except Exception:
        _release_key(state, owner, idempotency_key)  # a later retry with it may succeed
        raise
    record = _new_record(job_id, request, model, queue, params, owner)
    try:
        position = state.store.create(
            record, init_image.data if init_image else None, mask.data if mask else None
        )
        publish_job(state.celery, record.id, queue, request.priority)
    except Exception as exc:  # redis and kombu raise several types for a broker that is away
        log.error("could not enqueue job %s: %s", record.id, exc)
        _abandon(state, record.id)
        _release_key(state, owner, idempotency_key)
        _refund(state, owner, record.id)
        raise ServiceUnavailable("the job queue is unreachable; the job was not accepted") from exc
    log.info(
        "job %s queued on %s for %s (%s, %dx%d, %d steps)",
        record.id,
        queue,
        owner,
        params.mode,
        params.width,
        params.height,
        params.steps,
    )
    state.metrics.submitted.labels(record.model, record.priority).inc()
    return Submission(record, replayed=False, queue_position=position)


def _new_record(
    job_id: str,
    request: JobCreate,
    model: str,
    queue: str,
    params: GenerationParams,
    owner: str,
) -> JobRecord:
    created_at = utcnow()
    return JobRecord(
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
        owner=owner,
    )


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
    except (redis.RedisError, JobNotFound, InvalidTransition):
        # Redis is likely away too (or the record was never written): it then expires unseen.
        log.warning("could not mark unqueued job %s as failed", job_id)


def _release_key(state: AppState, owner: str, idempotency_key: str | None) -> None:
    """Forget the Idempotency-Key of a request that made no job, so a retry can."""
    if idempotency_key is None:
        return
    try:
        idempotency.release(state.redis, owner, idempotency_key)
    except redis.RedisError as exc:  # Redis is likely away; the key then expires in a day
        log.warning("could not release an idempotency key of %s: %s", owner, exc)


def _refund(state: AppState, owner: str, job_id: str) -> None:
    """Uncount a job that was not queued from its caller's rate limits."""
    try:
        ratelimit.refund(state.redis, owner, job_id)
    except redis.RedisError as exc:  # the slot frees itself once the record is gone
        log.warning("could not refund job %s to %s's rate limits: %s", job_id, owner, exc)
