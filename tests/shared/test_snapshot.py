"""A job and its view's extra reads in one script: record, queue position, webhook log."""

from __future__ import annotations

import fakeredis

from shared.jobs import JobStatus, WebhookAttempt, utcnow
from shared.snapshot import JobSnapshot, decode_snapshot, read_call
from shared.store import JobStore
from shared.webhooks import record_attempt
from tests.shared.conftest import TTL_S
from tests.shared.test_store import make_record


def read(client: fakeredis.FakeRedis, job_id: str) -> JobSnapshot | None:
    call = read_call(job_id, 600.0)
    return decode_snapshot(client.eval(call.lua.source, len(call.keys), *call.keys, *call.args))


def test_the_record_round_trips_with_its_queue_position(
    client: fakeredis.FakeRedis, store: JobStore
) -> None:
    first, second = make_record(webhook=None), make_record(webhook=None)
    store.create(first)
    store.create(second)
    snapshot = read(client, second.id)
    assert snapshot == JobSnapshot(record=second, queue_position=1, webhook_log=[])
    assert store.get(second.id) == snapshot.record


def test_a_job_that_is_not_queued_has_no_position(
    client: fakeredis.FakeRedis, store: JobStore
) -> None:
    record = make_record(webhook=None)
    store.create(record)
    store.transition(record.id, JobStatus.RUNNING, worker="w1")
    snapshot = read(client, record.id)
    assert snapshot is not None
    assert snapshot.record.status is JobStatus.RUNNING
    assert snapshot.queue_position is None


def test_a_job_with_a_webhook_comes_with_its_delivery_log(
    client: fakeredis.FakeRedis, store: JobStore
) -> None:
    record = make_record(webhook="https://example.com/hook")
    store.create(record)
    snapshot = read(client, record.id)
    assert snapshot is not None
    assert snapshot.webhook_log == []
    attempt = WebhookAttempt(
        event_id="e1", event="job.completed", attempt=1, at=utcnow(), outcome="delivered"
    )
    record_attempt(client, record.id, attempt, TTL_S)
    snapshot = read(client, record.id)
    assert snapshot is not None
    assert [WebhookAttempt.model_validate_json(raw) for raw in snapshot.webhook_log] == [attempt]


def test_an_unknown_job_is_none(client: fakeredis.FakeRedis) -> None:
    assert read(client, "nope") is None
