"""A worker's models (worker.models.ModelSet): three tiny models of different weights,
loaded on demand, kept resident under a budget, evicted least recently used."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from shared.errors import ModelLoadError
from shared.registry import Registry, load_registry
from tests.worker.test_inference import params
from worker import inference
from worker.loader import load_model
from worker.models import ModelSet, model_bytes
from worker.tiny import ensure_tiny_sd

NAMES = ["tiny-a", "tiny-b", "tiny-c"]


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """tiny-a, tiny-b, tiny-c: one architecture, three seeds (three models), and one
    whose files are missing."""
    root = tmp_path_factory.mktemp("three")
    small = {"default_steps": 2, "default_size": [64, 64], "max_size": [128, 128]}
    models: dict[str, object] = {
        name: {"id": str(ensure_tiny_sd(root / name, seed=seed)), "type": "sd", "params": small}
        for seed, name in enumerate(NAMES, start=1)
    }
    models["gone"] = {"id": str(root / "not-there"), "type": "sd", "params": small}
    runtime = {"primary_model": "tiny-a", "fallback_models": ["tiny-b"]}
    file = root / "models.yaml"
    file.write_text(yaml.safe_dump({"models": models, "runtime": runtime}))
    return load_registry(file)


def pixels(model: object) -> np.ndarray:
    [image] = inference.generate(model, params(prompt="a fox", seed=3))  # type: ignore[arg-type]
    return np.asarray(image, dtype=np.int16)


def test_each_model_is_loaded_once_while_resident_and_makes_its_own_images(
    three: Registry,
) -> None:
    loads: list[tuple[str, str, bool]] = []
    models = ModelSet(
        three, NAMES, "cpu", on_load=lambda n, source, _, swap: loads.append((n, source, swap))
    )
    first, failures = models.start(["tiny-a"])
    assert first is not None
    assert failures == []
    made = {}
    for name in [*NAMES, *NAMES]:
        alone = load_model(name, three.models[name], three.runtime.memory, "cpu")
        made[name] = pixels(models.get(name))
        assert np.array_equal(made[name], pixels(alone)), name
    # Three models, three different images for one prompt and seed.
    assert not np.array_equal(made["tiny-a"], made["tiny-b"])
    assert not np.array_equal(made["tiny-b"], made["tiny-c"])
    assert loads == [("tiny-a", "disk", False), ("tiny-b", "disk", True), ("tiny-c", "disk", True)]
    assert models.tiers() == dict.fromkeys(NAMES, "device")
    assert models.current == "tiny-c"


def test_a_budget_of_two_evicts_the_least_recently_used(three: Registry) -> None:
    size = model_bytes(load_model("tiny-a", three.models["tiny-a"], three.runtime.memory, "cpu"))
    loads: list[str] = []
    models = ModelSet(
        three, NAMES, "cpu", device_budget=int(size * 2.5), on_load=lambda n, *_: loads.append(n)
    )
    models.start(["tiny-a"])
    models.get("tiny-b")
    models.get("tiny-a")  # now tiny-b is the least recently used
    models.get("tiny-c")
    assert models.tiers() == {"tiny-a": "device", "tiny-c": "device"}
    models.get("tiny-a")
    assert loads == ["tiny-a", "tiny-b", "tiny-c"]  # tiny-a stayed: no second load
    models.get("tiny-b")
    assert loads[-1] == "tiny-b"
    assert set(models.tiers()) == {"tiny-a", "tiny-b"}


def test_a_model_that_will_not_load_names_itself_and_is_not_served_by_another(
    three: Registry,
) -> None:
    models = ModelSet(three, [*NAMES, "gone"], "cpu")
    models.start(["tiny-a"])
    with pytest.raises(ModelLoadError, match="model gone could not be loaded"):
        models.get("gone")
    assert models.tiers() == {"tiny-a": "device"}
    only_a = ModelSet(three, ["tiny-a"], "cpu")
    only_a.start(["tiny-a"])
    with pytest.raises(ModelLoadError, match="not one this worker serves"):
        only_a.get("tiny-b")


def test_the_start_follows_the_fallback_chain(three: Registry) -> None:
    models = ModelSet(three, [], "cpu")
    loaded, failures = models.start(["gone", "tiny-b"])
    assert loaded is not None
    assert loaded.name == "tiny-b"
    assert [f.model for f in failures] == ["gone"]
    assert "not-there" in failures[0].reason
    assert models.allowed == ["tiny-b"]
