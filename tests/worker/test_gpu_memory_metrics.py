"""darkroom_gpu_memory_bytes from torch.cuda's counters (a stand-in: no GPU here)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from worker.metrics import record_gpu_memory


class FakeCuda:
    def memory_allocated(self) -> int:
        return 3 * 2**30

    def memory_reserved(self) -> int:
        return 4 * 2**30

    def max_memory_allocated(self) -> int:
        return 5 * 2**30


def _gpu_bytes(device: str, kind: str) -> float | None:
    return REGISTRY.get_sample_value("darkroom_gpu_memory_bytes", {"device": device, "kind": kind})


def test_a_pool_child_reports_its_physical_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # The child sees its GPU as cuda:0; CUDA_VISIBLE_DEVICES says it is the host's GPU 2.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    record_gpu_memory("cuda", FakeCuda())
    assert _gpu_bytes("cuda:2", "allocated") == 3 * 2**30
    assert _gpu_bytes("cuda:2", "reserved") == 4 * 2**30
    assert _gpu_bytes("cuda:2", "peak") == 5 * 2**30


def test_a_cpu_worker_reports_no_gpu_memory() -> None:
    before = {
        s.labels["device"]
        for m in REGISTRY.collect()
        for s in m.samples
        if m.name == "darkroom_gpu_memory_bytes"
    }
    record_gpu_memory("cpu", FakeCuda())
    after = {
        s.labels["device"]
        for m in REGISTRY.collect()
        for s in m.samples
        if m.name == "darkroom_gpu_memory_bytes"
    }
    assert "cpu" not in after
    assert after == before
