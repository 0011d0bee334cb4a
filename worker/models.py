"""The models a worker holds: a resident set on the device, a warm tier in host memory.

A worker may serve several models (WORKER_MODELS). It keeps those it used last
on the device within WORKER_DEVICE_MEMORY, and, when that is full, moves the
least recently used one to pinned host memory (WORKER_HOST_MEMORY, the warm
tier: moving it back is a copy, not a load) or drops it. A model a job needs
that is not resident is loaded on demand: from host memory if warm, else from
disk or the hub. On a CPU worker the device is host memory: there is one tier.

Lives where the pipelines live: the engine process (or the worker's own
process with WORKER_ENGINE=inline). Every load is reported through `on_load`
(model, source "host" or "disk", seconds, whether it was a swap after start).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared.errors import ModelLoadError
from shared.registry import Registry, registry_for
from shared.settings import Settings
from shared.sizes import format_size
from shared.storage import storage_from_settings
from worker.adapters import AdapterCache, AdapterSource
from worker.devices import free_memory
from worker.loader import LoadedModel, LoadFailure, describe_failure, load_model

log = logging.getLogger(__name__)

Tier = Literal["device", "host"]
# What a load reports: model, source ("host": the warm tier, "disk": from_pretrained),
# seconds, and whether it was a swap (a load after the worker started).
LoadReport = Callable[[str, str, float, bool], None]
# Without WORKER_DEVICE_MEMORY, the device's memory less this share.
DEVICE_HEADROOM = 0.10


@dataclass
class Slot:
    model: LoadedModel
    size: int
    tier: Tier


class ModelSet:
    def __init__(
        self,
        registry: Registry | None,
        allowed: list[str],
        device: str = "auto",
        cache_dir: Path | None = None,
        device_budget: int | None = None,
        host_budget: int = 0,
        on_load: LoadReport | None = None,
        adapter_source: AdapterSource | None = None,
    ):
        self.registry = registry
        # The models this worker may serve (it loads them when a job needs one).
        self.allowed = allowed
        self.device = device
        self.cache_dir = cache_dir
        self.device_budget = device_budget
        self.host_budget = host_budget
        self.on_load = on_load
        # Where LoRA adapters are read from (the job storage for keys' own).
        self.adapter_source = adapter_source or AdapterSource(None)
        # Least recently used first.
        self._slots: OrderedDict[str, Slot] = OrderedDict()
        self._started = False

    @classmethod
    def holding(cls, model: LoadedModel, device_budget: int | None = None) -> ModelSet:
        """A set of one model already loaded (a test's, a worker's own): it serves that."""
        models = cls(None, [model.name], device_budget=device_budget)
        models._attach_adapters(model)
        models._slots[model.name] = Slot(model, model_bytes(model), "device")
        models._started = True
        return models

    def start(self, order: list[str]) -> tuple[LoadedModel | None, list[LoadFailure]]:
        """Load the first model of `order` that loads (the fallback chain); the
        failures before it. Later loads are swaps."""
        failures: list[LoadFailure] = []
        loaded = None
        for name in order:
            try:
                loaded = self.get(name)
                break
            except ModelLoadError as exc:
                failures.append(LoadFailure(name, exc.reason))
        self._started = True
        if loaded is not None and loaded.name not in self.allowed:
            # No WORKER_MODELS: the model that loaded is the one it serves, as before.
            self.allowed = [loaded.name, *self.allowed]
        if self.device_budget is None and loaded is not None:
            self.device_budget = device_memory(loaded.plan.device)
            log.info("device memory budget: %s", format_size(self.device_budget))
        return loaded, failures

    def get(self, name: str) -> LoadedModel:
        """`name` on the device, loaded or moved there if it is not; ModelLoadError
        (saying why) if it may not be served here or will not load."""
        slot = self._slots.get(name)
        if slot is not None and slot.tier == "device":
            self._slots.move_to_end(name)
            return slot.model
        if name not in self.allowed and self._started:
            raise ModelLoadError(
                f"model {name!r} is not one this worker serves ({', '.join(self.allowed)})"
            )
        started = time.perf_counter()
        source = "host" if slot is not None else "disk"
        model = self._to_device(slot) if slot is not None else self._load(name)
        seconds = time.perf_counter() - started
        log.info("model %s on the device from %s in %.2fs", name, source, seconds)
        if self.on_load is not None:
            self.on_load(name, source, seconds, self._started)
        return model

    @property
    def current(self) -> str | None:
        """The model used last (jobs that name no model run on it)."""
        names = [n for n, s in self._slots.items() if s.tier == "device"]
        return names[-1] if names else None

    def adapter_ids(self) -> tuple[str, ...]:
        """The LoRA adapters loaded on the device, of the models there."""
        # Sorted: the set, not its recency, is news to the scheduler.
        return tuple(
            sorted(
                adapter_id
                for slot in self._slots.values()
                if slot.tier == "device" and slot.model.adapters is not None
                for adapter_id in slot.model.adapters.on_device()
            )
        )

    def tiers(self) -> dict[str, Tier]:
        """Each model held, and where: on the device or warm in host memory."""
        return {name: slot.tier for name, slot in self._slots.items()}

    def models(self) -> Iterator[LoadedModel]:
        for slot in self._slots.values():
            yield slot.model

    def _load(self, name: str) -> LoadedModel:
        if self.registry is None:
            raise ModelLoadError(f"model {name!r} cannot be loaded here")
        entry = self.registry.entry(name)
        self._make_room(self._expected_size(), keep=None)
        log.info("loading model %s (%s)", name, entry.id)
        try:
            model = load_model(
                name, entry, self.registry.runtime.memory, self.device, self.cache_dir
            )
        except Exception as exc:
            reason = describe_failure(exc, entry)
            log.error("model %s failed to load: %s", name, reason)
            raise ModelLoadError(f"model {name} could not be loaded: {reason}", reason) from exc
        size = model_bytes(model)
        self._attach_adapters(model)
        self._slots[name] = Slot(model, size, "device")
        self._make_room(0, keep=name)
        return model

    def _to_device(self, slot: Slot) -> LoadedModel:
        self._make_room(slot.size, keep=None)
        move(slot.model, slot.model.plan.device)
        slot.tier = "device"
        self._slots.move_to_end(slot.model.name)
        return slot.model

    def _make_room(self, needed: int, keep: str | None) -> None:
        """Evict least recently used device models until `needed` more bytes fit (the
        model `keep` stays: one model always fits, whatever its size)."""
        if self.device_budget is None:
            return
        while self._used("device") + needed > self.device_budget:
            victim = next(
                (n for n, s in self._slots.items() if s.tier == "device" and n != keep), None
            )
            if victim is None:
                return
            self._evict(victim)

    def _evict(self, name: str) -> None:
        slot = self._slots[name]
        # Accelerate's CPU offload moves the weights itself: such a model is not moved.
        offloaded = self.registry is not None and self.registry.runtime.memory.enable_cpu_offload
        movable = slot.model.plan.device != "cpu" and not offloaded
        if movable and self._fit_warm(slot.size, keep=name):
            move(slot.model, "cpu", pin=True)
            slot.tier = "host"
            log.info("model %s moved to host memory (warm)", name)
            return
        del self._slots[name]
        slot.model = None  # type: ignore[assignment]
        gc.collect()
        free_memory()
        log.info("model %s dropped to make room", name)

    def _fit_warm(self, size: int, keep: str) -> bool:
        """Whether `size` more bytes fit in the warm tier (dropping its least recently
        used models if need be)."""
        if size > self.host_budget:
            return False
        while self._used("host") + size > self.host_budget:
            victim = next((n for n, s in self._slots.items() if s.tier == "host"), None)
            if victim is None or victim == keep:
                return False
            del self._slots[victim]
            gc.collect()
            log.info("model %s dropped from host memory", victim)
        return True

    def _used(self, tier: Tier) -> int:
        """Bytes on `tier`: models, and their LoRA adapters (loaded into the pipeline
        on the device; warm copies in host memory)."""
        used = 0
        for slot in self._slots.values():
            cache = slot.model.adapters
            if slot.tier == tier:
                used += slot.size + (cache.device_bytes if cache and tier == "device" else 0)
            if cache and tier == "host":
                used += cache.host_bytes
        return used

    def _attach_adapters(self, model: LoadedModel) -> None:
        """A cache of LoRA adapters for a model that takes them; their bytes count
        against this worker's budgets with the models'."""
        if model.entry.lora_base is None or model.txt2img is None:
            return
        model.adapters = AdapterCache(
            model.txt2img,
            self.adapter_source,
            over_budget=lambda extra: (
                0
                if self.device_budget is None
                else self._used("device") + extra - self.device_budget
            ),
            host_room=lambda: self.host_budget - self._used("host"),
        )

    def _expected_size(self) -> int:
        """Before a load, its size is not known: assume the largest model held."""
        return max((s.size for s in self._slots.values()), default=0)


def model_bytes(model: LoadedModel) -> int:
    """Bytes of the model's weights (its pipelines share their modules)."""
    seen: set[int] = set()
    total = 0
    for module in _modules(model):
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def move(model: LoadedModel, device: str, pin: bool = False) -> None:
    """Move the model's modules to `device` (pinned host memory when `pin`, so the way
    back is a fast copy). A CPU worker's models never move."""
    if model.plan.device == "cpu":
        return
    move_modules(_modules(model), device, pin)


def move_modules(modules: list[Any], device: str, pin: bool = False) -> None:
    """Move `modules` to `device`, every copy queued at once (non-blocking), then wait
    for them all. To the host with `pin`: straight into page-locked memory, whence the
    copies back to the GPU run at the bus's speed and overlap one another."""
    import torch

    for module in modules:
        if device == "cpu" and pin:
            for tensor in [*module.parameters(), *module.buffers()]:
                host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                host.copy_(tensor.data, non_blocking=True)
                tensor.data = host
        else:
            module.to(device, non_blocking=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_memory(device: str) -> int:
    """The device's memory less DEVICE_HEADROOM: GPU memory on CUDA, else host memory."""
    if device.startswith("cuda"):
        import torch

        _, total = torch.cuda.mem_get_info(torch.device(device))
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * (1 - DEVICE_HEADROOM))


def _modules(model: LoadedModel) -> list[Any]:
    import torch

    pipe = model.txt2img
    if pipe is None:
        return []
    return [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]


def model_set(settings: Settings, report: LoadReport | None) -> tuple[ModelSet, list[str]]:
    """The worker's ModelSet from its settings, and the order to try at start: the
    models it serves (WORKER_MODELS), else WORKER_MODEL, else the primary model and
    its fallback chain."""
    registry = registry_for(settings)
    served = settings.served_models(list(registry.models))
    if served is None:
        order = registry.load_order(None)
        allowed: list[str] = []  # the one that loads
    else:
        order, allowed = list(served), list(served)
    models = ModelSet(
        registry,
        allowed,
        settings.device,
        settings.hf_cache_dir,
        settings.device_memory_bytes,
        settings.host_memory_bytes,
        report,
        AdapterSource(storage_from_settings(settings), _adapter_cache_dir(settings)),
    )
    return models, order


def _adapter_cache_dir(settings: Settings) -> Path | None:
    """Adapters fetched from storage, S3 or the hub, kept by content beside the models."""
    return settings.hf_cache_dir / "darkroom-loras" if settings.hf_cache_dir else None
