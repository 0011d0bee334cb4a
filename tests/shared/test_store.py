"""JobStore on fakeredis: records round-trip, statuses move only along the status machine."""

from __future__ import annotations

import uuid
from datetime import timedelta

import fakeredis
import pytest

from shared.errors import InvalidTransition, JobNotFound
from shared.jobs import (
    GenerationParams,
    JobErrorInfo,
    JobRecord,
    JobStatus,
    StoredImage,
    utcnow,
)
from shared.store import JobStore, input_key, job_key
from tests.shared.conftest import TTL_S

TERMINAL = [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED]


def make_record(**fields: object) -> JobRecord:
    values: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "created_at": utcnow(),
        "model": "tiny-sd",
        "queue": "darkroom.model.tiny-sd",
        "params": GenerationParams(
            prompt="a red fox",
            negative_prompt="blurry",
            width=64,
            height=64,
            steps=2,
            guidance_scale=7.5,
            seed=42,
            num_images=1,
        ),
        "webhook": "https://example.com/hook",
    }
    values.update(fields)
    return JobRecord.model_validate(values)


def test_create_get_roundtrip(store: JobStore) -> None:
    record = make_record()
    store.create(record)
    assert store.get(record.id) == record


def test_roundtrip_keeps_nested_values(store: JobStore) -> None:
    record = make_record(
        status=JobStatus.SUCCEEDED,
        images=[StoredImage(key="a/b.png", width=64, height=64, seed=42)],
        error=JobErrorInfo(type="x", message="y"),
        webhook_events_filter=["start", "completed"],
        attempts=2,
    )
    store.create(record)
    loaded = store.get(record.id)
    assert loaded == record
    assert loaded.images[0].key == "a/b.png"
    assert loaded.params.seed == 42
    assert loaded.created_at == record.created_at


def test_get_unknown_raises_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFound) as info:
        store.get("does-not-exist")
    assert info.value.job_id == "does-not-exist"
    assert info.value.type == "not_found"


def test_init_image_stored_apart(store: JobStore, client: fakeredis.FakeRedis) -> None:
    record = make_record()
    store.create(record, b"\x89PNG image bytes")
    assert store.get_input(record.id) == b"\x89PNG image bytes"
    assert client.hget(job_key(record.id), "init_image") is None
    assert store.get_input("other") is None


def test_ttl_set_on_record_and_input(store: JobStore, client: fakeredis.FakeRedis) -> None:
    record = make_record()
    store.create(record, b"img")
    assert 0 < client.ttl(job_key(record.id)) <= TTL_S
    assert 0 < client.ttl(input_key(record.id)) <= TTL_S


def test_no_input_key_without_init_image(store: JobStore, client: fakeredis.FakeRedis) -> None:
    record = make_record()
    store.create(record)
    assert not client.exists(input_key(record.id))


def test_delete_removes_record_and_input(store: JobStore, client: fakeredis.FakeRedis) -> None:
    record = make_record()
    store.create(record, b"img")
    store.delete(record.id)
    assert not client.exists(job_key(record.id), input_key(record.id))
    with pytest.raises(JobNotFound):
        store.get(record.id)


def test_queued_to_running_sets_started_at(store: JobStore) -> None:
    record = make_record()
    store.create(record)
    running = store.transition(record.id, JobStatus.RUNNING, worker="w1", attempts=1)
    assert running.status is JobStatus.RUNNING
    assert running.started_at is not None
    assert running.started_at >= record.created_at
    assert running.finished_at is None
    stored = store.get(record.id)
    assert stored.status is JobStatus.RUNNING
    assert stored.worker == "w1"
    assert stored.attempts == 1
    assert stored.started_at == running.started_at


def test_running_to_succeeded_sets_finished_at(store: JobStore) -> None:
    record = make_record()
    store.create(record)
    store.transition(record.id, JobStatus.RUNNING)
    image = StoredImage(key=f"{record.id}/0.png", width=64, height=64, seed=42)
    done = store.transition(
        record.id, JobStatus.SUCCEEDED, images=[image], model_used="tiny-sd", progress=1.0
    )
    stored = store.get(record.id)
    assert stored == done
    assert stored.status is JobStatus.SUCCEEDED
    assert stored.finished_at is not None
    assert stored.started_at is not None
    assert stored.finished_at >= stored.started_at
    assert stored.images == [image]
    assert stored.model_used == "tiny-sd"
    assert stored.progress == 1.0


@pytest.mark.parametrize("target", [JobStatus.FAILED, JobStatus.CANCELED])
def test_queued_to_terminal_sets_finished_at_only(store: JobStore, target: JobStatus) -> None:
    record = make_record()
    store.create(record)
    store.transition(record.id, target)
    stored = store.get(record.id)
    assert stored.status is target
    assert stored.finished_at is not None
    assert stored.started_at is None


def test_running_back_to_queued(store: JobStore) -> None:
    record = make_record()
    store.create(record)
    store.transition(record.id, JobStatus.RUNNING)
    requeued = store.transition(record.id, JobStatus.QUEUED)
    assert requeued.status is JobStatus.QUEUED
    assert store.get(record.id).status is JobStatus.QUEUED


def test_queued_cannot_succeed_directly(store: JobStore) -> None:
    record = make_record()
    store.create(record)
    with pytest.raises(InvalidTransition):
        store.transition(record.id, JobStatus.SUCCEEDED)
    assert store.get(record.id).status is JobStatus.QUEUED


@pytest.mark.parametrize("terminal", TERMINAL)
@pytest.mark.parametrize("target", list(JobStatus))
def test_terminal_status_is_final(store: JobStore, terminal: JobStatus, target: JobStatus) -> None:
    record = make_record()
    store.create(record)
    if terminal is JobStatus.SUCCEEDED:
        store.transition(record.id, JobStatus.RUNNING)
    store.transition(record.id, terminal)
    before = store.get(record.id)
    with pytest.raises(InvalidTransition) as info:
        store.transition(record.id, target, progress=0.5)
    assert info.value.type == "conflict"
    assert store.get(record.id) == before  # nothing was written


def test_transition_of_unknown_job(store: JobStore, client: fakeredis.FakeRedis) -> None:
    with pytest.raises(JobNotFound):
        store.transition("ghost", JobStatus.RUNNING)
    assert not client.exists(job_key("ghost"))


def test_set_progress(store: JobStore) -> None:
    record = make_record()
    store.create(record)
    store.transition(record.id, JobStatus.RUNNING)
    store.set_progress(record.id, 0.5)
    assert store.get(record.id).progress == 0.5


def test_set_progress_on_missing_key_creates_nothing(
    store: JobStore, client: fakeredis.FakeRedis
) -> None:
    store.set_progress("expired-job", 0.25)
    assert not client.exists(job_key("expired-job"))
    assert client.keys("*") == []


def test_update_sets_several_fields(store: JobStore) -> None:
    record = make_record()
    store.create(record)
    params = record.params.model_copy(update={"optimized_prompt": "a red fox, detailed"})
    store.update(record.id, params=params, progress=0.75, worker="w2")
    stored = store.get(record.id)
    assert stored.params.optimized_prompt == "a red fox, detailed"
    assert stored.params.effective_prompt == "a red fox, detailed"
    assert stored.progress == 0.75
    assert stored.worker == "w2"
    assert stored.status is JobStatus.QUEUED  # no status change


def test_update_on_missing_key_creates_nothing(
    store: JobStore, client: fakeredis.FakeRedis
) -> None:
    store.update("expired-job", progress=0.5, worker="w1")
    assert client.keys("*") == []


def _created(store: JobStore, count: int, **fields: object) -> list[JobRecord]:
    """`count` new jobs, each a millisecond after the one before (oldest first)."""
    start = utcnow()
    records = [
        make_record(created_at=start + timedelta(milliseconds=i), **fields) for i in range(count)
    ]
    for record in records:
        store.create(record)
    return records


def test_list_pages_newest_first_with_a_cursor(store: JobStore) -> None:
    records = _created(store, 5, owner="alice")
    _created(store, 2, owner="bob")
    first, cursor = store.list(3, owner="alice")
    assert [r.id for r in first] == [r.id for r in reversed(records[2:])]
    rest, end = store.list(3, cursor=cursor, owner="alice")
    assert [r.id for r in rest] == [records[1].id, records[0].id]
    assert end is None


def test_list_filters_by_status_and_goes_on_past_a_short_page(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _created(store, 6)
    store.transition(records[0].id, JobStatus.CANCELED)
    for record in records[2:]:
        store.transition(record.id, JobStatus.CANCELED)
    # One call looks at 2 entries at most: the canceled jobs give short pages.
    monkeypatch.setattr("shared.store.LIST_SCAN_MAX", 2)
    found, cursor = [], None
    for _ in range(10):
        page, cursor = store.list(5, cursor=cursor, status=JobStatus.QUEUED)
        found += page
        if cursor is None:
            break
    assert [r.id for r in found] == [records[1].id]
    assert cursor is None
