"""darkroom's Redis scripts, each a `.lua` file of shared/lua/ that names the
libraries it uses and its KEYS and ARGV at the top:

    -- uses: sched store_job
    -- KEY record: the job's hash
    -- ARG job: the job id
    -- ARG fields...: the record's field names and JSON values (the rest of ARGV)

(`-- KEY name...:` likewise names the rest of KEYS, a list.)

Libraries are files of functions in shared/lua/lib/: the scheduler's (sched.lua:
every script that moves a waiting job writes its structures through them, so
they are written one way), and others that read KEY and ARG by the names their
own headers declare (store_job.lua). `script(name)` puts together the tables KEY
and ARG (name -> value, from KEYS and ARGV), the libraries and the script's body,
and refuses a script that reads a name no header declares. `Script.call` lays
out KEYS and ARGV from names: neither a caller nor a script counts positions,
and a script made of several files declares each name once, where it is read.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from shared.constants import KEY_PREFIX
from shared.multiplexed import LuaScript

LUA_DIR = Path(__file__).parent / "lua"
# The scheduler's library, where the key prefix is written.
SCHEDULER = "sched"
# "-- uses: sched store_job": the libraries (shared/lua/lib/) a script is made with.
_USES = re.compile(r"^-- uses:((?: [a-z_]+)+)$", re.MULTILINE)

# "-- KEY name: ..." or "-- ARG name: ...", "name...:" for the rest of KEYS or ARGV.
_DECLARATION = re.compile(r"^-- (KEY|ARG) ([a-z_][a-z0-9_]*)(\.\.\.)?:", re.MULTILINE)
_USE = re.compile(r"\b(KEY|ARG)\.([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class Call:
    """A script with its KEYS and ARGV laid out, and the names they were given."""

    script: Script
    keys: list[Any]
    args: list[Any]
    named_keys: Mapping[str, Any]
    named_args: Mapping[str, Any]

    @property
    def lua(self) -> LuaScript:
        return self.script.lua

    def run(self, client: redis.Redis | Any) -> Any:
        """Run on a synchronous client (see `run`)."""
        return run(client, self.lua, self.keys, self.args)

    def queue_on(self, pipe: Any) -> None:
        """Queue as EVALSHA on a pipeline (Redis must know the script: `preload`)."""
        pipe.evalsha(self.lua.sha, len(self.keys), *self.keys, *self.args)


@dataclass(frozen=True)
class Script:
    """A script's text and the names of its KEYS and ARGV, in their order."""

    name: str
    lua: LuaScript
    keys: tuple[str, ...]
    args: tuple[str, ...]
    # The names of the rest of KEYS and of ARGV (lists), where the script takes one.
    key_rest: str | None
    arg_rest: str | None

    def call(
        self, keys: Mapping[str, Any] | None = None, args: Mapping[str, Any] | None = None
    ) -> Call:
        """KEYS and ARGV from names (the rest of either: a list under its name).

        Names the script does not declare are left out, so one call's names can
        serve another script of the same family (the submission's undo)."""
        keys, args = keys or {}, args or {}
        missing = [n for n in (*self.keys, *filter(None, [self.key_rest])) if n not in keys]
        missing += [n for n in (*self.args, *filter(None, [self.arg_rest])) if n not in args]
        if missing:
            raise ValueError(f"script {self.name} needs {', '.join(missing)}")
        key_rest: Iterable[Any] = keys[self.key_rest] if self.key_rest else ()
        arg_rest: Iterable[Any] = args[self.arg_rest] if self.arg_rest else ()
        return Call(
            self,
            [*(keys[n] for n in self.keys), *key_rest],
            [*(args[n] for n in self.args), *arg_rest],
            keys,
            args,
        )


@functools.cache
def script(name: str) -> Script:
    """The script `name`.lua, with the libraries it uses in front."""
    own = (LUA_DIR / f"{name}.lua").read_text()
    libraries = [lib for found in _USES.findall(own) for lib in found.split()]
    texts = [(LUA_DIR / "lib" / f"{lib}.lua").read_text() for lib in libraries] + [own]
    names: dict[str, dict[str, None]] = {"KEY": {}, "ARG": {}}
    rests: dict[str, str] = {}
    for text in texts:
        for kind, declared, is_rest in _DECLARATION.findall(text):
            if not is_rest:
                names[kind][declared] = None
            elif rests.setdefault(kind, declared) != declared:
                raise ValueError(f"{name}.lua: two names for the rest of {kind}S")
    keys, args = list(names["KEY"]), list(names["ARG"])
    key_rest, rest = rests.get("KEY"), rests.get("ARG")
    body = "\n".join(texts)
    # The prefix is written once in the Lua; it must be the one the Python side uses.
    assert SCHEDULER not in libraries or f"local P = '{KEY_PREFIX}'" in body
    declared_names = {
        "KEY": {*keys, *filter(None, [key_rest])},
        "ARG": {*args, *filter(None, [rest])},
    }
    unknown = sorted(
        {f"{kind}.{n}" for kind, n in _USE.findall(body) if n not in declared_names[kind]}
    )
    if unknown:
        raise ValueError(f"{name}.lua reads {', '.join(unknown)}, which no header declares")
    prelude = _table("KEY", "KEYS", keys, key_rest) + _table("ARG", "ARGV", args, rest)
    return Script(name, LuaScript.of(prelude + body), tuple(keys), tuple(args), key_rest, rest)


def _table(table: str, source: str, names: list[str], rest: str | None) -> str:
    """Lua making `table` (name -> value) of `source` (KEYS or ARGV), its rest a list."""
    fields = ", ".join(f"{n} = {source}[{i}]" for i, n in enumerate(names, 1))
    lines = [f"local {table} = {{{fields}}}"]
    if rest:
        lines.append(f"{table}.{rest} = {{}}")
        lines.append(
            f"for i = {len(names) + 1}, #{source} do "
            f"{table}.{rest}[#{table}.{rest} + 1] = {source}[i] end"
        )
    return "\n".join(lines) + "\n"


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
