"""Registry models as AUTOMATIC1111 checkpoints, and each API key's chosen one.

A1111 names a checkpoint by a title, `name [short hash]`, that its clients
(webuiapi, Open WebUI, SillyTavern) echo back in `sd_model_checkpoint`. The
hash is of the registry entry (shared.infotext: the workers write the same into
each image's parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.compat.errors import UnknownModel
from api.state import AppState
from shared.constants import A1111_OPTIONS_KEY_PREFIX
from shared.infotext import checkpoint_sha256, short_hash
from shared.registry import ModelEntry

CHECKPOINT_FIELD = "sd_model_checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    name: str  # the registry name
    entry: ModelEntry
    sha256: str

    @property
    def short_hash(self) -> str:
        return short_hash(self.sha256)

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]"


def checkpoint(name: str, entry: ModelEntry) -> Checkpoint:
    return Checkpoint(name, entry, checkpoint_sha256(name, entry))


def checkpoints(state: AppState) -> list[Checkpoint]:
    return [checkpoint(name, entry) for name, entry in state.registry.models.items()]


def find_checkpoint(state: AppState, wanted: str) -> Checkpoint:
    """The checkpoint `wanted` names: its registry name or title (any case), or hash."""
    key = wanted.strip().lower()
    for found in checkpoints(state):
        if key in (found.name.lower(), found.title.lower(), found.short_hash, found.sha256):
            return found
    raise UnknownModel(wanted, [found.title for found in checkpoints(state)])


def options_key(owner: str) -> str:
    return A1111_OPTIONS_KEY_PREFIX + owner


async def chosen_model(state: AppState, owner: str) -> str | None:
    """The model the caller chose with POST /sdapi/v1/options (None: never, or since removed)."""
    raw = await state.mux.execute("HGET", options_key(owner), CHECKPOINT_FIELD)
    name = raw.decode() if isinstance(raw, bytes) else raw
    return name if name in state.registry.models else None


async def choose_model(state: AppState, owner: str, wanted: str) -> Checkpoint:
    """Make `wanted` the caller's model for its A1111 calls that name none (one a live
    worker can serve: the switch is refused, as its jobs would be, otherwise)."""
    found = find_checkpoint(state, wanted)
    (await state.serving.get()).check(found.name, state.registry)
    await state.mux.execute("HSET", options_key(owner), CHECKPOINT_FIELD, found.name)
    return found
