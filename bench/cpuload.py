"""How much CPU other processes took while a measurement ran.

The load average cannot tell: the benchmark's own processes dominate it. This
takes the machine's busy CPU time (/proc/stat) over the measurement and
subtracts what this process and its children used, so what remains is load
from elsewhere (a test suite, a build) that disturbed the numbers. Linux only;
elsewhere it reports None.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (sum(values) - idle) / _TICK


def _own_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + waited.ru_utime + waited.ru_stime
    pid = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if fields[1] == pid:  # ppid; utime stime cutime cstime follow at 11..14
            total += sum(int(v) for v in fields[11:15]) / _TICK
    return total


class ForeignLoad:
    """start(), then stop() -> average cores busy with other processes meanwhile."""

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    def start(self) -> None:
        busy = _machine_busy_s()
        self._start = None if busy is None else (time.monotonic(), busy, _own_s())

    def stop(self) -> float | None:
        if self._start is None:
            return None
        busy = _machine_busy_s()
        if busy is None:
            return None
        t0, busy0, own0 = self._start
        elapsed = time.monotonic() - t0
        foreign = (busy - busy0) - (_own_s() - own0)
        # Under a second, clock-tick granularity (1/100 s per core) swamps the result.
        return max(0.0, foreign / elapsed) if elapsed >= 1 else None
