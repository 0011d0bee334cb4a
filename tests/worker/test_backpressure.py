"""The runner through a storage outage: a generated job stays running while its images
wait in the spool, ends canceled if canceled meanwhile, and a full spool makes the
worker take no new job (its wake-up token back at the head of the queue, the job
still queued) until it drains."""

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
from shared.queue import token_message
from shared.storage import LocalStorage
from shared.store import JobStore
from tests.support.polling import wait_until
from tests.support.runners import make_runner
from tests.worker.test_inference import params, tiny  # noqa: F401  (tiny: a fixture)
from worker.backpressure import token_at_head
from worker.loader import LoadedModel
from worker.runner import JobRunner
from worker.spool import Spool
from worker.storing import RetryPolicy, Storer

QUEUE = "darkroom.model.tiny-sd"
LIST = token_message(QUEUE).list_name  # the queue's list of wake-up tokens
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
    return make_runner(store, storage, model, storer=storer)


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
    assert runner.run_jobs() == 1
    assert _status(store, job_id) is not JobStatus.QUEUED
    wait_until(lambda: runner.storer is not None and runner.storer.waiting, what="spooled")
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
    assert runner.run_jobs() == 1
    request_cancel(store.redis, job_id, 600)  # what POST /jobs/{id}/cancel does
    wait_until(lambda: _status(store, job_id) is JobStatus.CANCELED, what="canceled")
    assert spool.used_bytes == 0


def test_a_full_spool_gives_the_token_back_and_takes_no_new_job(
    tiny: LoadedModel,  # noqa: F811
    store: JobStore,
    storage: LocalStorage,
    tmp_path: Path,
) -> None:
    runner = _runner(tiny, store, storage, Spool(tmp_path / "spool", max_bytes=1))
    first = _job(store)
    assert runner.run_jobs() == 1  # its images fill the spool
    wait_until(lambda: runner.storer is not None and runner.storer.full, what="spool full")
    second = _job(store)
    store.redis.lpush(LIST, token_message(QUEUE, "a-later-job").payload)

    returned: list[int] = []
    # An idle worker handed the second job's token (kombu popped it from the list).
    task = threading.Thread(
        target=lambda: returned.append(runner.run_jobs(QUEUE, second)), daemon=True
    )
    task.start()
    # The token is the next one any worker takes; the job was never reserved nor
    # claimed, and this worker's task waits (holding no job) for room.
    wait_until(lambda: store.redis.llen(LIST) == 2, what="the token given back")
    head = json.loads(store.redis.lindex(LIST, -1))  # type: ignore[arg-type]
    assert head["headers"]["argsrepr"] == repr([second])
    assert _status(store, second) is JobStatus.QUEUED
    assert store.queue_position(store.get(second)) == 0
    assert task.is_alive()

    storage.root.unlink()  # storage is back: the spool drains, the task returns
    task.join(timeout=60)
    assert returned == [0]
    wait_until(lambda: _status(store, first) is JobStatus.SUCCEEDED, what="first stored")
    assert _status(store, second) is JobStatus.QUEUED


def test_a_stopping_worker_stops_waiting_for_room(
    tiny: LoadedModel,  # noqa: F811
    store: JobStore,
    storage: LocalStorage,
    tmp_path: Path,
) -> None:
    runner = _runner(tiny, store, storage, Spool(tmp_path / "spool", max_bytes=1))
    _job(store)
    runner.run_jobs()
    wait_until(lambda: runner.storer is not None and runner.storer.full, what="spool full")
    second = _job(store)
    threading.Timer(0.2, runner.hand_back).start()  # a warm shutdown begins
    assert runner.run_jobs(QUEUE) == 0
    assert _status(store, second) is JobStatus.QUEUED
    storage.root.unlink()
    runner.close()  # waits (a bounded time) for the first job's images
    assert _status(store, second) is JobStatus.QUEUED


def test_a_token_at_the_head_is_the_one_consumers_pop_next() -> None:
    client = fakeredis.FakeRedis()
    for job_id in ("older", "newer"):  # as the API pushes them: LPUSH
        client.lpush(LIST, token_message(QUEUE, job_id).payload)
    token_at_head(client, QUEUE, "turned-away")
    popped = [json.loads(client.rpop(LIST))["headers"]["argsrepr"] for _ in range(3)]  # type: ignore[arg-type]
    assert popped == [repr(["turned-away"]), repr(["older"]), repr(["newer"])]
