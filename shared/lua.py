"""darkroom's Redis scripts: each in a `.lua` file of shared/lua/ with its KEYS and
ARGV named at the top, after the scheduler's shared functions (shared/lua/sched.lua),
so every script that moves a waiting job writes its structures the same way."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import redis

from shared.constants import KEY_PREFIX
from shared.multiplexed import LuaScript

LUA_DIR = Path(__file__).parent / "lua"
LIBRARY = "sched"


@functools.cache
def source(*names: str) -> str:
    """The shared functions, then the named files, as one script's text."""
    text = "\n".join((LUA_DIR / f"{name}.lua").read_text() for name in (LIBRARY, *names))
    # The prefix is written once in the Lua; it must be the one the Python side uses.
    assert f"local P = '{KEY_PREFIX}'" in text
    return text


@functools.cache
def script(*names: str, tail: str = "") -> LuaScript:
    """The script made of the shared functions, the named files, and `tail`."""
    return LuaScript.of(source(*names) + "\n" + tail)


def run(client: redis.Redis | Any, lua: LuaScript, keys: list[Any], args: list[Any]) -> Any:
    """EVALSHA on a client or a pipeline, the script's text once where Redis lacks it.

    On a pipeline the answer comes with the pipeline's (EVALSHA of an unknown
    script fails there: load it first with `preload`).
    """
    try:
        return client.evalsha(lua.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return client.eval(lua.source.decode(), len(keys), *keys, *args)


def preload(client: redis.Redis, *scripts: LuaScript) -> None:
    """Make Redis know `scripts` (before they run inside a pipeline)."""
    for lua in scripts:
        client.script_load(lua.source.decode())
