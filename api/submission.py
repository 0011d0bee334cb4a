"""Turning a POST /jobs request into a stored, queued job."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool

from api import enqueue, idempotency, ratelimit
from api.images import decode_image, decode_init_image
from api.params import resolve_params
from api.reads import fetch_record
from api.state import AppState
from shared.apikeys import ANONYMOUS
from shared.constants import DEFAULT_QUEUE, model_queue
from shared.errors import (
    Forbidden,
    InvalidRequest,
    JobNotFound,
    NotReplicated,
    ServiceUnavailable,
)
from shared.jobs import GenerationParams, JobCreate, JobRecord, Priority, utcnow
from shared.keypolicy import KeyPolicy
from shared.scheduler import job_cost
from shared.webhooks import check_webhook_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    record: JobRecord
    # A replay of an earlier request with the same Idempotency-Key: no new job.
    replayed: bool
    # Where a new job entered its queue (None for a replay).
    queue_position: int | None = None


@dataclass(frozen=True)
class NewJob:
    """A request resolved into a job, not yet stored."""

    record: JobRecord
    # The decoded init image and mask, stored beside the record.
    init_image: bytes | None
    mask: bytes | None


async def submit(
    state: AppState,
    request: JobCreate,
    idempotency_key: str | None = None,
    owner: str = ANONYMOUS,
) -> Submission:
    """Validate against the registry, then store, count and queue the job in one step.

    Returns the job, whether it is a replay of an earlier request with the
    same Idempotency-Key, and a new job's queue position. The record and the
    message are written together (api.enqueue): a worker never receives a job
    it cannot read, and a client never gets a 202 for a job that will not run
    (503 when Redis cannot be reached; nothing was stored). The job belongs to
    `owner`; a new one (not a replay) counts against the owner's rate limits,
    RateLimited (429) when over one.
    """
    if request.model is not None:
        # A named model no live worker may load: refused, not queued for ever.
        (await state.serving.get()).check(request.model, state.registry)
    blocking = (request.webhook, request.init_image, request.mask_image, request.loras)
    if any(v is not None for v in blocking):
        # Resolving the webhook's host, decoding images and reading adapters (their
        # records, a registry file's hash) would block the event loop.
        job = await run_in_threadpool(prepare, state, request, owner)
    else:
        job = prepare(state, request, owner)
    claim = None
    if idempotency_key is not None:
        key = idempotency.redis_key(owner, idempotency_key)
        claim = (key, idempotency.entry(request, job.record.id))
    policy = state.keys.policy(owner)
    limits = ratelimit.Limits.of(state.settings, policy)
    verdict, value = await _enqueue(state, job, claim, limits, policy)
    if verdict == enqueue.REPLAY:
        earlier = await _replayed(state, idempotency.earlier_job(value, request))
        return Submission(earlier, replayed=True)
    ratelimit.check(verdict, value, limits)
    _note_queued(state, job.record)
    return Submission(job.record, replayed=False, queue_position=int(value))


def prepare(state: AppState, request: JobCreate, owner: str) -> NewJob:
    """Check `request` against the registry and resolve it into a new job's record.

    Blocks (DNS, image decoding) only for a request with a webhook or images.
    """
    registry = state.registry
    priority = _allowed_priority(state, request, owner)
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
    params = resolve_params(request, registry.models[model], init_image, mask, model)
    params.loras = state.loras.resolve(owner, request.loras or [], model, registry.models[model])
    # A job that names its model runs only where that model is loaded; one that
    # does not goes to the shared queue and runs on whichever worker is free (unless
    # it asks for adapters: they were checked against this model's type).
    queue = model_queue(model) if request.model or params.loras else DEFAULT_QUEUE
    record = _new_record(uuid.uuid4().hex, request, model, queue, params, owner, priority)
    record.cost = _cost(params, registry.models[model].params.cost_factor)
    record.adapters = ",".join(lora.adapter_id for lora in params.loras)
    return NewJob(record, init_image.data if init_image else None, mask.data if mask else None)


async def _enqueue(
    state: AppState,
    job: NewJob,
    claim: tuple[str, str] | None,
    limits: ratelimit.Limits,
    policy: KeyPolicy,
) -> tuple[int, Any]:
    """Run the submission script; once more after pruning a full active set."""
    record = job.record
    call = enqueue.submit_call(
        record, job.init_image, job.mask, state.settings, claim, limits, policy
    )
    replica_ack = state.store.replica_ack
    try:
        verdict, value = await enqueue.run(state.submit_mux, call, replica_ack, state.master_check)
        if verdict == ratelimit.TOO_MANY_ACTIVE:
            # Rare: the set looks full. Prune what finished (a thread: sync Redis), retry.
            pruned: int = await run_in_threadpool(
                ratelimit.prune_finished, state.redis, record.owner
            )
            if pruned:
                verdict, value = await enqueue.run(
                    state.submit_mux, call, replica_ack, state.master_check
                )
    except NotReplicated as exc:
        log.error("job %s not accepted: %s", record.id, exc)
        raise
    except redis.RedisError as exc:
        log.error("could not enqueue job %s: %s", record.id, exc)
        raise ServiceUnavailable("the job queue is unreachable; the job was not accepted") from exc
    return verdict, value


def _note_queued(state: AppState, record: JobRecord) -> None:
    params = record.params
    log.info(
        "job %s queued on %s for %s (%s, %dx%d, %d steps)",
        record.id,
        record.queue,
        record.owner,
        params.mode,
        params.width,
        params.height,
        params.steps,
    )
    state.metrics.submitted.labels(record.model, record.priority).inc()


def _new_record(
    job_id: str,
    request: JobCreate,
    model: str,
    queue: str,
    params: GenerationParams,
    owner: str,
    priority: Priority,
) -> JobRecord:
    created_at = utcnow()
    return JobRecord(
        id=job_id,
        created_at=created_at,
        priority=priority,
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


def _cost(params: GenerationParams, factor: float) -> float:
    """The job's estimated cost (docs/scheduling.md): image-to-image runs only its
    strength's share of the steps (at least one)."""
    steps = params.steps
    if params.strength is not None:
        steps = max(1, int(steps * params.strength))
    return job_cost(steps, params.width, params.height, params.num_images, factor)


def _allowed_priority(state: AppState, request: JobCreate, owner: str) -> Priority:
    """The job's priority: the one asked for, if the key may use it (403 otherwise),
    else the key's default (API_KEYS_FILE grants priorities per key)."""
    policy = state.keys.policy(owner)
    if "priority" not in request.model_fields_set:
        return policy.default_priority()
    if request.priority not in policy.priorities:
        raise Forbidden(
            f"priority {request.priority!r} is not open to this API key; it may use "
            f"{', '.join(policy.priorities)} (GET /me)",
            "priority",
        )
    return request.priority


def _check_webhook(state: AppState, url: str) -> None:
    if not state.settings.webhook_secrets:
        raise InvalidRequest(
            "webhooks are not enabled on this server (it has no WEBHOOK_SECRET to sign them)",
            "webhook",
        )
    check_webhook_url(url, state.settings.webhook_allow_private_networks)


async def _replayed(state: AppState, job_id: str) -> JobRecord:
    # Stored in the same step as the key: only an expired record is missing.
    record = await fetch_record(state, job_id)
    if record is None:
        raise JobNotFound(job_id)
    return record
