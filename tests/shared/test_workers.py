"""Worker records: a name is held by one live process at a time."""

from __future__ import annotations

import fakeredis

from shared.workers import WorkerInfo, claim_worker, read_worker, unique_name, write_worker
from worker.heartbeat import Heartbeat


def test_unique_names_never_repeat_and_keep_celerys_host_placeholder() -> None:
    names = {unique_name() for _ in range(100)}
    assert len(names) == 100
    assert all(name.startswith("darkroom-") and name.endswith("@%h") for name in names)


def test_a_held_name_cannot_be_claimed(client: fakeredis.FakeRedis) -> None:
    assert claim_worker(client, WorkerInfo(name="w@h", state="loading", pid=1), ttl_s=15)
    assert not claim_worker(client, WorkerInfo(name="w@h", state="loading", pid=2), ttl_s=15)
    holder = read_worker(client, "w@h")
    assert holder is not None
    assert holder.pid == 1


def test_heartbeat_claim_names_the_live_holder(client: fakeredis.FakeRedis) -> None:
    write_worker(client, WorkerInfo(name="w@h", state="ready", pid=7), ttl_s=60)
    beat = Heartbeat(client, WorkerInfo(name="w@h", state="loading", pid=8), ttl_s=60)
    holder = beat.claim(wait_s=0.2, poll_s=0.05)
    assert holder is not None
    assert holder.pid == 7


def test_heartbeat_claim_waits_out_a_dead_predecessors_record(
    client: fakeredis.FakeRedis,
) -> None:
    # A record nobody rewrites (its process died) expires: the name is then free.
    write_worker(client, WorkerInfo(name="w@h", state="busy", pid=7), ttl_s=0.3)
    beat = Heartbeat(client, WorkerInfo(name="w@h", state="loading", pid=8), ttl_s=60)
    assert beat.claim(wait_s=30, poll_s=0.05) is None
    holder = read_worker(client, "w@h")
    assert holder is not None
    assert holder.pid == 8
