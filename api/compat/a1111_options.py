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

from api.compat.a1111_models import CHECKPOINT_FIELD, options_key
from api.state import AppState
from shared import lua
from shared.errors import InvalidRequest
from shared.redis_replies import reply_hash, reply_text

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
# shared/lua/a1111_save_options.lua: counted and written in one step.
_SAVE = lua.script("a1111_save_options")


async def saved_options(state: AppState, owner: str) -> dict[str, Any]:
    """The options `owner` wrote (its checkpoint apart) over A1111's defaults, by name."""
    stored = reply_hash(await state.mux.execute("HGETALL", options_key(owner)))
    options = dict(DEFAULTS)
    for raw_name, raw_value in stored.items():
        name = reply_text(raw_name)
        if name.startswith(_FIELD_PREFIX):
            options[name.removeprefix(_FIELD_PREFIX)] = json.loads(raw_value)
    return options


async def save_options(state: AppState, owner: str, options: dict[str, Any]) -> None:
    """Keep `options` (not the checkpoint: choose_model checks and keeps that) for
    `owner`: all or none, at most MAX_OPTIONS of at most MAX_OPTION_BYTES each."""
    fields = [
        item
        for name, value in options.items()
        for item in (_FIELD_PREFIX + name, _encoded(name, value))
    ]
    if not fields:
        return
    args = {"prefix": _FIELD_PREFIX, "max_options": MAX_OPTIONS, "fields": fields}
    call = _SAVE.call({"options": options_key(owner)}, args)
    count = int(await state.mux.run_script(call.lua, call.keys, call.args))
    if count:
        raise InvalidRequest(
            f"at most {MAX_OPTIONS} options are kept per API key ({count} with these)",
            "options",
        )


def _encoded(name: str, value: Any) -> str:
    if name == CHECKPOINT_FIELD or not name or len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(f"option name {name[:40]!r} is not one that can be kept", name)
    text = json.dumps(value)
    if len(text.encode()) > MAX_OPTION_BYTES:
        raise InvalidRequest(f"option {name!r} is over {MAX_OPTION_BYTES} bytes", name)
    return text
