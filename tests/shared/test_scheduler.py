"""The scheduler's one decision (shared/lua/reserve.lua), on a real Redis.

Who runs next is counted over many decisions, never timed: bands first, fair
shares by usage per weight within a band, max_running, no banked credit,
reservations that stay `queued`, wake-up tokens, positions and ETAs.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta

import pytest
import redis

from shared.constants import broker_lists
from shared.jobs import GenerationParams, JobRecord, JobStatus, Priority, utcnow
from shared.keypolicy import KeyPolicy
from shared.public import POSITION_SCRIPT
from shared.queue import token_message
from shared.reaper import reap_lost_jobs
from shared.scheduler import Holding, Scheduler, announce_resident, announce_serving
from shared.store import JobStore
from shared.workers import WorkerInfo, write_worker
from tests.support.polling import wait_until

QUEUE = "darkroom.model.tiny-sd"
OTHER = "darkroom.model.other"
QUEUES = [QUEUE, "darkroom.default"]
PARAMS = GenerationParams(
    prompt="x",
    negative_prompt=None,
    width=64,
    height=64,
    steps=2,
    guidance_scale=7.0,
    seed=1,
    num_images=1,
)
_ids = itertools.count()


@pytest.fixture
def store(api_redis: redis.Redis) -> JobStore:
    return JobStore(api_redis, ttl_s=3600)


@pytest.fixture
def scheduler(api_redis: redis.Redis) -> Scheduler:
    return Scheduler(api_redis, half_life_s=600)


def submit(
    store: JobStore,
    owner: str,
    priority: Priority = "normal",
    cost: float = 1.0,
    queue: str = QUEUE,
    policy: KeyPolicy | None = None,
) -> str:
    n = next(_ids)
    record = JobRecord(
        id=f"{owner}-{n}",
        created_at=utcnow() + timedelta(microseconds=n),
        model="tiny-sd",
        queue=queue,
        params=PARAMS,
        owner=owner,
        priority=priority,
        cost=cost,
    )
    store.create(record, policy=policy or KeyPolicy())
    return record.id


def run_next(store: JobStore, scheduler: Scheduler, worker: str = "w@test") -> str | None:
    """Reserve this worker's next job and claim it; its id (None: nothing for it)."""
    reservation = scheduler.reserve(worker, QUEUES)
    if reservation is None:
        return None
    store.transition(reservation.job_id, JobStatus.RUNNING, worker=worker)
    return reservation.job_id


def finish(store: JobStore, job_id: str) -> None:
    store.transition(job_id, JobStatus.SUCCEEDED)


def owner_of(job_id: str) -> str:
    return job_id.rsplit("-", 1)[0]


def test_a_single_key_runs_in_arrival_order_and_higher_bands_first(
    store: JobStore, scheduler: Scheduler
) -> None:
    normal = [submit(store, "a") for _ in range(3)]
    low = submit(store, "a", "low")
    high = submit(store, "a", "high")
    order = [run_next(store, scheduler) for _ in range(5)]
    assert order == [high, *normal, low]
    assert run_next(store, scheduler) is None


def test_a_lone_job_of_another_key_goes_before_a_flood(
    store: JobStore, scheduler: Scheduler
) -> None:
    """The issue's measurement: key A has 100 jobs queued, then B submits one."""
    flood = [submit(store, "a") for _ in range(100)]
    first = run_next(store, scheduler)  # A's job is running when B arrives
    lone = submit(store, "b")
    assert store.queue_position(store.get(lone)) == 0
    assert store.queue_position(store.get(flood[-1])) == 99
    assert run_next(store, scheduler) == lone
    assert first == flood[0]


def test_weights_share_the_workers_three_to_one(store: JobStore, scheduler: Scheduler) -> None:
    heavy, light = KeyPolicy(weight=3), KeyPolicy(weight=1)
    for _ in range(400):
        submit(store, "heavy", policy=heavy)
        submit(store, "light", policy=light)
    ran = Counter(owner_of(run_next(store, scheduler) or "") for _ in range(400))
    assert ran["heavy"] / ran["light"] == pytest.approx(3, rel=0.05)


def test_shares_count_cost_not_jobs(store: JobStore, scheduler: Scheduler) -> None:
    """A key whose jobs cost four times as much gets a quarter as many of them."""
    for _ in range(200):
        submit(store, "big", cost=4.0)
        submit(store, "small", cost=1.0)
    ran = Counter(owner_of(run_next(store, scheduler) or "") for _ in range(250))
    assert ran["small"] / ran["big"] == pytest.approx(4, rel=0.05)


def test_max_running_is_a_cap_and_the_rest_is_work_conserving(
    store: JobStore, scheduler: Scheduler
) -> None:
    capped = KeyPolicy(max_running=2)
    [submit(store, "capped", policy=capped) for _ in range(5)]
    running = [run_next(store, scheduler) for _ in range(2)]
    assert all(owner_of(j or "") == "capped" for j in running)
    # At its cap: nothing for it now, even with workers free...
    assert run_next(store, scheduler) is None
    # ...while another key's job runs at once.
    other = submit(store, "other")
    assert run_next(store, scheduler) == other
    # A slot frees: the capped key runs again.
    finish(store, running[0] or "")
    assert owner_of(run_next(store, scheduler) or "") == "capped"


def test_an_idle_key_banks_no_credit(store: JobStore, scheduler: Scheduler) -> None:
    """B ran nothing while A ran 50 jobs; then both flood: B gets one job ahead at
    most, then they alternate (no burst of 50 for B)."""
    for _ in range(50):
        submit(store, "a")
        finish(store, run_next(store, scheduler) or "")
    for _ in range(40):
        submit(store, "a")
        submit(store, "b")
    order = [owner_of(run_next(store, scheduler) or "") for _ in range(20)]
    assert Counter(order[:4]) == {"a": 2, "b": 2} or Counter(order[:4]) == {"a": 1, "b": 3}
    assert Counter(order) == pytest.approx({"a": 10, "b": 10}, abs=1)


def test_usage_decays_with_the_half_life(api_redis: redis.Redis) -> None:
    fast = Scheduler(api_redis, half_life_s=0.5)
    store = JobStore(api_redis, ttl_s=3600, half_life_s=0.5)
    submit(store, "a", cost=8.0)
    finish(store, run_next(store, fast) or "")
    used, _ = fast.usage("a")
    assert 0 < used <= 8.0
    wait_until(lambda: fast.usage("a")[0] < used / 4, timeout_s=30, what="usage halving twice")


def test_a_reservation_stays_queued_and_the_reaper_gives_back_a_dead_workers(
    store: JobStore, scheduler: Scheduler, api_redis: redis.Redis
) -> None:
    first, second = submit(store, "a"), submit(store, "a")
    reservation = scheduler.reserve("dead@test", QUEUES)
    assert reservation is not None
    assert reservation.job_id == first
    record = store.get(first)
    assert record.status is JobStatus.QUEUED
    assert store.queue_position(record) == 0
    # The next decision, by another worker, takes the next job.
    other = scheduler.reserve("alive@test", QUEUES)
    assert other is not None
    assert other.job_id == second
    write_worker(api_redis, WorkerInfo(name="alive@test", state="busy"), ttl_s=60)
    assert reap_lost_jobs(store, scheduler, max_attempts=3) == [first]
    assert scheduler.reservations() == {second: "alive@test"}
    again = scheduler.reserve("w2@test", QUEUES)
    assert again is not None
    assert again.job_id == first


def test_canceling_a_reserved_job_frees_its_keys_slot(
    store: JobStore, scheduler: Scheduler, api_redis: redis.Redis
) -> None:
    capped = KeyPolicy(max_running=1)
    first, second = submit(store, "a", policy=capped), submit(store, "a", policy=capped)
    assert scheduler.reserve("w@test", QUEUES) is not None
    assert scheduler.reserve("w2@test", QUEUES) is None  # at its cap
    store.transition(first, JobStatus.CANCELED)
    assert scheduler.reservations() == {}
    again = scheduler.reserve("w2@test", QUEUES)
    assert again is not None
    assert again.job_id == second


def test_a_newcomer_overtakes_a_floods_reserved_job_but_not_a_peers(
    store: JobStore, scheduler: Scheduler
) -> None:
    for _ in range(10):
        submit(store, "a")
        submit(store, "b")
    for _ in range(6):  # both have been served a while
        finish(store, run_next(store, scheduler) or "")
    reserved = scheduler.reserve("w@test", QUEUES)
    assert reserved is not None
    # Between two keys taking turns, nothing goes before the reserved job...
    assert scheduler.better(reserved.job_id, "w@test", QUEUES) is None
    # ...a key that ran nothing yet does, as does a higher band.
    lone = submit(store, "c")
    assert scheduler.better(reserved.job_id, "w@test", QUEUES) == lone
    urgent = submit(store, "a", "high")
    assert scheduler.better(reserved.job_id, "w@test", QUEUES) == urgent


def test_tokens_one_per_waiting_job_and_the_one_in_hand_pays(
    store: JobStore, scheduler: Scheduler, api_redis: redis.Redis
) -> None:
    jobs = [submit(store, "a") for _ in range(3)]
    for job_id in jobs:
        api_redis.lpush(QUEUE, token_message(QUEUE, job_id).payload)
    # An idle worker took one token of the queue (kombu popped it) and asks.
    api_redis.rpop(QUEUE)
    assert scheduler.reserve("w@test", QUEUES, hand_queue=QUEUE) is not None
    assert api_redis.llen(QUEUE) == 2
    # A worker in a run of jobs asks with no token: one comes off the list.
    assert scheduler.reserve("w@test", QUEUES) is not None
    assert api_redis.llen(QUEUE) == 1
    # A token of another queue pays for a job of this one: it goes back to its own.
    assert scheduler.reserve("w@test", [QUEUE, OTHER], hand_queue=OTHER) is not None
    assert api_redis.llen(QUEUE) == 0
    assert api_redis.llen(OTHER) == 1


def test_a_token_for_capped_jobs_is_parked_until_a_slot_frees(
    store: JobStore, scheduler: Scheduler, api_redis: redis.Redis
) -> None:
    capped = KeyPolicy(max_running=1)
    running = submit(store, "a", policy=capped)
    submit(store, "a", policy=capped)
    assert run_next(store, scheduler) == running
    assert scheduler.reserve("idle@test", QUEUES, hand_queue=QUEUE) is None
    assert api_redis.llen(QUEUE) == 0  # parked, not spinning between idle workers
    finish(store, running)
    assert api_redis.llen(QUEUE) == 1  # back for a worker to take


def test_a_job_handed_back_by_the_reaper_goes_first_with_a_token(
    store: JobStore, scheduler: Scheduler, api_redis: redis.Redis
) -> None:
    first, second = submit(store, "a"), submit(store, "a")
    assert run_next(store, scheduler, "dead@test") == first
    reap_lost_jobs(store, scheduler, max_attempts=3)
    assert store.get(first).status is JobStatus.QUEUED
    assert sum(api_redis.llen(name) for name in broker_lists(QUEUE)) == 1
    assert run_next(store, scheduler) == first
    assert run_next(store, scheduler) == second


def test_eta_needs_a_live_worker_and_follows_the_measured_rate(
    store: JobStore, scheduler: Scheduler, api_redis: redis.Redis
) -> None:
    jobs = [submit(store, "a", cost=2.0) for _ in range(3)]

    def eta(job_id: str) -> float | None:
        _, seconds = POSITION_SCRIPT.call(args={"job": job_id, "half_life": "600"}).run(api_redis)
        return None if seconds is None else float(seconds)

    assert eta(jobs[2]) is None  # no worker serves the model
    announce_serving(api_redis, "w@test", ["tiny-sd"], ttl_s=60)
    scheduler.note_rate("tiny-sd", seconds=3.0, units=1.0)  # 3 s per cost unit
    assert eta(jobs[2]) == pytest.approx(2 * 2.0 * 3.0)
    announce_serving(api_redis, "w2@test", ["tiny-sd"], ttl_s=60)
    assert eta(jobs[2]) == pytest.approx(2 * 2.0 * 3.0 / 2)


# --- a worker holding several models (docs/scheduling.md, "Models") ------------------

MODEL_QUEUES = ["darkroom.model.a", "darkroom.model.b", "darkroom.model.c", "darkroom.default"]


def submit_for(
    store: JobStore, model: str, owner: str = "k", ago_s: float = 0.0, adapters: str = ""
) -> str:
    n = next(_ids)
    record = JobRecord(
        id=f"{model}-{n}",
        adapters=adapters,
        created_at=utcnow() - timedelta(seconds=ago_s) + timedelta(microseconds=n),
        model=model,
        queue=f"darkroom.model.{model}",
        params=PARAMS,
        owner=owner,
    )
    store.create(record)
    return record.id


def next_for(
    store: JobStore, scheduler: Scheduler, holding: Holding, worker: str = "w@test"
) -> str | None:
    reservation = scheduler.reserve(worker, MODEL_QUEUES, holding=holding)
    if reservation is None:
        return None
    store.transition(reservation.job_id, JobStatus.RUNNING, worker=worker)
    store.transition(reservation.job_id, JobStatus.SUCCEEDED)
    return reservation.job_id.split("-")[0]


def test_jobs_of_the_model_on_the_device_go_first_then_one_swap_per_group(
    store: JobStore, scheduler: Scheduler
) -> None:
    """A burst for three models on a worker that holds one at a time: each model's
    jobs run together, so the worker swaps once per model, not once per job."""
    for model in ["b", "a", "c", "a", "b", "c", "a", "b", "c"]:
        submit_for(store, model)
    holding = Holding(device=("a",))
    ran = []
    while (model := next_for(store, scheduler, holding)) is not None:
        ran.append(model)
        holding = Holding(device=(model,))  # the worker now holds what it ran
    swaps = sum(1 for before, after in itertools.pairwise(ran) if before != after)
    assert ran[:3] == ["a", "a", "a"]
    assert swaps == 2


def test_a_job_that_waited_long_enough_gets_its_swap(store: JobStore, scheduler: Scheduler) -> None:
    old = submit_for(store, "b", ago_s=120)
    submit_for(store, "a")
    assert next_for(store, scheduler, Holding(device=("a",), swap_after_s=30)) == "b"
    assert old.startswith("b")


def test_a_model_another_worker_holds_is_left_to_it(
    store: JobStore, scheduler: Scheduler, api_redis: redis.Redis
) -> None:
    announce_resident(api_redis, "other@test", {"b": "device"}, ["b"], ttl_s=60)
    submit_for(store, "b", ago_s=120)
    submit_for(store, "a")
    assert next_for(store, scheduler, Holding(device=("a",), swap_after_s=30)) == "a"


def test_an_idle_worker_leaves_a_model_to_the_worker_that_holds_it_until_it_lags(
    store: JobStore, scheduler: Scheduler, api_redis: redis.Redis
) -> None:
    """Two workers, two hot models: the one holding `a` does not take `b`'s jobs from
    the one holding `b` (no swap back and forth), unless they waited swap_after."""
    announce_resident(api_redis, "other@test", {"b": "device"}, ["b"], ttl_s=60)
    holding = Holding(device=("a",), swap_after_s=30)
    submit_for(store, "b", ago_s=5)
    assert next_for(store, scheduler, holding) is None
    submit_for(store, "b", ago_s=120)  # the holder does not keep up
    assert next_for(store, scheduler, holding) == "b"
    # Once the holder's record expires, its model is anybody's.
    announce_resident(api_redis, "other@test", {"b": "device"}, ["b"], ttl_s=-1)
    assert next_for(store, scheduler, holding) == "b"


def test_reserving_a_swap_claims_its_model_against_a_second_swap(
    store: JobStore, scheduler: Scheduler
) -> None:
    """Two idle workers holding `a`, two `b` jobs: the first that reserves one swaps to
    `b`; the second leaves `b` to it rather than swap too while it loads."""
    submit_for(store, "b")
    submit_for(store, "b")
    holding = Holding(device=("a",), claim_ttl_s=60)
    assert next_for(store, scheduler, holding, worker="w1@test") == "b"
    assert next_for(store, scheduler, holding, worker="w2@test") is None
    assert next_for(store, scheduler, Holding(device=("b",)), worker="w1@test") == "b"


def test_with_nothing_for_its_models_a_worker_swaps_warm_before_cold(
    store: JobStore, scheduler: Scheduler
) -> None:
    submit_for(store, "c", ago_s=5)  # older, but on disk
    submit_for(store, "b")  # warm in host memory
    assert next_for(store, scheduler, Holding(device=("a",), warm=("b",))) == "b"


def reserve_id(scheduler: Scheduler, store: JobStore, holding: Holding, worker: str) -> str:
    reservation = scheduler.reserve(worker, MODEL_QUEUES, holding=holding)
    assert reservation is not None
    store.transition(reservation.job_id, JobStatus.RUNNING, worker=worker)
    store.transition(reservation.job_id, JobStatus.SUCCEEDED)
    return reservation.job_id


def test_a_worker_takes_the_jobs_whose_adapters_it_holds_first(
    store: JobStore, scheduler: Scheduler
) -> None:
    """One key's jobs: one needing adapter x, one needing none, one needing y. A worker
    holding y runs the two it needs nothing new for before the one that loads x; a
    worker holding x takes that one at once."""
    needs_x = submit_for(store, "a", adapters="x", ago_s=3)
    plain = submit_for(store, "a", ago_s=2)
    needs_y = submit_for(store, "a", adapters="y", ago_s=1)
    holds_y = Holding(device=("a",), adapters=("y",))
    assert reserve_id(scheduler, store, holds_y, "w1@test") == plain
    assert (
        reserve_id(scheduler, store, Holding(device=("a",), adapters=("x",)), "w2@test") == needs_x
    )
    assert reserve_id(scheduler, store, holds_y, "w1@test") == needs_y


def test_a_job_whose_adapters_nobody_holds_waits_at_most_swap_after(
    store: JobStore, scheduler: Scheduler
) -> None:
    old = submit_for(store, "a", adapters="x", ago_s=120)
    submit_for(store, "a")
    assert reserve_id(scheduler, store, Holding(device=("a",), swap_after_s=30), "w@test") == old
