"""Load a registry model into diffusers pipelines, following the fallback chain."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import ModelLoadError
from shared.registry import MemoryConfig, ModelEntry, Registry
from worker.devices import DevicePlan, free_memory, plan_device
from worker.memory import apply_memory_options, quantization_config
from worker.metrics import observe_model_load
from worker.tiny import ensure_tiny_sd

if TYPE_CHECKING:
    from worker.adapters import AdapterCache

log = logging.getLogger(__name__)

# Text-to-image and image-to-image pipeline classes for each registry `type`.
PIPELINE_CLASSES: dict[str, tuple[str, str]] = {
    "sd": ("diffusers:StableDiffusionPipeline", "diffusers:StableDiffusionImg2ImgPipeline"),
    "sdxl": ("diffusers:StableDiffusionXLPipeline", "diffusers:StableDiffusionXLImg2ImgPipeline"),
    "sd3": ("diffusers:StableDiffusion3Pipeline", "diffusers:StableDiffusion3Img2ImgPipeline"),
    "flux": ("diffusers:FluxPipeline", "diffusers:FluxImg2ImgPipeline"),
    "auto": ("diffusers:AutoPipelineForText2Image", "diffusers:AutoPipelineForImage2Image"),
}
# Each type's inpainting pipeline. They take the base model's weights: with a
# 4-channel UNet or transformer they repaint by blending latents under the mask.
INPAINT_CLASSES: dict[str, str] = {
    "sd": "diffusers:StableDiffusionInpaintPipeline",
    "sdxl": "diffusers:StableDiffusionXLInpaintPipeline",
    "sd3": "diffusers:StableDiffusion3InpaintPipeline",
    "flux": "diffusers:FluxInpaintPipeline",
    "auto": "diffusers:AutoPipelineForInpainting",
}


@dataclass
class LoadedModel:
    name: str
    entry: ModelEntry
    txt2img: Any
    img2img: Any | None
    plan: DevicePlan
    inpaint: Any | None = None
    notes: list[str] = field(default_factory=list)
    # Its LoRA adapters (worker.adapters.AdapterCache), for a model that takes them.
    adapters: AdapterCache | None = None


@dataclass(frozen=True)
class LoadFailure:
    model: str
    reason: str


def import_class(path: str) -> type:
    """Import "package.module:Class"."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"pipeline class {path!r} must look like 'package.module:Class'")
    try:
        return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import pipeline class {path!r}: {exc}") from exc


def pipeline_classes(entry: ModelEntry) -> tuple[type, type | None]:
    default_t2i, default_i2i = PIPELINE_CLASSES.get(entry.type, (None, None))
    t2i_path = entry.pipeline_class or default_t2i
    i2i_path = entry.img2img_pipeline_class or (None if entry.pipeline_class else default_i2i)
    assert t2i_path is not None  # the registry refuses unknown types without a class
    return import_class(t2i_path), import_class(i2i_path) if i2i_path else None


def load_model(
    name: str,
    entry: ModelEntry,
    memory: MemoryConfig,
    device: str = "auto",
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load one model; raises whatever the loading raised (see describe_failure)."""
    plan = plan_device(device, entry)
    if entry.builder == "tiny-sd":
        ensure_tiny_sd(Path(entry.id))
    t2i_class, i2i_class = pipeline_classes(entry)
    kwargs: dict[str, Any] = {"dtype": plan.dtype}  # `torch_dtype` before diffusers 0.42
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    if entry.variant and plan.is_cuda:
        kwargs["variant"] = entry.variant
    notes: list[str] = []
    quant = quantization_config(memory, plan, entry, notes)
    if quant is not None:
        kwargs["quantization_config"] = quant
    pipe = t2i_class.from_pretrained(entry.id, **kwargs)  # type: ignore[attr-defined]
    pipe.set_progress_bar_config(disable=True)
    apply_memory_options(pipe, memory, plan, notes)
    img2img = None
    if entry.params.supports_i2i and i2i_class is not None:
        # Same modules, no second copy of the weights.
        img2img = i2i_class.from_pipe(pipe)  # type: ignore[attr-defined]
        img2img.set_progress_bar_config(disable=True)
    inpaint = None
    if entry.params.supports_inpainting:
        # Same modules again: from_pipe shares them, no weights are copied.
        inpaint = inpaint_class(entry).from_pipe(pipe)  # type: ignore[attr-defined]
        inpaint.set_progress_bar_config(disable=True)
    for note in notes:
        log.info("model %s: %s", name, note)
    return LoadedModel(
        name=name,
        entry=entry,
        txt2img=pipe,
        img2img=img2img,
        plan=plan,
        notes=notes,
        inpaint=inpaint,
    )


def inpaint_class(entry: ModelEntry) -> type:
    path = entry.inpaint_pipeline_class or INPAINT_CLASSES.get(entry.type)
    if path is None:
        raise ModelLoadError(
            f"no inpainting pipeline for type {entry.type!r}: set inpaint_pipeline_class "
            "or supports_inpainting: false"
        )
    return import_class(path)


def load_first_available(
    registry: Registry,
    order: list[str],
    device: str = "auto",
    cache_dir: Path | None = None,
    timed: Callable[[str, float], None] = observe_model_load,
) -> tuple[LoadedModel | None, list[LoadFailure]]:
    """Try each model in `order`; return the first that loads and every failure before it.

    `timed` is told how long each attempt took (the engine process sends them to
    the worker, whose metrics are the ones scraped).
    """
    failures: list[LoadFailure] = []
    for name in order:
        log.info("loading model %s (%s)", name, registry.models[name].id)
        started = time.perf_counter()
        try:
            try:
                loaded = load_model(
                    name, registry.models[name], registry.runtime.memory, device, cache_dir
                )
            finally:
                timed(name, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 -- any failure moves on down the chain, cause logged
            reason = describe_failure(exc, registry.models[name])
            log.error("model %s failed to load: %s", name, reason)
            failures.append(LoadFailure(name, reason))
            free_memory()
            continue
        log.info("model %s loaded on %s (%s)", name, loaded.plan.device, loaded.plan.dtype)
        return loaded, failures
    return None, failures


def describe_failure(exc: BaseException, entry: ModelEntry) -> str:
    """One line saying why a model did not load, in the operator's terms."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    kind = type(exc).__name__
    if kind == "GatedRepoError" or "401" in text or "gated" in text.lower():
        return (
            f"gated model: authentication required (set HF_TOKEN or huggingface-cli login); {text}"
        )
    if kind == "OutOfMemoryError" or "out of memory" in text.lower():
        return f"out of memory (try runtime.memory.use_8bit or enable_cpu_offload); {text}"
    # diffusers refuses a local directory that does not exist with a ValueError
    # ("neither a valid local path nor a valid repo id"): still missing files.
    local_dir_gone = entry.is_local and not Path(entry.id).is_dir()
    if (
        kind in {"LocalEntryNotFoundError", "RepositoryNotFoundError"}
        or isinstance(exc, (FileNotFoundError, OSError))
        or local_dir_gone
    ):
        where = "local directory" if entry.is_local else "hub (or cache)"
        return f"model files missing or unreachable in the {where}; {text}"
    return text
