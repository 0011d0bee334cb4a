"""Choose where a worker runs its model: CUDA in half precision where present, else CPU fp32."""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch

from shared.registry import ModelEntry

# FLUX and SD3 are trained in bf16 and overflow in fp16; the UNet families are
# fine (and faster on older GPUs) in fp16.
_BF16_TYPES = {"flux", "sd3"}
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class DevicePlan:
    device: str
    dtype: torch.dtype

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


def plan_device(preference: str, entry: ModelEntry) -> DevicePlan:
    use_cuda = preference == "cuda" or (preference == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return DevicePlan("cpu", torch.float32)
    if entry.torch_dtype != "auto":
        return DevicePlan("cuda", _DTYPES[entry.torch_dtype])
    dtype = torch.bfloat16 if entry.type in _BF16_TYPES else torch.float16
    return DevicePlan("cuda", dtype)


def free_memory() -> None:
    """Return cached GPU memory after a failure (an OOM leaves the allocator full)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
