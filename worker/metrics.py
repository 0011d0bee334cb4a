"""The GPU worker's Prometheus metrics (worker.metrics_server serves them).

Labels hold registry model names, statuses and devices: never a job id, a
prompt or a path, so that the number of series stays bounded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# Counters and histograms without a `_created` series each: half the series, and
# Prometheus does not use them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Wait in the queue: from a second to hours, when a fleet is short of GPUs.
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# A job's run and its pipeline call: from a tiny model's tens of milliseconds to
# a large model's minutes.
RUN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 900)
LOAD_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)

JOBS_FINISHED = Counter(
    "darkroom_jobs_finished",
    "Jobs this worker took to a terminal status.",
    ["model", "status"],
)
QUEUE_WAIT = Histogram(
    "darkroom_job_queue_wait_seconds",
    "From a job's creation to the start of its run.",
    ["model"],
    buckets=WAIT_BUCKETS,
)
RUN = Histogram(
    "darkroom_job_run_seconds",
    "From a job's start to its terminal status.",
    ["model"],
    buckets=RUN_BUCKETS,
)
INFERENCE = Histogram(
    "darkroom_job_inference_seconds",
    "Inside the pipeline call (a batched call: its whole time, once).",
    ["model"],
    buckets=RUN_BUCKETS,
)
BATCH_SIZE = Histogram(
    "darkroom_batch_size",
    "Jobs that shared one pipeline call.",
    ["model"],
    buckets=BATCH_BUCKETS,
)
PREVIEWS = Counter(
    "darkroom_previews",
    "Live previews made (one per job and step; only while someone watches the job).",
    ["model"],
)
PREVIEW_SECONDS = Histogram(
    "darkroom_preview_seconds",
    "Making one preview: decoding the latents and encoding WebP (all images of a call).",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
MODEL_LOAD = Histogram(
    "darkroom_model_load_seconds",
    "Loading a model to the device, success or failure; source: host (the warm tier) or disk.",
    ["model", "source"],
    buckets=LOAD_BUCKETS,
)
# A worker serving several models (WORKER_MODELS): loads onto the device after it
# started, and what it holds where.
MODEL_SWAPS = Counter(
    "darkroom_model_swaps",
    "Models loaded onto the device after the worker started (from host memory or disk).",
    ["model"],
)
MODELS_RESIDENT = Gauge(
    "darkroom_models_resident",
    "1 for each model the worker holds, by tier: device, or host (the warm tier).",
    ["model", "tier"],
    multiprocess_mode="livesum",
)
# One series per worker process in a pool (liveall: with its pid, dropped when
# the process dies).
WORKER_BUSY = Gauge(
    "darkroom_worker_busy",
    "1 while the worker runs a job, else 0.",
    multiprocess_mode="liveall",
)
# Each process of a pool has its own device, so summing the live processes'
# values per device and kind is exact.
GPU_MEMORY = Gauge(
    "darkroom_gpu_memory_bytes",
    "CUDA memory of the worker's device: allocated, reserved, peak allocated.",
    ["device", "kind"],
    multiprocess_mode="livesum",
)

# Storage outages (worker.storing): images waiting in the spool for storage to
# answer (summed over a pool's live processes), and the failed tries to store a
# job's images that are retried later.
SPOOL_BYTES = Gauge(
    "darkroom_storage_spool_bytes",
    "Bytes of images in the worker's spool, waiting for storage to answer.",
    multiprocess_mode="livesum",
)
STORAGE_RETRIES = Counter(
    "darkroom_storage_retries",
    "Failed tries to store a job's images, to be tried again.",
)


def observe_model_load(model: str, seconds: float, source: str = "disk") -> None:
    MODEL_LOAD.labels(model, source).observe(seconds)


_resident_labels: set[tuple[str, str]] = set()


def set_models_resident(tiers: Mapping[str, str]) -> None:
    """What the worker holds now: one series per model and tier, 0 where it left."""
    for model, tier in list(_resident_labels):
        if tiers.get(model) != tier:
            MODELS_RESIDENT.labels(model, tier).set(0)
    for model, tier in tiers.items():
        MODELS_RESIDENT.labels(model, tier).set(1)
        _resident_labels.add((model, tier))


def in_pool_child() -> bool:
    """Whether a pool parent serves this process's metrics (it set the directory)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def start_counting(model: str) -> None:
    """Expose every status of `model`'s counters at 0 from the start, so that the
    first failure after a restart is an increase rate() sees, not a new series."""
    for status in ("succeeded", "failed", "canceled"):
        JOBS_FINISHED.labels(model, status)


def record_gpu_memory(device: str, cuda: Any | None = None) -> None:
    """Set the GPU memory gauges from torch.cuda (`cuda`: a stand-in in tests)."""
    if device.startswith("cuda"):
        set_gpu_memory(device, gpu_memory_stats(cuda))


def gpu_memory_stats(cuda: Any | None = None) -> dict[str, int]:
    """This process's CUDA memory: allocated, reserved and peak allocated bytes."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    return {
        "allocated": cuda.memory_allocated(),
        "reserved": cuda.memory_reserved(),
        "peak": cuda.max_memory_allocated(),
    }


def model_gpu_memory(model: Any) -> dict[str, int] | None:
    """This process's CUDA memory if `model` (worker.loader.LoadedModel) is on CUDA."""
    if model is None or not model.plan.is_cuda:
        return None
    return gpu_memory_stats()


def set_gpu_memory(device: str, stats: dict[str, int] | None) -> None:
    """Set the GPU memory gauges of `device` (stats measured where the model is)."""
    if not stats:
        return
    label = physical_device(device)
    for kind, value in stats.items():
        GPU_MEMORY.labels(label, kind).set(value)


def physical_device(device: str) -> str:
    """The GPU as the host numbers it: a pool child sees its GPU as cuda:0 through
    CUDA_VISIBLE_DEVICES, which names the real one."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if device.startswith("cuda") and visible and "," not in visible:
        return f"cuda:{visible}"
    return device
