"""Readiness checks that cannot hang the API: bounded, one at a time, their
answers in words that give nothing away.

Kubernetes takes an API pod out of service while `/readyz` fails, so it fails
only for what stops the API from taking and answering jobs: Redis. The image
storage is reported beside it (workers wait out a storage outage, holding the
images, and the API keeps serving submits and polls meanwhile).

Each check answers `ok`, `unreachable`, `timeout` or `misconfigured`, never an
address or an error text (the probe is open to anyone who can reach the API);
the details go to the API's log, once per change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Literal

import redis
from botocore.exceptions import ClientError

from shared.errors import StorageError
from shared.multiplexed import MultiplexedRedis
from shared.storage import Storage

log = logging.getLogger(__name__)

CheckResult = Literal["ok", "unreachable", "timeout", "misconfigured"]
# A probe's own timeout is often 1 s (Kubernetes' default): answer within it.
CHECK_TIMEOUT_S = 0.8
# A success stands for this long: probes from many places cost one check a second.
OK_CACHED_S = 1.0


class Readiness:
    """The API's dependency checks, shared by every request of the process."""

    def __init__(self, redis_client: MultiplexedRedis, storage: Storage):
        self.redis = redis_client
        self.storage = storage
        # The storage client blocks (boto3, with retries that can take minutes):
        # its ping runs on a thread of its own, so a hung bucket never holds a
        # thread other routes need, and never more than one ping at a time.
        self._storage_ping: Future[None] | None = None
        self._last: dict[str, CheckResult] = {}
        self._ok_until = 0.0

    async def check(self) -> dict[str, CheckResult]:
        """Each dependency's state, within CHECK_TIMEOUT_S."""
        if time.monotonic() < self._ok_until:
            return {"redis": "ok", "storage": "ok"}
        redis_state, storage_state = await asyncio.gather(self._redis(), self._storage())
        checks: dict[str, CheckResult] = {"redis": redis_state, "storage": storage_state}
        if all(state == "ok" for state in checks.values()):
            self._ok_until = time.monotonic() + OK_CACHED_S
        return checks

    async def _redis(self) -> CheckResult:
        try:
            await asyncio.wait_for(self.redis.execute("PING"), CHECK_TIMEOUT_S)
        except (TimeoutError, redis.TimeoutError) as exc:
            return self._note("redis", "timeout", exc)
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            return self._note("redis", "misconfigured", exc)
        except redis.RedisError as exc:
            return self._note("redis", "unreachable", exc)
        return self._note("redis", "ok")

    async def _storage(self) -> CheckResult:
        ping = self._storage_ping
        if ping is None or ping.done():
            ping = self._storage_ping = in_daemon_thread(self.storage.ping)
        try:
            # shield: a ping that outlives this probe goes on, and the next probe waits
            # on the same one instead of starting another.
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(ping)), CHECK_TIMEOUT_S)
        except TimeoutError as exc:
            return self._note("storage", "timeout", exc)
        except StorageError as exc:
            return self._note("storage", _storage_failure(exc), exc)
        return self._note("storage", "ok")

    def _note(self, name: str, state: CheckResult, exc: BaseException | None = None) -> CheckResult:
        """Log a check's state when it changes (the details stay in the log)."""
        before = self._last.get(name)
        if before != state:
            if state == "ok":
                if before is not None:
                    log.info("readiness: %s is ok again", name)
            else:
                log.warning("readiness: %s is %s: %s", name, state, exc or "no answer in time")
            self._last[name] = state
        return state


def _storage_failure(exc: StorageError) -> CheckResult:
    """A bucket that answers but refuses (missing, forbidden) is misconfigured;
    one that does not answer is unreachable."""
    cause = exc.__cause__
    if isinstance(cause, ClientError) or cause is None:
        # No cause: the local backend's directory is not writable.
        return "misconfigured"
    return "unreachable"


def in_daemon_thread(call: Callable[[], None]) -> Future[None]:
    """Run `call` on a new daemon thread: a ping still hanging never delays the
    process's exit (an executor's threads are joined at exit)."""
    future: Future[None] = Future()

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 -- handed to whoever awaits the future
            future.set_exception(exc)
        else:
            future.set_result(None)

    threading.Thread(target=run, name="readyz-storage", daemon=True).start()
    return future
