"""LoRA adapters: what a registry entry, a request and a resolved job say of one, and
the checks on a file that need no torch (the API runs them before any job is queued).

An adapter is known by its name to callers and by the sha256 of its file to
workers: the worker's cache holds adapters by content, so the same file under
two names, or uploaded twice, is loaded once.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import InvalidRequest

# The base model types an adapter can be made for (a model's `type`).
LoraBase = Literal["sd", "sdxl", "sd3", "flux"]
LORA_BASES: tuple[str, ...] = ("sd", "sdxl", "sd3", "flux")
# Where a resolved adapter's file is: a path on the worker's disk (the registry's
# local files), a key of the job storage (adapters a key uploaded), an s3:// URL
# (read with the storage's credentials), or a Hugging Face hub repository.
SourceKind = Literal["file", "storage", "s3", "hub"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_SCALE = 4.0
# A safetensors file starts with the length of its JSON header (8 bytes, little
# endian), then the header; more than this is no adapter's.
MAX_HEADER_BYTES = 64 * 1024 * 1024


class LoraEntry(BaseModel):
    """One adapter of the registry's top-level `loras:` section."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="./path.safetensors, /path, s3://bucket/key or a hub id")
    base: LoraBase
    scale: float = Field(1.0, ge=-MAX_SCALE, le=MAX_SCALE)
    triggers: list[str] = []
    description: str = ""
    # A hub repository with several files: the one to load.
    weight_name: str | None = None
    # The file's sha256, when known ahead (a remote source): the worker checks it.
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @property
    def kind(self) -> SourceKind:
        if self.source.startswith("s3://"):
            return "s3"
        if self.source.startswith(("/", "./", "../")):
            return "file"
        return "hub"


class LoraChoice(BaseModel):
    """One adapter a job asks for: `{"name": ..., "scale": 0.8}` (scale: the adapter's own
    default when left out)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    scale: float | None = Field(None, ge=-MAX_SCALE, le=MAX_SCALE)


class ResolvedLora(BaseModel):
    """An adapter as a job runs it: recorded in its params, so it can be re-run faithfully."""

    name: str
    scale: float
    sha256: str | None
    kind: SourceKind
    # A path, a storage key, an s3:// URL or a hub repository id, by `kind`.
    source: str
    weight_name: str | None = None
    # "registry", or the key that brought it (its own adapters are private to it).
    owner: str = "registry"

    @property
    def cache_key(self) -> str:
        """What the worker's cache knows it by: its content, else where it comes from."""
        return self.sha256 or f"{self.kind}:{self.source}:{self.weight_name or ''}"

    @property
    def adapter_id(self) -> str:
        """A short id of `cache_key` with no separator in it: the scheduler's and the
        pipeline's name for the adapter."""
        return hashlib.sha256(self.cache_key.encode()).hexdigest()[:20]


class UploadedLora(BaseModel):
    """An adapter a key brought (POST /loras), as kept in Redis."""

    name: str
    base: LoraBase
    sha256: str
    bytes: int
    key: str  # the job storage's key of its file
    created_at: str
    scale: float = 1.0
    triggers: list[str] = []
    description: str = ""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        check_name(value)
        return value


def check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidRequest(
            f"invalid adapter name {name!r}: letters, digits, '.', '_' and '-', "
            "at most 64, starting with a letter or digit",
            "name",
        )


def safetensors_header(data: bytes, what: str) -> dict[str, dict[str, object]]:
    """The tensors a safetensors file declares (name -> dtype, shape, offsets); an
    InvalidRequest naming `what` for anything else (a pickle, a zip, garbage)."""
    if len(data) < 8:
        raise InvalidRequest(f"{what} is not a safetensors file (too short)", "file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise InvalidRequest(
            f"{what} is not a safetensors file (only safetensors adapters are taken: "
            "a pickled .ckpt/.pt/.bin could run code when loaded)",
            "file",
        )
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest(f"{what} is not a safetensors file (bad header)", "file") from None
    if not isinstance(header, dict):
        raise InvalidRequest(f"{what} is not a safetensors file (bad header)", "file")
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    end = 8 + length + max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    if not tensors or end != len(data):
        raise InvalidRequest(f"{what} is not a complete safetensors file", "file")
    return tensors


def detect_base(tensors: dict[str, dict[str, object]]) -> str | None:
    """The base model type a LoRA's tensor names (and cross-attention widths) say it is
    for, in diffusers', PEFT's or kohya's naming; None when they say nothing known."""
    names = list(tensors)
    joined = "\n".join(names)
    if re.search(r"single_transformer_blocks|lora_transformer_single|single_blocks", joined):
        return "flux"
    if re.search(r"(^|\.)transformer\.transformer_blocks|lora_transformer_|joint_blocks", joined):
        return "sd3"
    if re.search(r"text_encoder_2|lora_te2_|add_embedding", joined):
        return "sdxl"
    if not re.search(r"(^|\.)unet\.|lora_unet_|^text_encoder\.|lora_te_|lora_te1_", joined):
        return None
    for name, info in tensors.items():
        # The down (A) matrix of a cross-attention key projection reads the text
        # encoder's width: 2048 is SDXL's, 768 (SD 1.x) and 1024 (SD 2.x) are SD's.
        if re.search(r"attn2[._]to_k", name) and re.search(r"lora[._](down|A)", name):
            shape = info.get("shape")
            if isinstance(shape, list) and len(shape) == 2 and shape[1] == 2048:
                return "sdxl"
    return "sd"
