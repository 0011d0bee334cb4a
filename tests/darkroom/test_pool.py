"""`darkroom worker --gpus/--workers`: which devices, which environment, how many threads."""

from __future__ import annotations

import os

import pytest

from darkroom import pool


def test_gpu_lists_are_parsed_and_checked() -> None:
    assert pool.resolve_gpus("0,2") == ["0", "2"]
    assert pool.resolve_gpus(" 1 ") == ["1"]
    for bad in ("", "a,b", "0;1", "-1"):
        with pytest.raises(SystemExit, match="expected 'all' or indices"):
            pool.resolve_gpus(bad)


def test_all_gpus_without_any_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "list_gpus", list)
    with pytest.raises(SystemExit, match="no GPU found"):
        pool.resolve_gpus("all")


def test_each_gpu_child_sees_only_its_device() -> None:
    env = pool.child_env({"PATH": "/bin"}, "2", threads=4)
    assert env == {
        "PATH": "/bin",
        "CUDA_VISIBLE_DEVICES": "2",
        "DEVICE": "cuda",
        "TORCH_THREADS": "4",
    }
    cpu = pool.child_env({"PATH": "/bin"}, None, threads=1)
    assert "CUDA_VISIBLE_DEVICES" not in cpu
    assert cpu["TORCH_THREADS"] == "1"


def test_threads_split_the_cores_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert pool.threads_per_worker(2) == 4
    assert pool.threads_per_worker(3) == 2
    assert pool.threads_per_worker(16) == 1
    assert pool.threads_per_worker(2, "3") == 3


def test_children_without_a_name_each_get_a_unique_one() -> None:
    names = {pool.child_name("cpu0", None) for _ in range(50)}
    assert len(names) == 50  # a second pool on the same host takes none of these
    assert all(name.startswith(f"cpu0-{os.getpid()}-") and name.endswith("@%h") for name in names)
    assert pool.child_name("gpu1", "gpu@%h") == "gpu1@gpu@%h"
    assert pool.child_name("cpu0", "pooltest") == "cpu0@pooltest"
