"""Row: one worker, several models (WORKER_MODELS; docs/scheduling.md, "Models").

Three tiny models of the same shape and different weights (mux-a, mux-b,
mux-c), an API of their own, jobs that name them in a random mix (seeded):

1. Budget for all three (WORKER_DEVICE_MEMORY unset: host memory on a CPU
   worker). One worker serves the three; rounds of the mix alternate with
   rounds of the same jobs all on mux-a, on the same worker. Target: the mix's
   throughput within 5 % of one model's, and no swap after the first round.
2. Budget for one (WORKER_DEVICE_MEMORY a model and a half): every model change
   is a load from disk. Swaps per round of the mix, from the worker's own
   darkroom_model_swaps_total; target: at most one per model per round (the
   scheduler drains the model it holds before it swaps). A FIFO across models
   would swap at nearly every job: its count, read off the submission order, is
   reported beside it.
3. Two workers, two hot models (mux-a, mux-b; budget for one each): after a
   warm-up round, rounds of the mix of the two. Target: zero swaps (each model
   settles on its own worker).
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.common import Result, Settings, median, verdict
from bench.jobs import BatchRun, job_bodies, run_batch_checked
from bench.stack import REPO_ROOT, BenchError, Stack
from darkroom.processes import Child
from darkroom.stack import free_port
from shared.constants import WORKER_KEY_PREFIX

MODELS = ["mux-a", "mux-b", "mux-c"]
THROUGHPUT_TOLERANCE = 0.05
# The budget-for-one worker's device memory, in model sizes: one fits, two do not.
ONE_MODEL_BUDGET = 1.5
MIX_SEED = 26


def measure_multiplex(stack: Stack, cfg: Settings) -> Result:
    registry, model_size = _registry(stack)
    env = {"MODEL_CONFIG": str(registry), "PRIMARY_MODEL": MODELS[0], "WORKER_MODEL": ""}
    api_url, api = stack.start_uvicorn("api-multiplex", "api.main:app", extra_env=env)
    rng = random.Random(MIX_SEED)
    try:
        all_three = _all_three(stack, cfg, api_url, env, rng)
        # Device memory for a model and a half: one fits, two do not.
        one_fits = {**env, "WORKER_DEVICE_MEMORY": str(int(model_size * ONE_MODEL_BUDGET))}
        one = _budget_one(stack, cfg, api_url, one_fits, rng)
        two = _two_workers(stack, cfg, api_url, one_fits, rng)
    finally:
        stack.stop_child(api)
    ratio = all_three["mix_jobs_per_s"] / all_three["one_model_jobs_per_s"]
    ok = (
        ratio >= 1 - THROUGHPUT_TOLERANCE
        and all_three["swaps_after_warmup"] == 0
        and max(one["swaps_per_round"]) <= len(MODELS)
        and two["swaps_after_warmup"] == 0
    )
    return Result(
        name="multiplex",
        measured=(
            f"all three resident: {ratio:.3f}x one model's jobs/s (busy "
            f"{all_three['mix_busy']:.3f} vs {all_three['one_model_busy']:.3f}), "
            f"{all_three['swaps_after_warmup']} swaps; budget one: "
            f"{sum(one['swaps_per_round'])} swaps / {one['jobs']} jobs "
            f"(max {max(one['swaps_per_round'])} a round of {cfg.jobs}; FIFO "
            f"{median(one['fifo_swaps_per_round']):.0f}); two workers, two models: "
            f"{two['swaps_after_warmup']} swaps after warm-up"
        ),
        target=(
            f">= {1 - THROUGHPUT_TOLERANCE:.2f}x; <= {len(MODELS)} swaps a round "
            "(one per model); 0 swaps"
        ),
        status=verdict(ok),
        details={"all_three": all_three, "budget_one": one, "two_workers": two},
        notes=[
            f"{len(MODELS)} tiny models of {model_size / 1e6:.1f} MB each (weights), "
            f"{cfg.jobs} jobs a round in a random mix (seed {MIX_SEED}), "
            f"{cfg.repeats} measured rounds; TORCH_THREADS={cfg.queue_threads}",
            f"budget one: WORKER_DEVICE_MEMORY={int(model_size * ONE_MODEL_BUDGET)} bytes; "
            f"jobs/s {one['mix_jobs_per_s']:.1f} mixed vs {one['one_model_jobs_per_s']:.1f} "
            "on one model (each swap is a load from disk)",
        ],
    )


def _all_three(
    stack: Stack, cfg: Settings, api_url: str, env: dict[str, str], rng: random.Random
) -> dict[str, Any]:
    _, ports = _workers(stack, cfg, env, 1, MODELS)
    try:
        run_batch_checked(api_url, _mix(cfg.jobs, MODELS, rng, offset=0))  # loads all three
        start = _swaps(ports)
        one: list[BatchRun] = []
        mix: list[BatchRun] = []
        for i in range(cfg.repeats):
            offset = (i + 1) * 10_000
            bodies = job_bodies(cfg.jobs, offset=offset)
            one.append(run_batch_checked(api_url, [{**b, "model": MODELS[0]} for b in bodies]))
            mix.append(run_batch_checked(api_url, _mix(cfg.jobs, MODELS, rng, offset=offset)))
        swaps = _swaps(ports) - start
    finally:
        _stop(stack)
    return {
        "one_model_jobs_per_s": median([r.jobs_per_s for r in one]),
        "mix_jobs_per_s": median([r.jobs_per_s for r in mix]),
        # The share of the makespan inside pipeline calls: what the worker lost to
        # anything else (scheduling, switching models), whatever the CPU's speed did.
        "one_model_busy": median([r.busy_fraction for r in one]),
        "mix_busy": median([r.busy_fraction for r in mix]),
        "swaps_after_warmup": swaps,
        "rounds": {"one": [r.summary() for r in one], "mix": [r.summary() for r in mix]},
    }


def _budget_one(
    stack: Stack, cfg: Settings, api_url: str, one_fits: dict[str, str], rng: random.Random
) -> dict[str, Any]:
    _, ports = _workers(stack, cfg, one_fits, 1, MODELS)
    swaps: list[int] = []
    fifo: list[int] = []
    mix: list[BatchRun] = []
    one: list[BatchRun] = []
    try:
        for i in range(cfg.repeats):
            bodies = job_bodies(cfg.jobs, offset=(i + 1) * 10_000)
            # The worker holds mux-a after this round: the mix starts from there.
            one.append(run_batch_checked(api_url, [{**b, "model": MODELS[0]} for b in bodies]))
            jobs = _mix(cfg.jobs, MODELS, rng, offset=(i + 1) * 10_000)
            before = _swaps(ports)
            mix.append(run_batch_checked(api_url, jobs))
            swaps.append(_swaps(ports) - before)
            order = [MODELS[0], *(j["model"] for j in jobs)]
            fifo.append(sum(a != b for a, b in itertools.pairwise(order)))
    finally:
        _stop(stack)
    return {
        "jobs": cfg.jobs * cfg.repeats,
        "swaps_per_round": swaps,
        "fifo_swaps_per_round": fifo,
        "mix_jobs_per_s": median([r.jobs_per_s for r in mix]),
        "one_model_jobs_per_s": median([r.jobs_per_s for r in one]),
        "rounds": [r.summary() for r in mix],
    }


def _two_workers(
    stack: Stack, cfg: Settings, api_url: str, one_fits: dict[str, str], rng: random.Random
) -> dict[str, Any]:
    hot = MODELS[:2]
    _, ports = _workers(stack, cfg, one_fits, 2, hot)
    runs: list[BatchRun] = []
    try:
        run_batch_checked(api_url, _mix(cfg.jobs, hot, rng, offset=0))  # warm-up: they settle
        start = _swaps(ports)
        for i in range(cfg.repeats):
            jobs = _mix(cfg.jobs, hot, rng, offset=(i + 1) * 10_000)
            runs.append(run_batch_checked(api_url, jobs))
        swaps = _swaps(ports) - start
        held = _held(stack)
    finally:
        _stop(stack)
    return {
        "swaps_after_warmup": swaps,
        "jobs_per_s": median([r.jobs_per_s for r in runs]),
        "held_at_end": held,
        "rounds": [r.summary() for r in runs],
    }


def _mix(count: int, models: list[str], rng: random.Random, offset: int) -> list[dict[str, Any]]:
    return [{**body, "model": rng.choice(models)} for body in job_bodies(count, offset=offset)]


def _workers(
    stack: Stack, cfg: Settings, env: dict[str, str], count: int, models: list[str]
) -> tuple[list[Child], list[int]]:
    ports = [free_port() for _ in range(count)]
    started = [
        stack.spawn_worker(
            cfg.queue_threads,
            {**env, "WORKER_MODELS": ",".join(models), "WORKER_METRICS_PORT": str(port)},
        )
        for port in ports
    ]
    for worker in started:
        stack.wait_ready(worker)
    return started, ports


def _stop(stack: Stack) -> None:
    stack.stop_workers()
    stack.flush()


def _swaps(ports: list[int]) -> int:
    """Swaps so far, summed over the workers' own metrics."""
    total = 0.0
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            if family.name == "darkroom_model_swaps":
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return round(total)


def _held(stack: Stack) -> dict[str, Any]:
    """What each live worker holds, and where, from its record."""
    with stack.redis() as client:
        records = [json.loads(client.get(k) or "{}") for k in client.keys(WORKER_KEY_PREFIX + "*")]
    return {r.get("name"): r.get("models") for r in records if r}


def _registry(stack: Stack) -> tuple[Path, int]:
    """A registry of the three tiny models (built once, seeds 1 to 3), and the bytes
    of one model's weights."""
    root = stack.workdir / "multiplex"
    code = (
        "import sys; from pathlib import Path; from worker.tiny import ensure_tiny_sd; "
        f"root = Path({str(root)!r}); "
        f"[print(ensure_tiny_sd(root / n, seed=i)) for i, n in enumerate({MODELS!r}, start=1)]"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"could not build the multiplex models:\n{done.stderr[-3000:]}")
    size = sum(f.stat().st_size for f in (root / MODELS[0]).rglob("*.safetensors"))
    params = {"default_steps": 2, "default_size": [64, 64], "max_size": [64, 64]}
    raw = {
        "models": {
            name: {"id": str(root / name), "type": "sd", "params": params} for name in MODELS
        },
        "runtime": {"primary_model": MODELS[0], "fallback_models": []},
    }
    path = stack.workdir / "model_config.multiplex.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, size
