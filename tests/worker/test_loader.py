"""Loading registry models for real (tiny pipelines, CPU): fallback, custom classes, reasons."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

from shared.errors import ConfigError, ModelLoadError
from shared.registry import ModelEntry, Registry, load_registry
from tests.conftest import write_registry
from tests.support.pipelines import FlakyPipeline
from worker.loader import (
    describe_failure,
    load_first_available,
    load_model,
    pipeline_classes,
)

BAD_CLASSES = """
  bad-module:
    id: "{tiny}"
    type: custom
    pipeline_class: "nope.module:X"
  bad-attribute:
    id: "{tiny}"
    type: custom
    pipeline_class: "tests.support.pipelines:NoSuchPipeline"
  no-colon:
    id: "{tiny}"
    type: custom
    pipeline_class: "no_colon"
  empty-dir:
    id: "{empty}"
    type: sd
"""


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loader-registry")


def registry(
    directory: Path, tiny_dir: Path, primary: str = "tiny-sd", extra: str = ""
) -> Registry:
    """A registry with the conftest models (tiny-sd, tiny-flaky, missing) and `extra` models."""
    path = directory / f"models-{primary}-{abs(hash(extra))}.yaml"
    return load_registry(write_registry(path, tiny_dir, primary=primary, extra=extra))


@pytest.fixture(scope="module")
def missing_first(registry_dir: Path, tiny_model_dir: Path) -> Registry:
    """Primary "missing" (no files on disk), fallback tiny-sd."""
    return registry(registry_dir, tiny_model_dir, primary="missing")


@pytest.fixture(scope="module")
def with_bad_classes(registry_dir: Path, tiny_model_dir: Path) -> Registry:
    empty = registry_dir / "empty-model-dir"
    empty.mkdir(exist_ok=True)
    return registry(
        registry_dir, tiny_model_dir, extra=BAD_CLASSES.format(tiny=tiny_model_dir, empty=empty)
    )


# --- the fallback chain ------------------------------------------------------


def test_primary_with_missing_files_falls_back_to_tiny_sd(missing_first: Registry) -> None:
    assert missing_first.load_order() == ["missing", "tiny-sd"]

    loaded, failures = load_first_available(missing_first, missing_first.load_order(), "cpu")

    assert loaded is not None
    assert loaded.name == "tiny-sd"
    assert isinstance(loaded.txt2img, StableDiffusionPipeline)
    assert [f.model for f in failures] == ["missing"]
    [failure] = failures
    assert "model files missing" in failure.reason
    assert "local directory" in failure.reason
    assert "not-there" in failure.reason


def test_every_model_failing_gives_none_and_the_failures(missing_first: Registry) -> None:
    loaded, failures = load_first_available(missing_first, ["missing"], "cpu")

    assert loaded is None
    assert [f.model for f in failures] == ["missing"]
    assert "model files missing" in failures[0].reason


def test_failures_are_listed_in_the_order_tried(with_bad_classes: Registry) -> None:
    order = ["bad-module", "no-colon", "missing", "tiny-flaky"]

    loaded, failures = load_first_available(with_bad_classes, order, "cpu")

    assert loaded is not None
    assert loaded.name == "tiny-flaky"
    assert [f.model for f in failures] == ["bad-module", "no-colon", "missing"]


def test_primary_that_loads_reports_no_failures(missing_first: Registry) -> None:
    loaded, failures = load_first_available(missing_first, ["tiny-sd", "missing"], "cpu")

    assert loaded is not None
    assert loaded.name == "tiny-sd"
    assert failures == []


def test_enable_fallback_false_leaves_only_the_primary(missing_first: Registry) -> None:
    no_fallback = missing_first.with_overrides(enable_fallback=False)

    assert no_fallback.load_order() == ["missing"]
    assert no_fallback.fallback_chain == []
    loaded, failures = load_first_available(no_fallback, no_fallback.load_order(), "cpu")
    assert loaded is None
    assert [f.model for f in failures] == ["missing"]


def test_a_pinned_model_is_the_only_one_tried(missing_first: Registry) -> None:
    assert missing_first.load_order(pinned="tiny-flaky") == ["tiny-flaky"]
    assert missing_first.load_order(pinned="missing") == ["missing"]


def test_pinning_an_unknown_model_is_a_config_error(missing_first: Registry) -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        missing_first.load_order(pinned="nope")


# --- pipeline classes --------------------------------------------------------


def test_custom_pipeline_class_from_yaml_alone(registry_dir: Path, tiny_model_dir: Path) -> None:
    extra = f"""
      tiny-custom:
        id: "{tiny_model_dir}"
        type: my-own-type
        pipeline_class: "tests.support.pipelines:FlakyPipeline"
        params:
          default_steps: 2
          default_size: [64, 64]
          max_size: [64, 64]
    """
    reg = registry(registry_dir, tiny_model_dir, extra=extra)

    loaded, failures = load_first_available(reg, reg.load_order(pinned="tiny-custom"), "cpu")

    assert failures == []
    assert loaded is not None
    assert loaded.name == "tiny-custom"
    assert type(loaded.txt2img) is FlakyPipeline
    # A custom class names no img2img class, so there is none.
    assert loaded.img2img is None


def test_known_type_gets_txt2img_and_img2img_classes(missing_first: Registry) -> None:
    t2i, i2i = pipeline_classes(missing_first.models["tiny-sd"])
    assert (t2i, i2i) == (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline)

    loaded = load_model(
        "tiny-sd", missing_first.models["tiny-sd"], missing_first.runtime.memory, "cpu"
    )
    assert isinstance(loaded.img2img, StableDiffusionImg2ImgPipeline)
    assert loaded.plan.dtype == torch.float32


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("bad-module", ["cannot import pipeline class 'nope.module:X'", "nope"]),
        ("bad-attribute", ["cannot import pipeline class", "NoSuchPipeline"]),
        ("no-colon", ["'no_colon'", "must look like 'package.module:Class'"]),
    ],
)
def test_a_bad_pipeline_class_fails_with_a_clear_reason(
    with_bad_classes: Registry, model: str, words: list[str]
) -> None:
    entry = with_bad_classes.models[model]
    with pytest.raises(ModelLoadError):
        pipeline_classes(entry)

    loaded, [failure] = load_first_available(with_bad_classes, [model], "cpu")

    assert loaded is None
    assert failure.model == model
    for word in words:
        assert word in failure.reason


def test_an_existing_directory_without_a_model_is_files_missing(
    with_bad_classes: Registry,
) -> None:
    loaded, [failure] = load_first_available(with_bad_classes, ["empty-dir"], "cpu")

    assert loaded is None
    assert "model files missing" in failure.reason, failure.reason


# --- describe_failure --------------------------------------------------------

HUB_ENTRY = ModelEntry(id="someone/some-model", type="sd")
LOCAL_ENTRY = ModelEntry(id="/models/some-model", type="sd")


class GatedRepoError(Exception):
    """Stands for huggingface_hub's error of the same name (matched by name)."""


def test_describe_gated_repo() -> None:
    reason = describe_failure(GatedRepoError("Access to model x is restricted"), HUB_ENTRY)

    assert reason.startswith("gated model: authentication required")
    assert "HF_TOKEN" in reason
    assert "GatedRepoError: Access to model x is restricted" in reason


def test_describe_a_401_as_gated() -> None:
    reason = describe_failure(OSError("401 Client Error: Unauthorized"), HUB_ENTRY)
    assert reason.startswith("gated model")


def test_describe_cuda_out_of_memory() -> None:
    reason = describe_failure(torch.cuda.OutOfMemoryError("CUDA out of memory"), HUB_ENTRY)

    assert reason.startswith("out of memory")
    assert "use_8bit" in reason
    assert "enable_cpu_offload" in reason
    assert "OutOfMemoryError: CUDA out of memory" in reason


@pytest.mark.parametrize(
    ("entry", "where"), [(LOCAL_ENTRY, "local directory"), (HUB_ENTRY, "hub (or cache)")]
)
def test_describe_file_not_found(entry: ModelEntry, where: str) -> None:
    reason = describe_failure(FileNotFoundError("no file named model_index.json"), entry)

    assert reason.startswith(f"model files missing or unreachable in the {where}")
    assert "FileNotFoundError: no file named model_index.json" in reason


def test_describe_anything_else_is_its_first_line() -> None:
    reason = describe_failure(RuntimeError("shape mismatch\nlong traceback detail"), HUB_ENTRY)
    assert reason == "RuntimeError: shape mismatch"


def test_describe_keeps_reasons_short() -> None:
    reason = describe_failure(RuntimeError("x" * 5000), HUB_ENTRY)
    assert len(reason) <= 500


def test_describe_a_local_directory_that_does_not_exist(tmp_path: Path) -> None:
    # diffusers raises ValueError, not OSError, for a local path that is not there.
    gone = ModelEntry(id=str(tmp_path / "gone"), type="sd")
    error = ValueError(f'"{tmp_path / "gone"}" is neither a valid local path nor a valid repo id')

    reason = describe_failure(error, gone)

    assert reason.startswith("model files missing or unreachable in the local directory")


def test_describe_a_value_error_in_an_existing_directory_is_not_files_missing(
    tmp_path: Path,
) -> None:
    present = ModelEntry(id=str(tmp_path), type="sd")

    reason = describe_failure(ValueError("bad config value"), present)

    assert reason == "ValueError: bad config value"
