"""Row 2: dynamic batching - the same burst of jobs with batching off, then on.

One worker (TORCH_THREADS=1) serves tiny-sd. Off: the registry as shipped
(max_batch_size 1). On: a copy of the registry with tiny-sd's
max_batch_size = BATCH_SIZE and batch_window = BATCH_WINDOW_S. The load is the
same for both: N identical-shape jobs submitted at once (bench.jobs), an
unmeasured round first, then `repeats` rounds; medians are reported. Batching
trades latency for throughput, so the p50 created -> finished time of a job is
reported beside jobs/s, and the notes add what the window costs a lone job
sent to an idle worker.

On CPU a batch saves the per-call overhead of the pipeline (Python, the
scheduler, launching every op once instead of N times), not arithmetic: the
UNet's work grows with the batch. On a GPU a batch of 4 fills the device far
better than 4 calls of 1 (`python bench/gpu.py` reports images/s at batch 1
and 4).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.common import Result, Settings, median, verdict
from bench.jobs import BatchRun, job_bodies, run_batch_checked
from bench.stack import MODEL, REPO_ROOT, Stack

BATCH_SIZE = 4
BATCH_WINDOW_S = 0.05
# Batching must not cost throughput when the queue is full.
TARGET = 1.0
# Jobs sent one at a time to an idle worker: what the window costs a lone job.
LONE_JOBS = 8


def measure_batching(stack: Stack, cfg: Settings) -> Result:
    bodies = job_bodies(cfg.jobs)
    registry = _batching_registry(stack)
    runs: dict[str, list[BatchRun]] = {}
    lone: dict[str, list[float]] = {}
    for mode, extra_env in (("off", None), ("on", {"MODEL_CONFIG": str(registry)})):
        stack.start_workers(1, torch_threads=cfg.queue_threads, extra_env=extra_env)
        try:
            run_batch_checked(stack.api_url, job_bodies(cfg.jobs, offset=100_000))
            runs[mode] = [run_batch_checked(stack.api_url, bodies) for _ in range(cfg.repeats)]
            lone[mode] = [
                median(run_batch_checked(stack.api_url, [body]).latencies_s) * 1000
                for body in job_bodies(LONE_JOBS, offset=300_000)
            ]
        finally:
            stack.stop_workers()
            stack.flush()
    rate = {mode: median([r.jobs_per_s for r in rounds]) for mode, rounds in runs.items()}
    p50 = {
        mode: median([median(r.latencies_s) for r in rounds]) * 1000
        for mode, rounds in runs.items()
    }
    ratio = rate["on"] / rate["off"]
    return Result(
        name="batching",
        measured=(
            f"off {rate['off']:.1f} jobs/s, on (max {BATCH_SIZE}) {rate['on']:.1f} jobs/s "
            f"= {ratio:.2f}x; p50 job latency {p50['off']:.0f} -> {p50['on']:.0f} ms"
        ),
        target=f"> {TARGET:g}x at a full queue",
        status=verdict(ratio > TARGET),
        details={
            "jobs": cfg.jobs,
            "torch_threads": cfg.queue_threads,
            "max_batch_size": BATCH_SIZE,
            "batch_window_s": BATCH_WINDOW_S,
            "off_jobs_per_s": round(rate["off"], 3),
            "on_jobs_per_s": round(rate["on"], 3),
            "ratio": round(ratio, 4),
            "off_p50_latency_ms": round(p50["off"], 2),
            "on_p50_latency_ms": round(p50["on"], 2),
            "lone_job_p50_ms": {mode: round(median(v), 2) for mode, v in lone.items()},
            "rounds": {mode: [r.summary() for r in rounds] for mode, rounds in runs.items()},
        },
        notes=[
            f"{MODEL}, one worker, TORCH_THREADS={cfg.queue_threads}; {cfg.jobs} jobs submitted "
            f"at once x {cfg.repeats} rounds (medians); on = max_batch_size {BATCH_SIZE}, "
            f"batch_window {BATCH_WINDOW_S:g} s; latency = created_at -> finished_at per job",
            f"a lone job on an idle worker (p50 of {LONE_JOBS}, one at a time): "
            f"{median(lone['off']):.0f} ms off, {median(lone['on']):.0f} ms on "
            "(it waits the window for companions that never come)",
        ],
    )


def _batching_registry(stack: Stack) -> Path:
    """The shipped registry with batching turned on for the benchmark's model."""
    raw = yaml.safe_load((REPO_ROOT / "model_config.yaml").read_text())
    entry = raw["models"][MODEL]
    entry.update(max_batch_size=BATCH_SIZE, batch_window=BATCH_WINDOW_S)
    entry["id"] = str(stack.model_path)  # the copy lives elsewhere: no relative id
    path = stack.workdir / "model_config.batching.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
