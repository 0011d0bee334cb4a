"""Row 2: dynamic batching - a placeholder until workers batch jobs.

The hook: when a worker can run several compatible queued jobs (same model,
size, steps, mode) as one pipeline call, make `batching_available()` say so
(for example by checking the setting that turns it on) and fill in
`measure_batching`:

    1. start one worker with batching off; run_batch(...) N identical-shape jobs
       (bench.jobs.job_bodies) and note jobs/s, as bench.throughput does;
    2. the same with batching on (max batch 4, say);
    3. report the ratio on vs off, plus p50 submit-to-finished latency of both,
       since batching trades latency for throughput.

On CPU a tiny-sd batch saves little (its time is per image); the number that
matters is the GPU one, where batch 4 fills the device far better than batch 1
(`python bench/gpu.py` already reports images/s at batch 1 and 4).
"""

from __future__ import annotations

from bench.common import NA, Result, Settings
from bench.stack import Stack

NOT_IMPLEMENTED = "n/a (dynamic batching not implemented yet)"


def batching_available() -> bool:
    return False


def measure_batching(stack: Stack, cfg: Settings) -> Result:
    if not batching_available():
        return Result(
            name="batching",
            measured=NOT_IMPLEMENTED,
            target="(set with the feature)",
            status=NA,
            notes=["hook: bench/batching.py measure_batching()"],
        )
    raise NotImplementedError("batching_available() is True but no measurement is written")
