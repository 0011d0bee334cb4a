"""Row `chaos`, run only when named (`python -m bench --only chaos`): a soak under failures.

For --chaos-minutes M (10) a client thread submits tiny-sd jobs (64x64, 2 steps,
--chaos-rate jobs/s, 3) to the API, with three Celery workers, all on a Redis
Sentinel cluster of their own (master, two replicas, three sentinels;
REDIS_MIN_REPLICAS_ACK=1), while the chaos, every interval jittered by a quarter:

- about every 20 s SIGKILLs a random worker and starts a replacement
  (WORKER_TTL_S=5, so a reaper hands its job back within seconds);
- about every 90 s restarts the API, by SIGTERM and by SIGKILL in turn;
- about every 2 min fails the master over, by SENTINEL FAILOVER and by SIGKILL
  in turn (the killed server is then restarted as a replica: two remain).

Then it waits (up to 5 min) for every accepted job to end and reports what
became of them (bench/soak/report.py). Every process's log, and the event log
(chaos-events.log), stay in the run's work directory.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import signal
import threading
import time
from collections.abc import Iterator

from bench.common import Result, Settings
from bench.jobs import TERMINAL
from bench.soak.cluster import cluster_base_port, sentinel_binary
from bench.soak.events import Event, Timeline
from bench.soak.report import Soak, chaos_result
from bench.soak.stack import ChaosStack
from bench.soak.stream import JobStream, await_terminal
from bench.stack import Stack
from darkroom.sentinel_cluster import SentinelCluster

# Mean seconds between two events of each kind; each wait is drawn +-JITTER around it.
INTERVALS_S = {"worker": 20.0, "api": 90.0, "failover": 120.0}
JITTER = 0.25
# Every accepted job must be terminal within this long after the stream stops.
DRAIN_TIMEOUT_S = 300.0
# Sentinels call a silent master down after this; the cluster's test default.
DOWN_AFTER_MS = 1000
# A failover (or a killed master's restart) that takes longer is reported failed.
FAILOVER_TIMEOUT_S = 60.0


def measure_chaos(stack: Stack, cfg: Settings) -> Result:
    with SentinelCluster(
        cluster_base_port(), down_after_ms=DOWN_AFTER_MS, binary=sentinel_binary()
    ) as cluster:
        procs = ChaosStack(stack, cluster)
        try:
            procs.start()
            soak = _soak(procs, cfg)
        finally:
            procs.close()
            procs.keep_cluster_logs()
    return chaos_result(soak)


def _soak(procs: ChaosStack, cfg: Settings) -> Soak:
    logs = procs.stack.workdir / "logs"
    timeline = Timeline(logs / "chaos-events.log", origin=time.time())
    seed = random.randrange(2**32)
    stream = JobStream(procs.api_url, cfg.chaos_rate)
    chaos = Chaos(procs, timeline, random.Random(seed))
    timeline.note(
        "soak-start", f"{cfg.chaos_rate:g} jobs/s for {cfg.chaos_minutes:g} min, chaos seed {seed}"
    )
    stream.start()
    chaos.start()
    try:
        time.sleep(cfg.chaos_minutes * 60)
    finally:
        chaos.stop()  # lets an event under way finish: the API is up again afterwards
        stream.stop()
    stopped = time.time()
    timeline.note("soak-stop", f"{stream.sent} sent, {len(stream.accepted)} accepted")
    procs.ensure_api()
    records = await_terminal(procs.api_url, list(stream.accepted), DRAIN_TIMEOUT_S)
    timeline.note("drained", f"{time.time() - stopped:.0f} s after the stream stopped")
    unfinished = [i for i, r in records.items() if r is None or r["status"] not in TERMINAL]
    return Soak(
        minutes=cfg.chaos_minutes,
        rate=cfg.chaos_rate,
        seed=seed,
        origin=timeline.origin,
        stopped=stopped,
        drain_s=time.time() - stopped,
        sent=stream.sent,
        accepted=stream.accepted,
        refusals=stream.refusals,
        records=records,
        events=timeline.events,
        killed=procs.killed,
        exited=procs.exited_on_their_own(),
        workers_at_end=procs.workers_at_end(),
        broker=procs.broker_messages(unfinished),
        logs_dir=logs,
    )


class Chaos:
    """Kills and restarts on a thread of its own, one event at a time, each logged."""

    def __init__(self, procs: ChaosStack, timeline: Timeline, rng: random.Random) -> None:
        self.procs = procs
        self.timeline = timeline
        self.rng = rng
        self._api_signals = itertools.cycle([signal.SIGTERM, signal.SIGKILL])
        self._failover_modes = itertools.cycle(["forced", "kill"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # A failover with a master restart waits up to twice FAILOVER_TIMEOUT_S.
        self._thread.join(timeout=3 * FAILOVER_TIMEOUT_S)

    def _run(self) -> None:
        actions = {
            "worker": self._kill_worker,
            "api": self._restart_api,
            "failover": self._failover,
        }
        due = {kind: time.monotonic() + self._interval(kind) for kind in actions}
        while True:
            kind = min(due, key=due.__getitem__)
            if self._stop.wait(max(0.0, due[kind] - time.monotonic())):
                return
            actions[kind]()
            due[kind] = time.monotonic() + self._interval(kind)

    def _interval(self, kind: str) -> float:
        return INTERVALS_S[kind] * self.rng.uniform(1 - JITTER, 1 + JITTER)

    @contextlib.contextmanager
    def _event(self, kind: str) -> Iterator[Event]:
        """Time and log one event; a failure is logged with it, and the soak goes on."""
        event = self.timeline.begin(kind)
        clock = time.monotonic()
        try:
            yield event
        except Exception as exc:  # noqa: BLE001 - a failed event is a finding, not the end
            first = str(exc).splitlines()[0] if str(exc) else ""
            event.error = f"{type(exc).__name__}: {first}"
        finally:
            if event.seconds is None:
                event.seconds = time.monotonic() - clock
            self.timeline.record(event)

    def _kill_worker(self) -> None:
        for name, code, new in self.procs.replace_exited():
            with self._event("worker-exited") as event:
                event.detail = f"{name} had exited by itself (status {code}); started {new}"
        with self._event("worker-kill") as event:
            event.detail = self.procs.kill_worker(self.rng)

    def _restart_api(self) -> None:
        sig = next(self._api_signals)
        with self._event(f"api-{sig.name.lower()}") as event:
            event.detail = f"{sig.name} the API, then start it again"
            event.seconds = self.procs.restart_api(sig)

    def _failover(self) -> None:
        mode = next(self._failover_modes)
        cluster = self.procs.cluster
        with self._event(f"failover-{mode}") as event:
            if mode == "forced":
                old = cluster.master_port()
                new = cluster.failover(timeout_s=FAILOVER_TIMEOUT_S)
                event.detail = f"SENTINEL FAILOVER: master {old} -> {new}"
                return
            clock = time.monotonic()
            old = cluster.kill_master()
            event.detail = f"SIGKILL master {old}"
            new = cluster.wait_for_new_master(old, timeout_s=FAILOVER_TIMEOUT_S)
            event.detail += f"; {new} promoted after {time.monotonic() - clock:.1f} s"
            cluster.restart(old)
            event.detail += f"; {old} back as a replica"
