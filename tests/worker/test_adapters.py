"""LoRA adapters on the tiny model (worker.adapters), with real adapters made by PEFT:
applied per call with their scales, none after, cached by content within the budget."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from shared.errors import GenerationError
from shared.loras import ResolvedLora
from shared.registry import Registry
from tests.support.loras import make_sd_lora
from tests.worker.test_inference import params
from worker import inference
from worker.batching import BatchKey
from worker.loader import LoadedModel, load_model
from worker.models import ModelSet, model_bytes


@pytest.fixture(scope="module")
def lora_files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("loras")
    return [make_sd_lora(tiny_model_dir, root / f"style-{i}.safetensors", seed=i) for i in (1, 2)]


def fresh(registry: Registry) -> LoadedModel:
    return load_model("tiny-sd", registry.models["tiny-sd"], registry.runtime.memory, "cpu")


def lora(path: Path, scale: float = 1.0) -> ResolvedLora:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ResolvedLora(name=path.stem, scale=scale, sha256=digest, kind="file", source=str(path))


def image(model: LoadedModel, loras: list[ResolvedLora] | None = None) -> np.ndarray:
    [made] = inference.generate(model, params(seed=3, loras=loras or []))
    return np.asarray(made, dtype=np.int16)


def test_adapters_apply_with_their_scales_and_leave_no_trace(
    registry: Registry, lora_files: list[Path]
) -> None:
    model = ModelSet.holding(fresh(registry)).get("tiny-sd")
    base = image(model)
    one, two = lora(lora_files[0]), lora(lora_files[1])

    styled = image(model, [one])
    assert np.abs(styled - base).max() > 10  # an adapter changes the image
    assert np.array_equal(image(model, [lora(lora_files[0], scale=0.0)]), base)  # scale 0: base
    both = image(model, [one, two])
    assert not np.array_equal(both, styled)  # two combine
    assert not np.array_equal(both, image(model, [two]))
    assert np.array_equal(image(model, [one]), styled)  # the same again, from the cache
    # A job without adapters right after: pixel for pixel a fresh worker's.
    assert np.array_equal(image(model), image(fresh(registry)))


def test_a_file_changed_since_submit_fails_its_job(
    registry: Registry, lora_files: list[Path], tmp_path: Path
) -> None:
    copy = tmp_path / "moving.safetensors"
    copy.write_bytes(lora_files[0].read_bytes())
    submitted = lora(copy)
    copy.write_bytes(lora_files[1].read_bytes())
    model = ModelSet.holding(fresh(registry)).get("tiny-sd")
    with pytest.raises(GenerationError, match="sha256"):
        image(model, [submitted])


def test_adapters_share_the_device_budget_least_recently_used_first(
    registry: Registry, lora_files: list[Path]
) -> None:
    model = fresh(registry)
    adapter_bytes = lora_files[0].stat().st_size
    # Room for the model and one adapter: the second one's load evicts the first.
    models = ModelSet.holding(model, model_bytes(model) + adapter_bytes * 3 // 2)
    cache = model.adapters
    assert cache is not None
    first, second = lora(lora_files[0]), lora(lora_files[1])
    image(model, [first])
    image(model, [second])
    assert list(cache.tiers()) == [second.cache_key]  # the first left the device
    assert cache.loads == {"host": 0, "source": 2}
    image(model, [first])
    assert cache.loads == {"host": 0, "source": 3}
    assert models._used("device") <= models.device_budget  # type: ignore[operator]


def test_jobs_batch_only_with_the_same_adapters_and_scales(lora_files: list[Path]) -> None:
    one = lora(lora_files[0])
    key = BatchKey.of(params(loras=[one]))
    assert key == BatchKey.of(params(loras=[one], prompt="another", seed=9))
    assert key != BatchKey.of(params(loras=[lora(lora_files[0], scale=0.5)]))
    assert key != BatchKey.of(params())
