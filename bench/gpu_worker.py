"""`python bench/gpu.py --worker`: the same architectures through a real darkroom worker.

For each model: build it with random weights (bench/gpu.py's builders), save it
where a registry entry points (the worker loads it through from_pretrained, as
it would a hub model), time the plain loop in this process (one image per
pipeline call, PNG encode included, as a worker does), free it. Then start
Redis, the API and one Celery worker serving that entry on the same device,
submit N jobs through the API and wait for them all:

  images/s    N over the makespan (first POST to the last finished_at)
  s/image     the makespan over N, next to the plain loop's seconds per image
  busy        the sum of the jobs' timings.inference_s over the makespan: the
              share of the time the device ran a pipeline call
  efficiency  the plain loop's s/image over the worker's

Memory variants (--worker-memory, each a worker of its own): `default`
(model_config.yaml's runtime.memory), `offload` (enable_cpu_offload) and
`8bit` (use_8bit: the denoiser in 8-bit, CUDA only).
"""

from __future__ import annotations

import gc
import io
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.gpu_models import PROMPT, ModelSpec, build
from bench.jobs import run_batch_checked
from bench.stack import Stack

MEMORY_VARIANTS: dict[str, dict[str, bool]] = {
    "default": {},
    "offload": {"enable_cpu_offload": True},
    "8bit": {"use_8bit": True},
}
# The registry type of each bench/gpu.py model, and what its entry says.
_TYPES = {"sdxl": "sdxl", "flux-schnell": "flux"}


@dataclass
class WorkerRow:
    model: str
    memory: str
    size: int
    steps: int
    jobs: int
    plain_s_per_image: float | None = None
    worker_s_per_image: float | None = None
    images_per_s: float | None = None
    busy_fraction: float | None = None
    efficiency: float | None = None
    worker_load_s: float | None = None
    error: str | None = None


def measure_worker_rows(
    spec: ModelSpec, device: str, size: int, steps: int, jobs: int, memory: list[str]
) -> list[WorkerRow]:
    """One row per memory variant of `spec`, all against one plain-loop measurement."""
    import torch

    dtype = torch.float32 if device == "cpu" else getattr(torch, spec.dtype_name)
    rows: list[WorkerRow] = []
    with tempfile.TemporaryDirectory(prefix="darkroom-gpu-worker-") as tmp:
        workdir = Path(tmp)
        model_dir = workdir / "models" / spec.name
        plain = _save_and_time_plain_loop(spec, device, dtype, model_dir, size, steps)
        for variant in memory:
            row = WorkerRow(spec.name, variant, size, steps, jobs, plain_s_per_image=plain)
            try:
                _measure_through_worker(row, spec, model_dir, workdir / variant, device)
            except Exception as exc:  # noqa: BLE001 -- a row that failed says why; the next runs
                row.error = f"{type(exc).__name__}: {exc}"[-2000:]
            rows.append(row)
    return rows


def _save_and_time_plain_loop(
    spec: ModelSpec, device: str, dtype: Any, model_dir: Path, size: int, steps: int
) -> float:
    """Build, save, then the median s/image of three warm calls (+ PNG encode)."""
    import torch

    pipe = build(spec, device, dtype, tiny=device == "cpu")
    pipe.save_pretrained(model_dir)
    kwargs = {**spec.call_kwargs, "num_inference_steps": steps, "height": size, "width": size}
    times = []
    for seed in range(4):  # the first call warms up (allocator, kernels): not counted
        generator = torch.Generator("cpu").manual_seed(seed)
        start = time.perf_counter()
        image = pipe(prompt=PROMPT, generator=generator, **kwargs).images[0]
        image.save(io.BytesIO(), format="PNG")
        times.append(time.perf_counter() - start)
    del pipe
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(times[1:])


def _measure_through_worker(
    row: WorkerRow, spec: ModelSpec, model_dir: Path, workdir: Path, device: str
) -> None:
    import torch

    workdir.mkdir(parents=True)
    registry = write_registry(workdir / "models.yaml", spec, model_dir, row)
    overrides = {
        "MODEL_CONFIG": str(registry),
        "PRIMARY_MODEL": spec.name,
        "WORKER_MODEL": spec.name,
        "DEVICE": device,
    }
    with Stack(workdir, env_overrides=overrides) as stack:
        began = time.monotonic()
        # The plain loop's torch threads (this process's), for a like-for-like CPU run.
        stack.start_workers(1, torch_threads=torch.get_num_threads())
        row.worker_load_s = round(time.monotonic() - began, 2)
        run_batch_checked(stack.api_url, _bodies(spec, row, 2, offset=1000))  # warm-up
        run = run_batch_checked(stack.api_url, _bodies(spec, row, row.jobs))
    row.images_per_s = run.jobs_per_s
    row.worker_s_per_image = 1 / run.jobs_per_s
    row.busy_fraction = run.busy_fraction
    if row.plain_s_per_image:
        row.efficiency = row.plain_s_per_image / row.worker_s_per_image


def write_registry(path: Path, spec: ModelSpec, model_dir: Path, row: WorkerRow) -> Path:
    """A registry of one entry: the saved model, its size and steps; `row`'s memory toggles."""
    negative = spec.call_kwargs.get("negative_prompt", "")
    entry = {
        "id": str(model_dir),
        "type": _TYPES[spec.name],
        "torch_dtype": spec.dtype_name,
        "params": {
            "default_steps": row.steps,
            "max_steps": max(row.steps, 50),
            "guidance_scale": spec.call_kwargs.get("guidance_scale", 0.0),
            "use_negative_prompt": bool(negative),
            "negative_prompt": negative,
            "max_tokens": spec.call_kwargs.get("max_sequence_length", 77),
            "default_size": [row.size, row.size],
            "max_size": [row.size, row.size],
        },
    }
    memory = {"enable_vae_slicing": True, **MEMORY_VARIANTS[row.memory]}
    document = {
        "models": {spec.name: entry},
        "runtime": {"primary_model": spec.name, "memory": memory},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _bodies(spec: ModelSpec, row: WorkerRow, count: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "prompt": PROMPT,
            "model": spec.name,
            "seed": offset + i,
            "width": row.size,
            "height": row.size,
            "steps": row.steps,
        }
        for i in range(count)
    ]


def worker_table(rows: list[WorkerRow]) -> str:
    header = (
        "model          memory   size  steps  jobs  plain s/img  worker s/img  images/s  "
        "busy   efficiency  load s"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r.error:
            lines.append(f"{r.model:<14} {r.memory:<8} error: {r.error[-300:]}")
            continue
        lines.append(
            f"{r.model:<14} {r.memory:<8} {r.size:>4}  {r.steps:>5}  {r.jobs:>4}  "
            f"{_num(r.plain_s_per_image):>11}  {_num(r.worker_s_per_image):>12}  "
            f"{_num(r.images_per_s):>8}  {_num(r.busy_fraction):>5}  "
            f"{_num(r.efficiency):>10}  {_num(r.worker_load_s):>6}"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
