"""LoRA adapters on a loaded model: a cache by content, activated per pipeline call.

Tiers, as for models (worker/models.py): an adapter is loaded into the pipeline
(on the device, through diffusers' PEFT integration), or its weights wait in host
memory (a copy kept when WORKER_HOST_MEMORY has room), or it is read again from
where it lives (a local file, the job storage, S3, the hub: fetched once into a
local cache directory by content hash). Device bytes count against
WORKER_DEVICE_MEMORY with the models'; the least recently used adapter not in use
leaves first.

A call activates exactly its adapters with its scales (`set_adapters`); a call
without adapters runs with every adapter disabled, which is the base model's
exact computation (PEFT's layers call the base layer alone). Adapters are
deleted from the pipeline when they leave the device, so memory does not grow
with the number of adapters ever used.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import GenerationError
from shared.loras import ResolvedLora
from shared.storage import Storage, read_s3_url, write_atomically

log = logging.getLogger(__name__)

# Bytes over the device budget after adding `extra` more (<= 0: room enough).
OverBudget = Callable[[int], int]
# Bytes of host memory free for adapter copies.
HostRoom = Callable[[], int]


@dataclass
class _Adapter:
    id: str  # ResolvedLora.adapter_id
    bytes: int
    on_device: bool
    # The weights in host memory (a warm copy), when there was room for them.
    state: dict[str, Any] | None

    @property
    def name(self) -> str:
        """Its name inside the pipeline (PEFT's adapter name)."""
        return "lora_" + self.id


class AdapterSource:
    """Reads an adapter's safetensors bytes from where it lives, through a local cache."""

    def __init__(self, storage: Storage | None, cache_dir: Path | None = None):
        self.storage = storage
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "darkroom-loras"

    def read(self, lora: ResolvedLora) -> bytes:
        """The adapter's bytes, checked against the sha256 its job was given."""
        cached = self.cache_dir / f"{hashlib.sha256(lora.cache_key.encode()).hexdigest()}.st"
        if lora.kind == "file":  # on this disk already
            data = Path(lora.source).read_bytes()
        elif cached.exists():
            data = cached.read_bytes()
        else:
            data = self._fetch(lora)
            self._keep(cached, data)
        if lora.sha256 is not None and hashlib.sha256(data).hexdigest() != lora.sha256:
            cached.unlink(missing_ok=True)
            raise GenerationError(
                f"LoRA {lora.name!r}: its file's sha256 is not the one the job was given "
                "(the file changed since the job was submitted)"
            )
        return data

    def _fetch(self, lora: ResolvedLora) -> bytes:
        if lora.kind == "storage":
            if self.storage is None:
                raise GenerationError(f"LoRA {lora.name!r} is in the job storage, which is unset")
            return self.storage.get(lora.source)
        if lora.kind == "s3":
            if self.storage is None:
                raise GenerationError(f"LoRA {lora.name!r} is on S3 and the job storage is unset")
            return read_s3_url(self.storage, lora.source)
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(lora.source, lora.weight_name or "pytorch_lora_weights.safetensors")
        return Path(path).read_bytes()

    def _keep(self, path: Path, data: bytes) -> None:
        try:
            write_atomically(path, data)
        except OSError as exc:  # a full disk costs a download next time, not the job
            log.warning("could not cache an adapter at %s: %s", path, exc)


class AdapterCache:
    """The adapters of one pipeline (img2img and inpainting share its modules)."""

    def __init__(
        self,
        pipe: Any,
        source: AdapterSource,
        over_budget: OverBudget = lambda extra: 0,
        host_room: HostRoom = lambda: 0,
    ):
        self.pipe = pipe
        self.source = source
        self.over_budget = over_budget
        self.host_room = host_room
        self._adapters: OrderedDict[str, _Adapter] = OrderedDict()  # least recent first
        self._enabled = False
        # What the pipeline runs with now: (adapter id, scale) of each active adapter.
        self._active: tuple[tuple[str, float], ...] = ()
        # PEFT's LoRA layers in the pipeline (None: to be found again after a load).
        self._layers: list[Any] | None = None
        # Counted for the benchmark and the logs: loads from host memory, from source.
        self.loads = {"host": 0, "source": 0}

    def activate(self, loras: list[ResolvedLora]) -> None:
        """Make exactly `loras` active, with their scales (none: the base model). The
        same set as the call before costs nothing; another is one `set_adapters`."""
        wanted = tuple((lora.adapter_id, lora.scale) for lora in loras)
        if wanted == self._active and (self._enabled or not loras):
            return
        if not loras:
            self.deactivate()
            return
        names = [self._on_device(lora) for lora in loras]
        self._evict(keep=set(names))
        self._switch(names, [lora.scale for lora in loras])
        self._enabled = True
        self._active = wanted

    def deactivate(self) -> None:
        """Every adapter off: the pipeline computes as the base model alone."""
        if self._enabled:
            for layer in self._lora_layers():
                layer._disable_adapters = True
            self._enabled = False
        self._active = ()

    def _switch(self, names: list[str], scales: list[float]) -> None:
        """What diffusers' set_adapters does, without its walk over every module and
        every loaded adapter's requires_grad (milliseconds a call, growing with the
        adapters loaded: diffusers #11816): PEFT's layers read only their active
        adapters, their scales and the disable flag in forward. 0.1 ms instead of
        6.5 on the tiny model with ten adapters loaded, the same images."""
        for layer in self._lora_layers():
            layer._disable_adapters = False
            layer._active_adapter = list(names)
            for name, scale in zip(names, scales, strict=True):
                layer.set_scale(name, scale)  # scale x alpha / r (or / sqrt(r): rsLoRA)

    def _lora_layers(self) -> list[Any]:
        if self._layers is None:
            import torch
            from peft.tuners.tuners_utils import BaseTunerLayer

            components = [
                c for c in self.pipe.components.values() if isinstance(c, torch.nn.Module)
            ]
            self._layers = [
                m for c in components for m in c.modules() if isinstance(m, BaseTunerLayer)
            ]
        return self._layers

    @property
    def device_bytes(self) -> int:
        return sum(a.bytes for a in self._adapters.values() if a.on_device)

    @property
    def host_bytes(self) -> int:
        return sum(a.bytes for a in self._adapters.values() if a.state is not None)

    def tiers(self) -> dict[str, str]:
        return {k: "device" if a.on_device else "host" for k, a in self._adapters.items()}

    def on_device(self) -> list[str]:
        """The ids (ResolvedLora.adapter_id) of the adapters loaded in the pipeline."""
        return [a.id for a in self._adapters.values() if a.on_device]

    def _on_device(self, lora: ResolvedLora) -> str:
        key = lora.cache_key
        adapter = self._adapters.get(key)
        if adapter is not None and adapter.on_device:
            self._adapters.move_to_end(key)
            return adapter.name
        started = time.perf_counter()
        if adapter is not None and adapter.state is not None:
            state, origin = adapter.state, "host"
        else:
            state, origin = self._read(lora), "source"
        size = sum(t.numel() * t.element_size() for t in state.values())
        self._evict(keep=set(), extra=size)
        warm = adapter.state if adapter is not None else None
        if warm is None and self.host_room() >= size:
            warm = state
        loaded = _Adapter(lora.adapter_id, size, True, warm)
        # diffusers may rename keys in the dict it is given: hand it a copy.
        self.pipe.load_lora_weights(dict(state), adapter_name=loaded.name)
        self._layers = None  # new layers may have been wrapped
        self._adapters[key] = loaded
        self._adapters.move_to_end(key)
        self.loads[origin] += 1
        log.info(
            "LoRA %s on the device from %s in %.3fs",
            lora.name,
            origin,
            time.perf_counter() - started,
        )
        return loaded.name

    def _read(self, lora: ResolvedLora) -> dict[str, Any]:
        from safetensors.torch import load

        try:
            return dict(load(self.source.read(lora)))
        except GenerationError:
            raise
        except Exception as exc:
            raise GenerationError(f"LoRA {lora.name!r} could not be read: {exc}") from exc

    def _evict(self, keep: set[str], extra: int = 0) -> None:
        """Take least recently used adapters not in `keep` off the device until `extra`
        more bytes fit (their host copy, where kept, stays warm)."""
        while self.over_budget(extra) > 0:
            victim = next(
                (k for k, a in self._adapters.items() if a.on_device and a.name not in keep),
                None,
            )
            if victim is None:
                return
            adapter = self._adapters[victim]
            self.pipe.delete_adapters(adapter.name)
            self._layers = None
            if adapter.state is None:
                del self._adapters[victim]
            else:
                adapter.on_device = False
