"""`python bench/gpu.py --swap`: how long a model swap takes on this GPU.

A worker serving several models (WORKER_MODELS) moves the least recently used
one to pinned host memory when its device is full (WORKER_HOST_MEMORY, the warm
tier) and back when a job needs it. For each full-size architecture (random
weights, the workers' dtype), with the worker's own code (worker.models.
move_modules):

  GB          the weights moved (every component: denoiser, text encoders, VAE)
  to host s   device -> pinned host memory, once (an eviction)
  to GPU s    pinned host memory -> device, median of --repeats (a swap in)
  GB/s        GB over to GPU s

Targets (issue "More models than GPUs", on an H100): SDXL at most 0.5 s, FLUX
at most 1.5 s from pinned host memory.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.gpu_models import ModelSpec, build

TARGET_S = {"sdxl": 0.5, "flux-schnell": 1.5}


@dataclass
class SwapRow:
    model: str
    dtype: str
    gigabytes: float
    to_host_s: float
    to_device_s: float
    target_s: float | None
    error: str | None = None

    @property
    def gb_per_s(self) -> float:
        return self.gigabytes / self.to_device_s if self.to_device_s else 0.0


def measure_swap(spec: ModelSpec, device: str, tiny: bool, repeats: int) -> SwapRow:
    import torch

    from worker.models import move_modules

    dtype = getattr(torch, spec.dtype_name)
    target = None if tiny else TARGET_S.get(spec.name)  # the targets are for full size
    try:
        pipe = build(spec, device, dtype, tiny)
        modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
        size = sum(
            t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()]
        )
        # Pinned memory needs CUDA; on the CPU smoke run the moves are plain copies.
        pin = device == "cuda"
        to_host = _timed(lambda: move_modules(modules, "cpu", pin=pin))
        back: list[float] = []
        for i in range(repeats):
            back.append(_timed(lambda: move_modules(modules, device)))
            if i < repeats - 1:
                move_modules(modules, "cpu", pin=pin)
        return SwapRow(
            spec.name, spec.dtype_name, size / 1e9, to_host, statistics.median(back), target
        )
    except Exception as exc:  # noqa: BLE001 - a failed row says why; the next still runs
        return SwapRow(spec.name, spec.dtype_name, 0, 0, 0, target, f"{type(exc).__name__}: {exc}")
    finally:
        pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def swap_table(rows: list[SwapRow]) -> str:
    lines = [
        "| model | dtype | GB | to host s | to GPU s | GB/s | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | {r.dtype} | error: {r.error} | | | | |")
            continue
        verdict = (
            ""
            if r.target_s is None
            else (f"<= {r.target_s} s: {'PASS' if r.to_device_s <= r.target_s else 'MISS'}")
        )
        lines.append(
            f"| {r.model} | {r.dtype} | {r.gigabytes:.2f} | {r.to_host_s:.3f} | "
            f"{r.to_device_s:.3f} | {r.gb_per_s:.1f} | {verdict} |"
        )
    return "\n".join(lines)
