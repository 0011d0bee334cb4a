"""The runner through a storage outage: a generated job stays running while its images
wait in the spool, ends canceled if canceled meanwhile, and a full spool turns new
jobs away (back to the head of their queue, still queued) until it drains."""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from shared.cancel import cancels_requested, request_cancel
from shared.constants import RUNNING_KEY
from shared.jobs import JobRecord, JobStatus, utcnow
from shared.queue import job_message
from shared.storage import LocalStorage
from shared.store import JobStore
from tests.support.polling import wait_until
from tests.worker.test_inference import params, tiny  # noqa: F401  (tiny: a fixture)
from worker.backpressure import requeue_at_head
from worker.loader import LoadedModel
from worker.runner import JobRunner
from worker.spool import Spool
from worker.storing import RetryPolicy, Storer

QUEUE = "darkroom.model.tiny-sd"
LIST = job_message("x", QUEUE).list_name  # the broker list of normal-priority jobs
FAST = RetryPolicy(window_s=60, max_delay_s=0.05, first_delay_s=0.01)


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(), ttl_s=600)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[LocalStorage]:
    """Local storage, away: a plain file stands where its directory should be."""
    local = LocalStorage(tmp_path / "images", "http://x")
    local.root.write_bytes(b"storage is away")
    yield local
    if local.root.is_file():
        local.root.unlink()


def _runner(model: LoadedModel, store: JobStore, storage: LocalStorage, spool: Spool) -> JobRunner:
    storer = Storer(storage, spool, FAST, functools.partial(cancels_requested, store.redis))
    return JobRunner(store, storage, model, "w1@test", storer=storer)


def _job(store: JobStore) -> str:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    record = JobRecord(
        id=job_id, created_at=utcnow(), model="tiny-sd", queue=QUEUE, params=params(seed=1)
    )
    store.create(record)
    return job_id


def _status(store: JobStore, job_id: str) -> JobStatus:
    return store.get(job_id).status


def test_a_job_whose_images_wait_for_storage_stays_running_then_succeeds(
    tiny: LoadedModel,  # noqa: F811
    store: JobStore,
    storage: LocalStorage,
    tmp_path: Path,
) -> None:
    runner = _runner(tiny, store, storage, Spool(tmp_path / "spool", 1024**2))
    job_id = _job(store)
    assert runner.run(job_id) is JobStatus.RUNNING
    # Claimed by this worker all along: were it to die now, the reaper re-runs it.
    assert _status(store, job_id) is JobStatus.RUNNING
    assert store.redis.hget(RUNNING_KEY, job_id) == b"w1@test"

    storage.root.unlink()  # storage is back
    wait_until(lambda: _status(store, job_id) is JobStatus.SUCCEEDED, what="stored")
    assert store.get(job_id).attempts == 1
    assert storage.path(f"jobs/{job_id}/0.png").is_file()
    assert store.redis.hget(RUNNING_KEY, job_id) is None


def test_a_cancel_while_the_images_wait_ends_the_job_canceled(
    tiny: LoadedModel,  # noqa: F811
    store: JobStore,
    storage: LocalStorage,
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool", 1024**2)
    runner = _runner(tiny, store, storage, spool)
    job_id = _job(store)
    assert runner.run(job_id) is JobStatus.RUNNING
    request_cancel(store.redis, job_id, 600)  # what POST /jobs/{id}/cancel does
    wait_until(lambda: _status(store, job_id) is JobStatus.CANCELED, what="canceled")
    assert spool.used_bytes == 0


def test_a_full_spool_turns_the_next_job_away_to_the_head_of_its_queue(
    tiny: LoadedModel,  # noqa: F811
    store: JobStore,
    storage: LocalStorage,
    tmp_path: Path,
) -> None:
    runner = _runner(tiny, store, storage, Spool(tmp_path / "spool", max_bytes=1))
    first, second = _job(store), _job(store)
    assert runner.run(first) is JobStatus.RUNNING  # its images fill the spool
    store.redis.lpush(LIST, job_message("a-later-job", QUEUE).payload)

    returned: list[object] = []
    task = threading.Thread(target=lambda: returned.append(runner.run(second)), daemon=True)
    task.start()
    # The second job's message is the next one any worker takes; the job itself
    # was never claimed, and this worker's task waits (holding no job) for room.
    wait_until(lambda: store.redis.llen(LIST) == 2, what="the job given back")
    head = json.loads(store.redis.lindex(LIST, -1))  # type: ignore[arg-type]
    assert head["headers"]["argsrepr"] == repr([second])
    assert _status(store, second) is JobStatus.QUEUED
    assert task.is_alive()

    storage.root.unlink()  # storage is back: the spool drains, the task returns
    task.join(timeout=60)
    assert returned == [None]
    wait_until(lambda: _status(store, first) is JobStatus.SUCCEEDED, what="first stored")
    assert _status(store, second) is JobStatus.QUEUED


def test_a_stopping_worker_stops_waiting_for_room(
    tiny: LoadedModel,  # noqa: F811
    store: JobStore,
    storage: LocalStorage,
    tmp_path: Path,
) -> None:
    runner = _runner(tiny, store, storage, Spool(tmp_path / "spool", max_bytes=1))
    runner.run(_job(store))
    second = _job(store)
    threading.Timer(0.2, runner.hand_back).start()  # a warm shutdown begins
    assert runner.run(second) is None
    assert _status(store, second) is JobStatus.QUEUED
    storage.root.unlink()
    runner.close()  # waits (a bounded time) for the first job's images
    assert _status(store, second) is JobStatus.QUEUED


def test_requeue_at_head_puts_the_message_where_consumers_pop_next() -> None:
    client = fakeredis.FakeRedis()
    record = JobRecord(
        id="turned-away", created_at=utcnow(), model="m", queue=QUEUE, params=params()
    )
    for job_id in ("older", "newer"):  # as the API pushes them: LPUSH
        client.lpush(LIST, job_message(job_id, QUEUE).payload)
    requeue_at_head(client, record)
    popped = [json.loads(client.rpop(LIST))["headers"]["argsrepr"] for _ in range(3)]  # type: ignore[arg-type]
    assert popped == [repr(["turned-away"]), repr(["older"]), repr(["newer"])]
