"""darkroom.processes: the launcher under darkroom up, the benchmarks and the tests."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from darkroom.processes import ChildExited, spawn, stop_together


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_says_how_with_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "short.log"
    child = spawn("short", python("print('one'); print('two'); raise SystemExit(3)"), log_path=log)
    assert child.wait(timeout=30) == 3

    with pytest.raises(ChildExited, match="short exited with code 3") as raised:
        child.check(lines=1)
    assert str(raised.value).endswith(f"the end of {log}:\ntwo")


def test_waiting_on_a_child_ends_as_soon_as_it_exits(tmp_path: Path) -> None:
    child = spawn("quitter", python("raise SystemExit(1)"), log_path=tmp_path / "q.log")
    # The condition never holds: only the exit ends the wait, long before 60 s.
    with pytest.raises(ChildExited, match="quitter exited with code 1"):
        child.wait_until(lambda: False, timeout_s=60)


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    child = spawn("stubborn", python(code), log_path=tmp_path / "s.log")
    child.wait_until(lambda: "ready" in child.log_text(), timeout_s=30)

    assert child.stop(timeout_s=0.5) is False
    assert child.proc.returncode == -signal.SIGKILL


def test_children_stopped_together_each_get_one_sigterm(tmp_path: Path) -> None:
    children = [
        spawn(f"sleeper{i}", python("import time; time.sleep(60)"), log_path=tmp_path / f"{i}.log")
        for i in range(2)
    ]
    stop_together(children, timeout_s=30)
    assert [c.proc.returncode for c in children] == [-signal.SIGTERM, -signal.SIGTERM]


def test_a_log_appended_to_keeps_what_it_held(tmp_path: Path) -> None:
    log = tmp_path / "kept.log"
    log.write_text("before\n")
    spawn("again", python("print('after')"), log_path=log, append=True).wait(timeout=30)
    assert log.read_text().splitlines() == ["before", "after"]
