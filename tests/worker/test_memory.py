"""runtime.memory toggles on the real tiny pipeline, on a CPU DevicePlan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.jobs import GenerationParams
from shared.registry import MemoryConfig, ModelEntry, Registry, load_registry
from tests.conftest import write_registry
from worker.devices import DevicePlan, plan_device
from worker.inference import generate
from worker.loader import LoadedModel, load_model
from worker.memory import apply_memory_options, quantization_config

CPU = DevicePlan("cpu", torch.float32)
# Every toggle off: the baseline each test changes one thing against.
ALL_OFF = MemoryConfig(
    enable_cpu_offload=False,
    enable_attention_slicing=False,
    enable_vae_slicing=False,
    use_8bit=False,
)


@pytest.fixture(scope="module")
def entry(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> ModelEntry:
    path = tmp_path_factory.mktemp("memory-registry") / "models.yaml"
    registry: Registry = load_registry(write_registry(path, tiny_model_dir))
    return registry.models["tiny-sd"]


def load(entry: ModelEntry, **toggles: bool) -> LoadedModel:
    """A fresh tiny pipeline (about 0.1 s) with `toggles` over ALL_OFF."""
    return load_model("tiny-sd", entry, ALL_OFF.model_copy(update=toggles), "cpu")


def processor_types(pipe: object) -> set[str]:
    return {type(p).__name__ for p in pipe.unet.attn_processors.values()}  # type: ignore[attr-defined]


def small_job(seed: int = 3) -> GenerationParams:
    return GenerationParams(
        prompt="a lighthouse",
        negative_prompt=None,
        width=64,
        height=64,
        steps=2,
        guidance_scale=7.5,
        seed=seed,
        num_images=2,
    )


def test_cpu_device_plan(entry: ModelEntry) -> None:
    assert plan_device("cpu", entry) == CPU
    assert not CPU.is_cuda


def test_all_off_leaves_the_pipeline_as_loaded(entry: ModelEntry) -> None:
    model = load(entry)

    assert model.notes == []
    assert "SlicedAttnProcessor" not in processor_types(model.txt2img)
    assert model.txt2img.vae.use_slicing is False
    assert model.txt2img.device.type == "cpu"


def test_attention_slicing_swaps_the_unet_attention_processors(entry: ModelEntry) -> None:
    before = processor_types(load(entry).txt2img)

    model = load(entry, enable_attention_slicing=True)
    after = processor_types(model.txt2img)

    assert after != before
    assert after == {"SlicedAttnProcessor"}
    assert "attention slicing on" in model.notes
    # img2img shares the UNet, so it slices too.
    assert processor_types(model.img2img) == {"SlicedAttnProcessor"}


def test_attention_slicing_off_keeps_unsliced_processors(entry: ModelEntry) -> None:
    model = load(entry, enable_attention_slicing=False)

    assert "SlicedAttnProcessor" not in processor_types(model.txt2img)
    assert not any("attention slicing" in note for note in model.notes)


def test_vae_slicing_on_sets_use_slicing(entry: ModelEntry) -> None:
    model = load(entry, enable_vae_slicing=True)

    assert model.txt2img.vae.use_slicing is True
    assert "VAE slicing on" in model.notes


def test_vae_slicing_off_leaves_use_slicing_false(entry: ModelEntry) -> None:
    model = load(entry, enable_vae_slicing=False)

    assert model.txt2img.vae.use_slicing is False
    assert not any("VAE slicing" in note for note in model.notes)


def test_vae_slicing_is_on_by_default(entry: ModelEntry) -> None:
    model = load_model("tiny-sd", entry, MemoryConfig(), "cpu")
    assert model.txt2img.vae.use_slicing is True


def test_cpu_offload_on_cpu_is_a_note_and_the_pipeline_stays_on_cpu(entry: ModelEntry) -> None:
    model = load(entry, enable_cpu_offload=True)

    notes = [n for n in model.notes if "enable_cpu_offload" in n]
    assert notes == ["enable_cpu_offload ignored: CPU offload needs CUDA"]
    assert model.txt2img.device.type == "cpu"
    # No accelerate hooks were installed.
    assert getattr(model.txt2img.unet, "_hf_hook", None) is None
    assert len(generate(model, small_job())) == 2


def test_use_8bit_on_cpu_is_a_note_and_no_quantisation(entry: ModelEntry) -> None:
    notes: list[str] = []
    assert (
        quantization_config(ALL_OFF.model_copy(update={"use_8bit": True}), CPU, entry, notes)
        is None
    )
    assert notes == ["use_8bit ignored: bitsandbytes 8-bit quantisation needs CUDA"]

    model = load(entry, use_8bit=True)

    assert any("use_8bit" in n and "needs CUDA" in n for n in model.notes)
    assert model.txt2img.unet.dtype == torch.float32
    assert len(generate(model, small_job())) == 2


def test_every_toggle_at_once_on_cpu(entry: ModelEntry) -> None:
    model = load(
        entry,
        enable_cpu_offload=True,
        enable_attention_slicing=True,
        enable_vae_slicing=True,
        use_8bit=True,
    )

    assert processor_types(model.txt2img) == {"SlicedAttnProcessor"}
    assert model.txt2img.vae.use_slicing is True
    assert sum("needs CUDA" in n for n in model.notes) == 2
    images = generate(model, small_job())
    assert [image.size for image in images] == [(64, 64), (64, 64)]


def test_generation_with_slicing_matches_generation_without(entry: ModelEntry) -> None:
    """Slicing trades speed for memory; the images stay (numerically) the same."""
    plain = generate(load(entry), small_job(seed=9))
    sliced = generate(
        load(entry, enable_attention_slicing=True, enable_vae_slicing=True), small_job(seed=9)
    )

    assert [image.size for image in sliced] == [(64, 64), (64, 64)]
    for a, b in zip(plain, sliced, strict=True):
        difference = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert difference.max() <= 2, difference.max()


def test_apply_memory_options_on_a_pipeline_without_slicing_methods() -> None:
    """A custom pipeline lacking the methods is placed on its device, nothing more."""

    class Bare:
        def __init__(self) -> None:
            self.moved_to: str | None = None

        def to(self, device: str) -> Bare:
            self.moved_to = device
            return self

    pipe = Bare()
    notes: list[str] = []
    apply_memory_options(
        pipe, MemoryConfig(enable_attention_slicing=True, enable_vae_slicing=True), CPU, notes
    )

    assert pipe.moved_to == "cpu"
    assert notes == []
