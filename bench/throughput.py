"""Rows 1 and 3: queue overhead (stack vs plain loop) and scaling (1 vs 2 workers)."""

from __future__ import annotations

import re
from typing import Any

from bench.common import NA, DirectRunner, Result, Settings, cpu_count, median, verdict
from bench.jobs import HEIGHT, STEPS, WIDTH, job_bodies, run_batch_checked
from bench.stack import Stack

QUEUE_TARGET = 0.97
BUSY_TARGET = 0.95
SCALING_TARGET = 1.8
# Jobs whose compute dominates their per-job overhead (about 0.25 s on one core).
HEAVY_SIZE = 128
HEAVY_STEPS = 15


def measure_queue(stack: Stack, cfg: Settings) -> Result:
    """N jobs through API + Redis + one worker vs the same N jobs in a plain loop.

    After one unmeasured round of each, the two alternate round by round
    (direct, stack, direct, stack, ...) so a change in the machine's load hits
    both sides alike; medians are reported.
    Both sides run torch with the same thread count (TORCH_THREADS).
    """
    threads = cfg.queue_threads
    bodies = job_bodies(cfg.jobs)
    direct_s: list[float] = []
    stack_runs = []
    with DirectRunner(stack, threads, cfg.warmup_jobs) as direct:
        (worker,) = stack.start_workers(1, threads)
        try:
            # One unmeasured round of each side first: the stack's first jobs (and a
            # fresh process's) run slower while caches, allocator and CPU clocks settle.
            direct.run(cfg.jobs)
            run_batch_checked(stack.api_url, job_bodies(cfg.jobs, offset=100_000))
            for _ in range(cfg.repeats):
                direct_s.append(direct.run(cfg.jobs))
                stack_runs.append(run_batch_checked(stack.api_url, bodies))
        finally:
            stack.stop_workers()
            stack.flush()
    direct_rate = cfg.jobs / median(direct_s)
    stack_rate = median([r.jobs_per_s for r in stack_runs])
    ratio = stack_rate / direct_rate
    busy = median([r.busy_fraction for r in stack_runs])
    per_job_ms = (1 / stack_rate - 1 / direct_rate) * 1000
    # Celery logs each task's run time: the part of the overhead inside the task
    # (claim, progress, storage, status writes) vs between tasks (ack, next message).
    task_s = celery_task_seconds(worker.log_text())
    warm = cfg.jobs  # the unmeasured round
    task_ms = median(task_s[warm:]) * 1000 if len(task_s) > warm else None
    notes = [
        f"tiny-sd {WIDTH}x{HEIGHT}, {STEPS} steps, CFG on, {cfg.jobs} jobs x {cfg.repeats} "
        f"rounds (medians); TORCH_THREADS={threads} for the worker and the direct loop; "
        "stack time = first POST to the last finished_at"
    ]
    if task_ms is not None:
        notes.append(
            f"per job: {1000 / direct_rate:.1f} ms in the direct loop, {task_ms:.1f} ms as a "
            f"Celery task (median, from the worker log), {1000 / stack_rate:.1f} ms of makespan"
        )
    return Result(
        name="queue",
        measured=(
            f"stack {stack_rate:.1f} jobs/s vs direct {direct_rate:.1f} jobs/s "
            f"= {ratio:.3f} ({per_job_ms:+.1f} ms/job); busy fraction {busy:.3f}"
        ),
        target=f"efficiency >= {QUEUE_TARGET}, busy >= {BUSY_TARGET}",
        status=verdict(ratio >= QUEUE_TARGET and busy >= BUSY_TARGET),
        details={
            "jobs": cfg.jobs,
            "busy_fraction": round(busy, 4),
            "torch_threads": threads,
            "stack_jobs_per_s": round(stack_rate, 3),
            "direct_jobs_per_s": round(direct_rate, 3),
            "ratio": round(ratio, 4),
            "overhead_ms_per_job": round(per_job_ms, 2),
            "direct_rounds_s": [round(s, 4) for s in direct_s],
            # Each stack round over the direct round just before it: drift-free, for reference.
            "paired_ratios": [
                round(r.jobs_per_s * d / cfg.jobs, 4)
                for r, d in zip(stack_runs, direct_s, strict=True)
            ],
            "stack_rounds": [r.summary() for r in stack_runs],
            "direct_load_s": [round(s, 3) for s in direct.ready["load_s"]],
            "direct_ms_per_job": round(1000 / direct_rate, 2),
            "worker_task_ms_median": None if task_ms is None else round(task_ms, 2),
        },
        notes=notes,
    )


def celery_task_seconds(log: str) -> list[float]:
    """Run times from the worker log's "Task ... succeeded in 0.0312s" lines, in order."""
    return [float(x) for x in re.findall(r"Task \S+ succeeded in ([\d.]+)s", log)]


def measure_scaling(stack: Stack, cfg: Settings) -> Result:
    """Throughput of the same N jobs with one worker, then with two (TORCH_THREADS=1 each).

    Twice: with tiny-sd's own 64x64, 2-step jobs (about 30 ms: the per-job cost
    of API, Redis and poller, which share the cores, weighs in) and with
    HEAVY_SIZE/HEAVY_STEPS jobs (about 0.25 s: what adding a worker buys when
    compute dominates, as it does on any real model). The verdict is the tiny one's.
    """
    rates: dict[int, list[float]] = {}
    rounds: dict[int, list[dict[str, Any]]] = {}
    heavy: dict[int, float] = {}
    heavy_jobs = max(8, cfg.jobs // 4)
    for workers in (1, 2):
        stack.start_workers(workers, torch_threads=1)
        try:
            # An unmeasured round first: every worker gets warm jobs, not just the fastest.
            run_batch_checked(stack.api_url, job_bodies(cfg.jobs, offset=100_000))
            runs = [
                run_batch_checked(stack.api_url, job_bodies(cfg.jobs)) for _ in range(cfg.repeats)
            ]
            heavy_bodies = job_bodies(heavy_jobs, size=HEAVY_SIZE, steps=HEAVY_STEPS)
            heavy[workers] = max(
                run_batch_checked(stack.api_url, heavy_bodies).jobs_per_s for _ in range(2)
            )
        finally:
            stack.stop_workers()
            stack.flush()
        rates[workers] = [r.jobs_per_s for r in runs]
        rounds[workers] = [r.summary() for r in runs]
    one, two = median(rates[1]), median(rates[2])
    ratio = two / one
    heavy_ratio = heavy[2] / heavy[1]
    cores = cpu_count()
    ceiling = _plain_loop_scaling(stack, cfg)
    notes = [
        f"TORCH_THREADS=1 per worker in both cases; the API, Redis and the polling client "
        f"share the same {cores} cores",
        f"the machine's own ceiling: two plain loops (bench/direct.py, 1 thread each) side by "
        f"side run {ceiling:.2f}x one loop's jobs/s",
        f"heavier jobs ({HEAVY_SIZE}x{HEAVY_SIZE}, {HEAVY_STEPS} steps, {heavy_jobs} per round, "
        f"best of 2): 1 worker {heavy[1]:.2f} jobs/s, 2 workers {heavy[2]:.2f} jobs/s "
        f"= {heavy_ratio:.2f}x",
    ]
    if cores < 2:
        notes.append("fewer than 2 cores: the target does not apply")
    return Result(
        name="scaling",
        measured=f"1 worker {one:.1f} jobs/s, 2 workers {two:.1f} jobs/s = {ratio:.2f}x",
        target=f">= {SCALING_TARGET}x",
        status=verdict(ratio >= SCALING_TARGET) if cores >= 2 else NA,
        details={
            "jobs": cfg.jobs,
            "torch_threads_per_worker": 1,
            "cores": cores,
            "one_worker_jobs_per_s": round(one, 3),
            "two_workers_jobs_per_s": round(two, 3),
            "ratio": round(ratio, 4),
            "plain_loops_2_vs_1": round(ceiling, 4),
            "heavy_jobs": {"size": HEAVY_SIZE, "steps": HEAVY_STEPS, "jobs": heavy_jobs},
            "heavy_jobs_per_s": {str(k): round(v, 3) for k, v in heavy.items()},
            "heavy_ratio": round(heavy_ratio, 4),
            "rounds": {str(k): v for k, v in rounds.items()},
        },
        notes=notes,
    )


def _plain_loop_scaling(stack: Stack, cfg: Settings) -> float:
    """Jobs/s of two direct loops running at once over one alone: the hardware's 2x."""
    alone, both = [], []
    with (
        DirectRunner(stack, 1, cfg.warmup_jobs) as first,
        DirectRunner(stack, 1, cfg.warmup_jobs) as second,
    ):
        for runner in (first, second):  # an unmeasured round each, as for the workers
            runner.start_run(cfg.jobs)
        for runner in (first, second):
            runner.finish_run()
        for _ in range(cfg.repeats):
            alone.append(cfg.jobs / first.run(cfg.jobs))
            first.start_run(cfg.jobs)
            second.start_run(cfg.jobs)
            slowest = max(first.finish_run(), second.finish_run())
            both.append(2 * cfg.jobs / slowest)
    return median(both) / median(alone)
