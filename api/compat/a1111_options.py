"""A1111's settings a key writes with POST /sdapi/v1/options and reads back.

Clients write options and read them back (A1111's own API test writes
`send_seed` and expects it in GET /options); Open WebUI and SillyTavern set a
few at connect. darkroom keeps them per API key, bounded, in the same Redis
hash as the key's checkpoint. Only `sd_model_checkpoint` changes generation
here; the others are kept for the client and change nothing (darkroom has none
of A1111's settings behind them).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from api.compat.a1111_models import CHECKPOINT_FIELD, options_key
from api.state import AppState
from shared.errors import InvalidRequest
from shared.redis_replies import reply_text

MAX_OPTIONS = 100
MAX_OPTION_BYTES = 4096
MAX_NAME_CHARS = 200
# A1111's defaults of the options its clients read before they write (A1111's own
# test reads send_seed, then writes its opposite): what GET answers until the key
# wrote its own. Describing darkroom: it sends seeds and sizes, writes PNGs, skips
# no CLIP layer and has no separate VAE.
DEFAULTS: dict[str, Any] = {
    "send_seed": True,
    "send_size": True,
    "samples_format": "png",
    "CLIP_stop_at_last_layers": 1,
    "sd_vae": "Automatic",
    "eta_noise_seed_delta": 0,
}
# In the key's options hash, beside its checkpoint (stored under its own name).
_FIELD_PREFIX = "option:"


def saved_options(state: AppState, owner: str) -> dict[str, Any]:
    """The options `owner` wrote (its checkpoint apart) over A1111's defaults, by name."""
    stored = state.store.redis.hgetall(options_key(owner))
    options = dict(DEFAULTS)
    for raw_name, raw_value in stored.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        if name.startswith(_FIELD_PREFIX):
            options[name.removeprefix(_FIELD_PREFIX)] = json.loads(raw_value)
    return options


def save_options(state: AppState, owner: str, options: dict[str, Any]) -> None:
    """Keep `options` (not the checkpoint: choose_model checks and keeps that) for
    `owner`: all or none, at most MAX_OPTIONS of at most MAX_OPTION_BYTES each."""
    encoded: dict[Any, Any] = {
        _FIELD_PREFIX + name: _encoded(name, value) for name, value in options.items()
    }
    if not encoded:
        return
    key = options_key(owner)

    def write(pipe: redis.client.Pipeline) -> None:
        # Counted and written in one transaction: two writers racing cannot pass
        # the bound together.
        names = {reply_text(n) for n in pipe.hkeys(key)} | set(encoded)
        count = sum(1 for name in names if name.startswith(_FIELD_PREFIX))
        if count > MAX_OPTIONS:
            raise InvalidRequest(
                f"at most {MAX_OPTIONS} options are kept per API key ({count} with these)",
                "options",
            )
        pipe.multi()
        pipe.hset(key, mapping=encoded)

    state.store.redis.transaction(write, key)


def _encoded(name: str, value: Any) -> str:
    if name == CHECKPOINT_FIELD or not name or len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(f"option name {name[:40]!r} is not one that can be kept", name)
    text = json.dumps(value)
    if len(text.encode()) > MAX_OPTION_BYTES:
        raise InvalidRequest(f"option {name!r} is over {MAX_OPTION_BYTES} bytes", name)
    return text
