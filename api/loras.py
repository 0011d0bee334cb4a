"""The LoRA adapters a key may use: the registry's (`loras:` in model_config.yaml) and
its own (POST /loras), checked and resolved before any job is queued.

A key's adapters are private to it: their records live in Redis under
`darkroom:loras:<owner>` (name -> UploadedLora), their files in the job storage
under `loras/<owner>/`, outside the jobs/ prefix that images expire from.
Another key's adapter is, to everyone else, a name that does not exist.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock

import redis

from shared.constants import KEY_PREFIX
from shared.errors import InvalidRequest, LoraConflict, LoraNotFound, QuotaExceeded
from shared.loras import (
    LoraChoice,
    LoraEntry,
    ResolvedLora,
    UploadedLora,
    check_name,
    detect_base,
    safetensors_header,
)
from shared.redis_replies import reply_text
from shared.registry import ModelEntry, Registry
from shared.storage import Storage

LORAS_PREFIX = "loras/"


def records_key(owner: str) -> str:
    return f"{KEY_PREFIX}loras:{owner}"


def storage_key(owner: str, sha256: str) -> str:
    # By content: an adapter uploaded again under another name is the same object.
    return f"{LORAS_PREFIX}{hashlib.sha256(owner.encode()).hexdigest()[:16]}/{sha256}.safetensors"


@dataclass
class FileHashes:
    """sha256 of the registry's local adapter files, read once per (size, mtime)."""

    _known: dict[str, tuple[tuple[int, int], str]] = field(default_factory=dict)
    _lock: Lock = field(default_factory=Lock)

    def of(self, path: str) -> str:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise InvalidRequest(f"the registry's adapter file {path} is missing: {exc}") from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._known.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        with self._lock:
            self._known[path] = (stamp, digest)
        return digest


@dataclass
class LoraCatalog:
    registry: Registry
    redis: redis.Redis
    storage: Storage
    max_bytes: int
    max_per_key: int
    hashes: FileHashes = field(default_factory=FileHashes)

    # --- reading ----------------------------------------------------------------

    def own(self, owner: str) -> dict[str, UploadedLora]:
        raw = self.redis.hgetall(records_key(owner))
        return {
            reply_text(name): UploadedLora.model_validate_json(value) for name, value in raw.items()
        }

    def resolve(
        self, owner: str, choices: list[LoraChoice], model: str, entry: ModelEntry
    ) -> list[ResolvedLora]:
        """The adapters `choices` name, as the job will run them; InvalidRequest (422)
        naming the adapter for an unknown name, a base the model is not, too many."""
        if not choices:
            return []
        limit = entry.params.max_loras
        if len(choices) > limit:
            raise InvalidRequest(
                f"{len(choices)} LoRA adapters; model {model} takes at most {limit} "
                "(its params.max_loras)",
                "loras",
            )
        names = [c.name for c in choices]
        if len(set(names)) != len(names):
            raise InvalidRequest("an adapter is named twice in loras", "loras")
        own = self.own(owner) if any(n not in self.registry.loras for n in names) else {}
        resolved = []
        for choice in choices:
            found = self._find(choice.name, own)
            base = found.base
            if entry.lora_base != base:
                takes = f"takes {entry.lora_base} adapters" if entry.lora_base else "takes none"
                raise InvalidRequest(
                    f"LoRA {choice.name!r} is for {base} models; model {model} ({entry.type}) "
                    f"{takes}",
                    "loras",
                )
            resolved.append(self._resolved(choice, found, owner))
        return resolved

    def lookup(self, name: str, own: dict[str, UploadedLora]) -> LoraEntry | UploadedLora | None:
        """The adapter `name` names for a key whose own adapters are `own`: the
        registry's first (a key cannot take a registry name), else its own."""
        return self.registry.loras.get(name) or own.get(name)

    def _find(self, name: str, own: dict[str, UploadedLora]) -> LoraEntry | UploadedLora:
        found = self.lookup(name, own)
        if found is None:
            raise InvalidRequest(f"unknown LoRA adapter {name!r} (GET /loras lists them)", "loras")
        return found

    def _resolved(
        self, choice: LoraChoice, found: LoraEntry | UploadedLora, owner: str
    ) -> ResolvedLora:
        scale = choice.scale if choice.scale is not None else found.scale
        if isinstance(found, UploadedLora):
            return ResolvedLora(
                name=choice.name,
                scale=scale,
                sha256=found.sha256,
                kind="storage",
                source=found.key,
                owner=owner,
            )
        sha256 = self.hashes.of(found.source) if found.kind == "file" else found.sha256
        return ResolvedLora(
            name=choice.name,
            scale=scale,
            sha256=sha256,
            kind=found.kind,
            source=found.source,
            weight_name=found.weight_name,
        )

    # --- a key's own -------------------------------------------------------------

    def add(
        self, owner: str, name: str, data: bytes, base: str | None = None, scale: float = 1.0
    ) -> UploadedLora:
        """Check and keep an adapter `owner` brought. InvalidRequest (422) for a file
        that is not a safetensors LoRA of a known base, LoraConflict (409) for a name
        the registry has, QuotaExceeded (413/429) past the size or count caps."""
        check_name(name)
        if name in self.registry.loras:
            raise LoraConflict(f"{name!r} is the name of a registry adapter: choose another")
        if len(data) > self.max_bytes:
            raise QuotaExceeded(
                f"the adapter is {len(data)} bytes; at most {self.max_bytes} (LORA_MAX_BYTES)"
            )
        detected = detect_base(safetensors_header(data, f"adapter {name!r}"))
        if detected is None:
            raise InvalidRequest(
                f"adapter {name!r} holds no LoRA layers of a known model type", "file"
            )
        if base is not None and base != detected:
            raise InvalidRequest(
                f"adapter {name!r} was made for {detected} models, not {base}", "base"
            )
        own = self.own(owner)
        if name not in own and len(own) >= self.max_per_key:
            raise QuotaExceeded(
                f"this key keeps {len(own)} adapters, the most it may (LORA_MAX_PER_KEY): "
                "delete one first"
            )
        sha256 = hashlib.sha256(data).hexdigest()
        record = UploadedLora(
            name=name,
            base=detected,
            sha256=sha256,
            bytes=len(data),
            key=storage_key(owner, sha256),
            created_at=datetime.now(UTC).isoformat(),
            scale=scale,
        )
        self.storage.put(record.key, data, "application/octet-stream")
        self.redis.hset(records_key(owner), name, record.model_dump_json())
        return record

    def delete(self, owner: str, name: str) -> None:
        """Forget `owner`'s adapter `name` and its file (unless another of its names
        holds the same file); LoraNotFound (404) for any other name."""
        own = self.own(owner)
        if name not in own:
            raise LoraNotFound(f"no adapter {name!r} of this key")
        self.redis.hdel(records_key(owner), name)
        if not any(o.sha256 == own[name].sha256 for n, o in own.items() if n != name):
            self.storage.delete(own[name].key)
