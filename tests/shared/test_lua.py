"""Scripts name their KEYS and ARGV: the builder lays them out from names and
refuses a script that reads a name no header declares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from shared import lua


@pytest.fixture
def lua_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scripts folder of the tests' own, with its libraries' folder."""
    (tmp_path / "lib").mkdir()
    monkeypatch.setattr(lua, "LUA_DIR", tmp_path)
    lua.script.cache_clear()
    yield tmp_path
    lua.script.cache_clear()


def test_keys_and_args_are_laid_out_by_name_in_declaration_order(lua_dir: Path) -> None:
    (lua_dir / "pair.lua").write_text(
        "-- KEY counter: a counter\n"
        "-- ARG step: how much to add\n"
        "-- ARG label: its label\n"
        "-- ARG items...: the rest\n"
        "redis.call('INCRBY', KEY.counter, ARG.step)\n"
        "return {ARG.label, #ARG.items, ARG.items[1]}\n"
    )
    script = lua.script("pair")
    assert (script.keys, script.args, script.arg_rest) == (("counter",), ("step", "label"), "items")
    call = script.call({"counter": "c"}, {"label": "x", "step": 3, "items": ["a", "b"]})
    assert call.keys == ["c"]
    assert call.args == [3, "x", "a", "b"]
    client = fakeredis.FakeRedis()
    assert call.run(client) == [b"x", 2, b"a"]
    assert client.get("c") == b"3"


def test_the_rest_of_keys_is_a_list_too(lua_dir: Path) -> None:
    (lua_dir / "count.lua").write_text(
        "-- KEY first: a list\n-- KEY others...: more lists\n"
        "local n = redis.call('LLEN', KEY.first)\n"
        "for _, key in ipairs(KEY.others) do n = n + redis.call('LLEN', key) end\nreturn n\n"
    )
    client = fakeredis.FakeRedis()
    for key in ("a", "b", "c"):
        client.rpush(key, "x", "y")
    call = lua.script("count").call({"first": "a", "others": ["b", "c"]})
    assert call.keys == ["a", "b", "c"]
    assert call.run(client) == 6


def test_a_library_declares_the_names_it_reads(lua_dir: Path) -> None:
    (lua_dir / "lib" / "double.lua").write_text(
        "-- ARG value: a number\nlocal function double() return tonumber(ARG.value) * 2 end\n"
    )
    (lua_dir / "twice.lua").write_text(
        "-- uses: double\n-- ARG extra: added\nreturn double() + ARG.extra\n"
    )
    script = lua.script("twice")
    assert set(script.args) == {"value", "extra"}
    call = script.call(args={"value": 4, "extra": 1, "unused": "ignored"})
    assert call.run(fakeredis.FakeRedis()) == 9


def test_a_missing_name_is_refused_naming_it(lua_dir: Path) -> None:
    (lua_dir / "one.lua").write_text("-- KEY target: a key\n-- ARG value: a value\nreturn 1\n")
    with pytest.raises(ValueError, match="one needs target, value"):
        lua.script("one").call()


def test_a_script_reading_an_undeclared_name_is_refused(lua_dir: Path) -> None:
    (lua_dir / "typo.lua").write_text("-- ARG job: the job id\nreturn ARG.jbo\n")
    with pytest.raises(ValueError, match=r"reads ARG\.jbo, which no header declares"):
        lua.script("typo")


def test_every_darkroom_script_builds_and_declares_what_it_reads() -> None:
    for path in lua.LUA_DIR.glob("*.lua"):
        assert lua.script(path.stem).lua.sha
