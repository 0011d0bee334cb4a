"""Diffusers pipelines with random weights, built from a description of their architecture.

darkroom runs models it cannot download: the tiny ones of the tests and the local demo
(worker/tiny.py) and full-size SDXL and FLUX for the GPU benchmark (bench/gpu_models.py).
Each is the published classes built from configuration values with their own random
initialisation; only the sizes differ. So an architecture is data (class names and
their configurations) and this module is the one place that turns it into a pipeline.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Part:
    """One component: a diffusers class built from its configuration as keyword
    arguments, or a transformers model built from its configuration class."""

    cls: str
    config: dict[str, Any]
    library: Literal["diffusers", "transformers"] = "diffusers"


@dataclass(frozen=True)
class Architecture:
    """A pipeline class and the parts it is made of."""

    pipeline: str
    # The weighted components, built in this order: the order decides which random
    # numbers each draws from the seed, so reordering changes every model's weights.
    models: dict[str, Part]
    scheduler: Part
    tokenizers: dict[str, Callable[[], Any]]
    options: dict[str, Any] = field(default_factory=dict)  # the pipeline's other arguments


def build_pipeline(
    arch: Architecture, seed: int = 0, device: str = "cpu", dtype: Any = None
) -> Any:
    """`arch` with random weights drawn from `seed`, its parameters created directly on
    `device` in `dtype` (float32 unless given; "meta" builds shapes without memory)."""
    import torch

    torch.manual_seed(seed)
    with created_on(device, dtype or torch.float32), torch.no_grad():
        models = {name: _make(part) for name, part in arch.models.items()}
        # Schedulers and tokenizers hold no weights, but a scheduler's tables must be
        # real float32 numbers even when the models are half precision or on "meta".
        with created_on("cpu", torch.float32):
            scheduler = _make(arch.scheduler)
            tokenizers = {name: make() for name, make in arch.tokenizers.items()}
        pipeline = _library_class("diffusers", arch.pipeline)
        return pipeline(**models, scheduler=scheduler, **tokenizers, **arch.options)


def save_pipeline(arch: Architecture, path: Path, seed: int = 0) -> None:
    """Build `arch` on the CPU in float32 and save it where `from_pretrained` reads it."""
    build_pipeline(arch, seed).save_pretrained(path)


@contextmanager
def created_on(device: str, dtype: Any) -> Iterator[None]:
    """New tensors on `device` in `dtype`: a full-size model's parameters go straight to
    the GPU in half precision, with no float32 copy in host memory on the way."""
    import torch

    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old_dtype)


def _make(part: Part) -> Any:
    cls = _library_class(part.library, part.cls)
    if part.library == "transformers":
        return cls(cls.config_class(**part.config))
    return cls(**part.config)


def _library_class(library: str, name: str) -> Any:
    # By name, so a description is plain data that costs no torch import to declare.
    return getattr(importlib.import_module(library), name)
