"""The scheduler: which queued job a worker takes next, decided in one Redis script.

docs/scheduling.md has the design. This module is its Python face: a worker
reserves its next job (or a batch), claims it through the job store when its
engine starts it, or releases it; the API reads positions and usage; the
reaper gives dead workers' reservations back.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from shared import lua
from shared.constants import DEFAULT_SWAP_AFTER_S, KEY_PREFIX, MODEL_QUEUE_PREFIX
from shared.jobs import JobRecord
from shared.queue import token_message
from shared.redis_replies import reply_text

log = logging.getLogger(__name__)

RESERVED_KEY = KEY_PREFIX + "sched:reserved"
EPOCH_KEY = KEY_PREFIX + "sched:epoch"
USAGE_KEY = KEY_PREFIX + "sched:usage"
RATE_KEY = KEY_PREFIX + "sched:rate"
SERVING_PREFIX = KEY_PREFIX + "sched:serving:"
OWNERS_PREFIX = KEY_PREFIX + "sched:owners:"
RESIDENT_PREFIX = KEY_PREFIX + "sched:resident:"
# How long a reservation that needs a swap holds its model for its worker, unless told.
DEFAULT_CLAIM_TTL_S = 15.0
# The priority bands, highest first (the scheduler serves them in this order).
BANDS = ("high", "normal", "low")
# sched:usage's field for the whole cluster's usage.
TOTAL = "*"
# Any model: workers serving the shared queue, and its measured rate.
ANY = "*"
# How much a new measurement moves a model's seconds-per-cost-unit average, and how
# often a worker writes its averages for the ETAs.
RATE_WEIGHT = 0.2
RATE_WRITE_S = 1.0

RESERVE = lua.script("reserve")
RESERVE_JOB = lua.script("reserve_job")
RELEASE = lua.script("release")
BETTER = lua.script("better")
PEEK = lua.script("peek")


@dataclass(frozen=True)
class Reservation:
    job_id: str
    queue: str
    # The job as it was reserved (still queued).
    record: JobRecord


@dataclass(frozen=True)
class Holding:
    """The models a worker holds: on its device (no swap), warm in host memory."""

    device: tuple[str, ...] = ()
    warm: tuple[str, ...] = ()
    # A job that needs a swap goes first once it waited this much longer than the
    # job that does not.
    swap_after_s: float = DEFAULT_SWAP_AFTER_S
    # A reservation that needs a swap marks the model as this worker's for this long
    # (its heartbeats keep it so once loaded): no other worker swaps to it meanwhile.
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S
    # The LoRA adapters loaded on its device (their ids): jobs that need only these
    # go before a key's jobs that would load others (docs/scheduling.md, Adapters).
    adapters: tuple[str, ...] = ()

    @classmethod
    def of_tiers(
        cls,
        tiers: Mapping[str, str],
        swap_after_s: float = DEFAULT_SWAP_AFTER_S,
        claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
        adapters: tuple[str, ...] = (),
    ) -> Holding:
        return cls(
            tuple(m for m, t in tiers.items() if t == "device"),
            tuple(m for m, t in tiers.items() if t == "host"),
            swap_after_s,
            claim_ttl_s,
            adapters,
        )

    @classmethod
    def of_queues(cls, queues: list[str]) -> Holding:
        """As if every model of `queues` were on the device (no model routing)."""
        prefix = MODEL_QUEUE_PREFIX
        return cls(tuple(q.removeprefix(prefix) for q in queues if q.startswith(prefix)))

    def names(self) -> dict[str, Any]:
        """The scripts' ARGV that say what the worker holds (reserve.lua)."""
        return {
            "resident": ",".join(self.device),
            "warm": ",".join(self.warm),
            "swap_after_ms": int(self.swap_after_s * 1000),
            "claim_ttl_ms": int(self.claim_ttl_s * 1000),
            "adapters": ",".join(self.adapters),
        }


def job_cost(steps: int, width: int, height: int, images: int, factor: float) -> float:
    """A job's estimated cost: steps x megapixels x images x the model's cost factor
    (estimated GPU-seconds per step per megapixel per image)."""
    return steps * (width * height / 1e6) * images * factor


class Scheduler:
    def __init__(self, client: redis.Redis, half_life_s: float):
        self.redis = client
        self.half_life_s = half_life_s
        # This process's running averages of seconds per cost unit, written to
        # Redis at most every RATE_WRITE_S (one HSET, not a round trip per job).
        self._rates: dict[str, float] = {}
        self._rates_written = 0.0

    def reserve(
        self,
        worker: str,
        queues: list[str],
        hand_queue: str | None = None,
        holding: Holding | None = None,
    ) -> Reservation | None:
        """Choose this worker's next job and set it aside for it (still `queued`).

        `hand_queue`: the queue of the wake-up token the worker was handed, if any;
        `holding`: the models it holds (default: every queue's, as if on its device).
        """
        token = token_message(hand_queue).payload if hand_queue else b""
        held = holding or Holding.of_queues(queues)
        args = {
            "worker": worker,
            "half_life": self.half_life_s,
            "hand_queue": hand_queue or "",
            "hand_token": token,
            **held.names(),
            "queues": queues,
        }
        answer = RESERVE.call(args=args).run(self.redis)
        if not answer:
            return None
        job_id, queue, record = answer
        return Reservation(
            reply_text(job_id), reply_text(queue), JobRecord.model_validate_json(record)
        )

    def reserve_job(self, job_id: str, worker: str) -> bool:
        """Set aside this queued job (a batch companion) for `worker`, if still waiting."""
        args = {"job": job_id, "worker": worker, "half_life": self.half_life_s}
        return bool(RESERVE_JOB.call(args=args).run(self.redis))

    def release(self, job_id: str, worker: str, queue: str) -> bool:
        """Give a reserved job back to its queue, where it was (it never started)."""
        token = token_message(queue).payload
        args = {"job": job_id, "worker": worker, "half_life": self.half_life_s, "token": token}
        return bool(RELEASE.call(args=args).run(self.redis))

    def better(
        self, job_id: str, worker: str, queues: list[str], holding: Holding | None = None
    ) -> str | None:
        """A job that should go before reserved `job_id` on this worker, if one came."""
        held = holding or Holding.of_queues(queues)
        args = {"job": job_id, "worker": worker, **held.names(), "queues": queues}
        answer = BETTER.call(args=args).run(self.redis)
        return reply_text(answer) if answer else None

    def peek(self, queues: list[str], limit: int) -> list[str]:
        """Up to `limit` waiting jobs, about in the order this worker would get them."""
        found = PEEK.call(args={"limit": limit, "queues": queues}).run(self.redis)
        return [reply_text(job_id) for job_id in found]

    def has_work(self, queues: list[str]) -> bool:
        """Whether `queues` hold jobs not yet reserved (whoever may run them)."""
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            for band in BANDS:
                pipe.exists(f"{OWNERS_PREFIX}{queue}:{band}")
        return any(pipe.execute())

    def epoch(self) -> int:
        """A number that moves whenever a job becomes queued."""
        return int(self.redis.get(EPOCH_KEY) or 0)

    def reservations(self) -> dict[str, str]:
        """Reserved job id -> the worker holding it."""
        raw: dict[bytes, bytes] = self.redis.hgetall(RESERVED_KEY)  # type: ignore[assignment]
        return {k.decode(): v.decode().partition("\t")[0] for k, v in raw.items()}

    def note_rate(self, model: str, seconds: float, units: float) -> None:
        """A job of `model` took `seconds` for `units` of estimated cost: the ETAs' rate."""
        if units <= 0 or seconds <= 0:
            return
        measured = seconds / units
        for field in (model, ANY):
            old = self._rates.get(field)
            self._rates[field] = measured if old is None else _blend(old, measured)
        now = time.monotonic()
        if now - self._rates_written >= RATE_WRITE_S:
            self._rates_written = now
            self.redis.hset(RATE_KEY, mapping=self._rates)  # type: ignore[arg-type]

    def usage(self, owner: str) -> tuple[float, float]:
        """A key's usage now (estimated GPU-seconds, decayed) per weight, and the
        cluster's total usage (not per weight)."""
        return usage_now(self.redis.hmget(*usage_fields(owner)), self.half_life_s)


def usage_fields(owner: str) -> tuple[str, str, str]:
    """HMGET's arguments for `owner`'s usage and the cluster's (any client runs it)."""
    return USAGE_KEY, owner, TOTAL


def usage_now(scores: Any, half_life_s: float) -> tuple[float, float]:
    """The answer to HMGET usage_fields(owner): its usage per weight and the total, now."""
    own, total = scores
    return _decayed(own, half_life_s), _decayed(total, half_life_s)


def announce_resident(
    client: redis.Redis,
    worker: str,
    tiers: Mapping[str, str],
    served: list[str],
    ttl_s: float,
) -> None:
    """Which of the models it serves `worker` holds on its device (for `ttl_s` more
    seconds): the scheduler leaves another worker's model to it rather than swap
    (sched.lua)."""
    now = time.time()
    expires = (now + ttl_s) * 1000
    pipe = client.pipeline(transaction=False)
    for model in dict.fromkeys([*served, *tiers]):
        key = RESIDENT_PREFIX + model
        if tiers.get(model) == "device":
            pipe.zadd(key, {worker: expires})
        else:
            pipe.zrem(key, worker)
        pipe.zremrangebyscore(key, "-inf", now * 1000)
    pipe.execute()


def serving_key(model: str) -> str:
    return SERVING_PREFIX + model


def announce_serving(client: redis.Redis, worker: str, models: list[str], ttl_s: float) -> None:
    """`worker` can run the jobs of `models` (and the shared queue's) for `ttl_s` more
    seconds: one round trip however many it serves."""
    expires = (time.time() + ttl_s) * 1000
    pipe = client.pipeline(transaction=False)
    for key in [*(serving_key(m) for m in models), serving_key(ANY)]:
        pipe.zadd(key, {worker: expires})
        pipe.zremrangebyscore(key, "-inf", time.time() * 1000)
    pipe.execute()


def _decayed(score: bytes | str | None, half_life_s: float) -> float:
    """A stored usage score (log2(usage) + t / half_life) as usage now."""
    if score is None:
        return 0.0
    value = float(score)
    if value == -math.inf:
        return 0.0
    return float(2 ** (value - time.time() / half_life_s))


def _blend(old: float, new: float) -> float:
    return old + RATE_WEIGHT * (new - old)
