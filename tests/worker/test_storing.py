"""Storing images through an outage: stored at once, or spooled, retried with capped,
jittered backoff, and given up on, dropped when canceled, left behind at shutdown.

The storage is a real local directory; the outage is real too: a plain file
where its directory should be, so every write fails until the file is removed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from shared.errors import StorageError
from shared.jobs import JobStatus
from shared.storage import LocalStorage
from tests.support.polling import wait_until
from worker.spool import Spool, spool_dir
from worker.stopping import JobStopped, start_hard_limit
from worker.storing import Finish, RetryPolicy, Storer, Upload

FAST = RetryPolicy(window_s=60, max_delay_s=0.05, first_delay_s=0.01)


class Outcomes:
    """What each job's `finish` was told, in order (the part worker.outcomes plays)."""

    def __init__(self) -> None:
        self.told: dict[str, Exception | None] = {}
        self.order: list[str] = []
        self.lock = threading.Lock()

    def finish_for(self, job_id: str) -> Finish:
        def finish(outcome: Exception | None) -> JobStatus:
            with self.lock:
                self.told[job_id] = outcome
                self.order.append(job_id)
            return JobStatus.SUCCEEDED if outcome is None else JobStatus.FAILED

        return finish


class Outage:
    """Takes the storage directory away (a file in its place) and gives it back."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def start(self) -> None:
        self.root.write_bytes(b"not a directory")

    def end(self) -> None:
        self.root.unlink()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "images", "http://x")


@pytest.fixture
def outage(storage: LocalStorage) -> Iterator[Outage]:
    down = Outage(storage.root)
    down.start()
    yield down
    if storage.root.is_file():
        down.end()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", max_bytes=1024**2)


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


def _uploads(job_id: str, count: int = 2) -> list[Upload]:
    return [Upload(f"jobs/{job_id}/{i}.png", f"{job_id} image {i}".encode()) for i in range(count)]


def _store(storer: Storer, outcomes: Outcomes, job_id: str) -> JobStatus:
    return storer.store(job_id, _uploads(job_id), outcomes.finish_for(job_id))


def test_images_are_stored_at_once_when_storage_answers(
    storage: LocalStorage, spool: Spool, outcomes: Outcomes
) -> None:
    storer = Storer(storage, spool, FAST)
    assert _store(storer, outcomes, "job-1") is JobStatus.SUCCEEDED
    assert outcomes.told == {"job-1": None}
    assert storage.path("jobs/job-1/1.png").read_bytes() == b"job-1 image 1"
    assert not spool.root.exists()  # nothing was spooled


def test_images_wait_in_the_spool_while_storage_is_away_then_are_stored_in_order(
    storage: LocalStorage, spool: Spool, outcomes: Outcomes, outage: Outage
) -> None:
    storer = Storer(storage, spool, FAST)
    assert _store(storer, outcomes, "job-1") is JobStatus.RUNNING
    assert _store(storer, outcomes, "job-2") is JobStatus.RUNNING
    assert storer.waiting == ["job-1", "job-2"]
    assert spool.used_bytes == sum(len(u.data) for j in ("job-1", "job-2") for u in _uploads(j))
    assert len(list(spool.root.iterdir())) == 4
    # Retried while it lasts, with nothing told to the jobs.
    retries = _retries()
    wait_until(lambda: _retries() >= retries + 2, what="retries")
    assert outcomes.told == {}

    outage.end()
    wait_until(lambda: len(outcomes.order) == 2, what="both jobs stored")
    assert outcomes.order == ["job-1", "job-2"]
    assert outcomes.told == {"job-1": None, "job-2": None}
    for job_id in ("job-1", "job-2"):
        assert storage.path(f"jobs/{job_id}/0.png").read_bytes() == f"{job_id} image 0".encode()
    assert spool.used_bytes == 0
    assert list(spool.root.iterdir()) == []
    assert storer.close(wait_s=0) == []


def _retries() -> float:
    return REGISTRY.get_sample_value("darkroom_storage_retries_total") or 0.0


def test_storing_gives_up_after_the_retry_window_with_the_last_error(
    storage: LocalStorage, spool: Spool, outcomes: Outcomes, outage: Outage
) -> None:
    storer = Storer(storage, spool, RetryPolicy(window_s=0.3, max_delay_s=0.05))
    assert _store(storer, outcomes, "job-1") is JobStatus.RUNNING
    wait_until(lambda: outcomes.told, what="the job's end")
    error = outcomes.told["job-1"]
    assert isinstance(error, StorageError)
    assert error.type == "storage_error"
    assert str(error).startswith("storage was unreachable for ")
    assert "last error: writing jobs/job-1/0.png under" in str(error)
    assert isinstance(error.__cause__, StorageError)  # the cause is kept
    assert spool.used_bytes == 0
    assert storer.waiting == []


def test_a_retry_window_of_zero_fails_the_job_at_once(
    storage: LocalStorage, spool: Spool, outcomes: Outcomes, outage: Outage
) -> None:
    storer = Storer(storage, spool, RetryPolicy(window_s=0))
    assert _store(storer, outcomes, "job-1") is JobStatus.FAILED
    assert isinstance(outcomes.told["job-1"], StorageError)
    assert not spool.root.exists()


def test_a_job_canceled_while_its_images_wait_drops_them(
    storage: LocalStorage, spool: Spool, outcomes: Outcomes, outage: Outage
) -> None:
    canceled: set[str] = set()
    storer = Storer(storage, spool, FAST, canceled=lambda ids: canceled & set(ids))
    _store(storer, outcomes, "job-1")
    _store(storer, outcomes, "job-2")
    canceled.add("job-1")
    wait_until(lambda: "job-1" in outcomes.told, what="the cancel seen")
    assert isinstance(outcomes.told["job-1"], JobStopped)
    assert storer.waiting == ["job-2"]
    spooled = sorted(p.name for p in spool.root.iterdir())
    assert spooled == ["jobs%2Fjob-2%2F0.png", "jobs%2Fjob-2%2F1.png"]

    outage.end()
    wait_until(lambda: "job-2" in outcomes.told, what="job-2 stored")
    assert outcomes.told["job-2"] is None
    assert not storage.path("jobs/job-1/0.png").exists()


def test_close_waits_a_bounded_time_then_leaves_the_jobs_running_for_the_reaper(
    storage: LocalStorage, spool: Spool, outcomes: Outcomes, outage: Outage
) -> None:
    storer = Storer(storage, spool, FAST)
    _store(storer, outcomes, "job-1")
    assert storer.close(wait_s=0.2) == ["job-1"]
    # Nothing recorded: the job is still running under this worker, whose record
    # goes next; the reaper then runs it again elsewhere. The spool was a buffer.
    assert outcomes.told == {}
    assert not spool.root.exists()
    assert spool.used_bytes == 0


def test_close_returns_once_the_waiting_images_are_stored(
    storage: LocalStorage, spool: Spool, outcomes: Outcomes, outage: Outage
) -> None:
    storer = Storer(storage, spool, FAST)
    _store(storer, outcomes, "job-1")
    threading.Timer(0.2, outage.end).start()
    assert storer.close(wait_s=60) == []
    assert outcomes.told == {"job-1": None}


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(window_s=300, max_delay_s=4, first_delay_s=0.5)
    for failures, ceiling in [(1, 0.5), (2, 1), (3, 2), (4, 4), (5, 4), (60, 4)]:
        delays = {policy.delay(failures) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, delays)
        assert len(delays) > 1  # jittered: workers do not retry in step


def test_the_spool_is_full_at_its_budget_and_has_room_once_images_leave(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10)
    first = spool.write("jobs/a/0.png", b"12345", "image/png")
    assert not spool.full
    spool.write("jobs/a/1.png", b"67890", "image/png")
    assert spool.full
    assert not spool.wait_for_room(0.01)
    threading.Timer(0.1, spool.remove, (first,)).start()
    assert spool.wait_for_room(30)
    assert spool.used_bytes == 5


def test_a_budget_of_zero_is_full_while_any_image_waits(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=0)
    assert not spool.full
    image = spool.write("jobs/a/0.png", b"1", "image/png")
    assert spool.full
    spool.remove(image)
    assert not spool.full


def test_each_worker_spools_in_a_directory_of_its_own(tmp_path: Path) -> None:
    one, two = spool_dir(tmp_path, "darkroom-1-ab@host"), spool_dir(tmp_path, "gpu/0@host")
    assert one == tmp_path / "darkroom-1-ab@host"
    assert two.parent == tmp_path  # a slash in a name never leaves the spool root
    assert spool_dir(None, "w@h").name == "w@h"


def test_the_hard_limit_spares_a_job_whose_generation_is_over() -> None:
    # Its pipeline call returned: however long storing takes, the worker lives on
    # (the limit would end this very process).
    watchdog = start_hard_limit("job-1", 0.01, generated=lambda: True)
    watchdog.join(timeout=30)
    assert not watchdog.is_alive()
