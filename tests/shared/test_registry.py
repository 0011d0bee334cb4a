"""The model registry: the shipped file, environment overrides, and bad files refused clearly."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.registry import load_registry, registry_for
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "model_config.yaml"

HUB_IDS = {
    "flux-schnell": "black-forest-labs/FLUX.1-schnell",
    "flux-dev": "black-forest-labs/FLUX.1-dev",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "playground": "playgroundai/playground-v2.5-1024px-aesthetic",
    "sd3-medium": "stabilityai/stable-diffusion-3-medium-diffusers",
}


@pytest.fixture(autouse=True)
def no_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_CONFIG", "PRIMARY_MODEL", "ENABLE_FALLBACK"):
        monkeypatch.delenv(name, raising=False)


def settings_for(path: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, registry_path=path, **overrides)  # type: ignore[call-arg]


def write(tmp_path: Path, text: str, name: str = "models.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def registry_with_model(tmp_path: Path, entry: str, runtime: str = "") -> Path:
    """A registry with one model `x`, its entry given as indented YAML."""
    body = "models:\n  x:\n" + textwrap.indent(textwrap.dedent(entry), "    ")
    body += runtime or "runtime:\n  primary_model: x\n"
    return write(tmp_path, body)


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    return str(info.value)


# --- the shipped registry ------------------------------------------------------


def test_shipped_registry_loads_with_real_hub_ids() -> None:
    registry = load_registry(SHIPPED)
    for name, hub_id in HUB_IDS.items():
        assert registry.models[name].id == hub_id
        assert not registry.models[name].is_local
    assert {"tiny-sd", *HUB_IDS} <= set(registry.models)
    assert registry.models["flux-schnell"].type == "flux"
    assert registry.models["flux-schnell"].requires_auth is True
    assert registry.models["flux-schnell"].params.default_steps == 4
    assert registry.models["flux-schnell"].params.use_negative_prompt is False
    assert registry.models["sdxl"].type == "sdxl"
    assert registry.models["sdxl"].requires_auth is False
    assert registry.models["sd3-medium"].type == "sd3"
    assert registry.runtime.primary_model == "sdxl"
    assert registry.fallback_chain == ["playground", "tiny-sd"]


def test_shipped_tiny_sd_resolves_against_the_registry_folder() -> None:
    tiny = load_registry(SHIPPED).models["tiny-sd"]
    assert tiny.builder == "tiny-sd"
    assert tiny.is_local
    assert tiny.id == str((REPO_ROOT / ".darkroom" / "models" / "tiny-sd").resolve())


# --- environment over YAML -------------------------------------------------------


def test_primary_model_override_and_fallback_off() -> None:
    registry = registry_for(settings_for(SHIPPED, primary_model="flux-dev", enable_fallback=False))
    assert registry.runtime.primary_model == "flux-dev"
    assert registry.runtime.enable_fallback is False
    assert registry.fallback_chain == []
    assert registry.load_order() == ["flux-dev"]


def test_primary_override_drops_itself_from_the_fallback_chain() -> None:
    registry = registry_for(settings_for(SHIPPED, primary_model="playground"))
    assert registry.runtime.primary_model == "playground"
    assert registry.fallback_chain == ["tiny-sd"]
    assert registry.load_order() == ["playground", "tiny-sd"]


def test_autoscaled_models_marks_models_on_top_of_the_registry() -> None:
    registry = registry_for(settings_for(SHIPPED, autoscaled_models="sdxl, flux-dev"))
    assert {n for n, m in registry.models.items() if m.autoscaled} == {"sdxl", "flux-dev"}
    with pytest.raises(ConfigError, match=r"AUTOSCALED_MODELS: unknown model.*nope"):
        registry_for(settings_for(SHIPPED, autoscaled_models="sdxl,nope"))


def test_override_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_CONFIG", str(SHIPPED))
    monkeypatch.setenv("PRIMARY_MODEL", "sd3-medium")
    monkeypatch.setenv("ENABLE_FALLBACK", "0")
    registry = registry_for(Settings(_env_file=None))  # type: ignore[call-arg]
    assert registry.runtime.primary_model == "sd3-medium"
    assert registry.fallback_chain == []


def test_no_overrides_keeps_yaml_values() -> None:
    registry = registry_for(settings_for(SHIPPED))
    assert registry.runtime.primary_model == "sdxl"
    assert registry.runtime.enable_fallback is True


def test_unknown_primary_model_names_it() -> None:
    with pytest.raises(ConfigError) as info:
        registry_for(settings_for(SHIPPED, primary_model="dall-e-9"))
    message = str(info.value)
    assert "PRIMARY_MODEL='dall-e-9'" in message
    assert "sdxl" in message  # the known names are listed


def test_entry_of_unknown_model_is_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        load_registry(SHIPPED).entry("nope")


def test_pinned_load_order() -> None:
    assert load_registry(SHIPPED).load_order(pinned="flux-dev") == ["flux-dev"]


# --- bad files ------------------------------------------------------------------------


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = registry_with_model(
        tmp_path,
        """
        id: org/model
        type: sd
        params:
          max_stepz: 10
        """,
    )
    message = config_error(path)
    assert str(path) in message
    assert "models.x.params.max_stepz" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        models:
          x: {id: org/model, type: sd}
        runtime: {primary_model: x}
        extras: true
        """,
    )
    message = config_error(path)
    assert str(path) in message
    assert "extras" in message
    assert "Extra inputs are not permitted" in message


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    path = registry_with_model(
        tmp_path,
        """
        id: org/model
        type: sd
        params:
          max_steps: lots
        """,
    )
    message = config_error(path)
    assert str(path) in message
    assert "models.x.params.max_steps" in message
    assert "valid integer" in message


def test_default_steps_over_max_steps_is_refused(tmp_path: Path) -> None:
    path = registry_with_model(
        tmp_path,
        """
        id: org/model
        type: sd
        params:
          default_steps: 60
          max_steps: 50
        """,
    )
    message = config_error(path)
    assert str(path) in message
    assert "models.x.params" in message
    assert "default_steps 60 > max_steps 50" in message


@pytest.mark.parametrize(
    ("sizes", "reason"),
    [
        (
            "default_size: [100, 64]\n  max_size: [1024, 1024]",
            "default_size must be positive multiples of 8, got 100x64",
        ),
        (
            "default_size: [512, 512]\n  max_size: [1024, 1020]",
            "max_size must be positive multiples of 8, got 1024x1020",
        ),
        (
            "default_size: [0, 64]\n  max_size: [1024, 1024]",
            "default_size must be positive multiples of 8, got 0x64",
        ),
    ],
)
def test_size_not_multiple_of_8_is_refused(tmp_path: Path, sizes: str, reason: str) -> None:
    path = registry_with_model(tmp_path, f"id: org/model\ntype: sd\nparams:\n  {sizes}\n")
    message = config_error(path)
    assert str(path) in message
    assert "models.x.params" in message
    assert reason in message


def test_default_size_over_max_size_is_refused(tmp_path: Path) -> None:
    path = registry_with_model(
        tmp_path,
        """
        id: org/model
        type: sd
        params:
          default_size: [1024, 1024]
          max_size: [512, 512]
        """,
    )
    message = config_error(path)
    assert "models.x.params" in message
    assert "exceeds max_size" in message


def test_unknown_type_without_pipeline_class_is_refused(tmp_path: Path) -> None:
    path = registry_with_model(tmp_path, "id: org/model\ntype: kandinsky\n")
    message = config_error(path)
    assert str(path) in message
    assert "models.x" in message
    assert "type 'kandinsky' is not one of sd, sdxl, sd3, flux, auto" in message
    assert "pipeline_class" in message


def test_unknown_type_with_pipeline_class_is_accepted(tmp_path: Path) -> None:
    path = registry_with_model(
        tmp_path, 'id: org/model\ntype: kandinsky\npipeline_class: "pkg.mod:Pipe"\n'
    )
    entry = load_registry(path).models["x"]
    assert entry.type == "kandinsky"
    assert entry.pipeline_class == "pkg.mod:Pipe"


def test_primary_not_defined_is_refused(tmp_path: Path) -> None:
    path = registry_with_model(
        tmp_path, "id: org/model\ntype: sd\n", runtime="runtime:\n  primary_model: ghost\n"
    )
    message = config_error(path)
    assert str(path) in message
    assert "runtime.primary_model" in message
    assert "'ghost'" in message
    assert "not defined in models" in message


def test_fallback_not_defined_is_refused(tmp_path: Path) -> None:
    path = registry_with_model(
        tmp_path,
        "id: org/model\ntype: sd\n",
        runtime="runtime:\n  primary_model: x\n  fallback_models: [x, ghost]\n",
    )
    message = config_error(path)
    assert str(path) in message
    assert "runtime.fallback_models" in message
    assert "'ghost'" in message


def test_missing_runtime_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  x: {id: org/model, type: sd}\n")
    message = config_error(path)
    assert str(path) in message
    assert "runtime: Field required" in message


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  x: {id: org/model, type: sd\nruntime: [\n")
    message = config_error(path)
    assert str(path) in message
    assert "not valid YAML" in message
    assert "line" in message  # the parser's position comes along


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "42\n"])
def test_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert str(path) in message
    assert "expected a mapping" in message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "models.yaml"
    message = config_error(path)
    assert str(path) in message
    assert "not found" in message
    assert "MODEL_CONFIG" in message


def test_registry_for_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        registry_for(settings_for(tmp_path / "absent.yaml"))


# --- local ids --------------------------------------------------------------------------


def test_relative_ids_resolve_against_the_yaml_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(
        folder,
        """
        models:
          here: {id: "./weights/here", type: sd}
          up: {id: "../shared/up", type: sd}
          absolute: {id: "/opt/models/abs", type: sd}
          hub: {id: "org/model", type: sd}
        runtime: {primary_model: here}
        """,
    )
    # The process's working directory must not matter.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    models = load_registry(path).models
    assert models["here"].id == str(folder / "weights" / "here")
    assert models["up"].id == str(tmp_path / "shared" / "up")
    assert models["absolute"].id == "/opt/models/abs"
    assert models["hub"].id == "org/model"
    assert models["here"].is_local
    assert models["up"].is_local
    assert models["absolute"].is_local
    assert not models["hub"].is_local


def test_relative_registry_path_resolves_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "models:\n  m: {id: ./m, type: sd}\nruntime: {primary_model: m}\n")
    monkeypatch.chdir(tmp_path)
    registry = load_registry(Path("models.yaml"))
    assert registry.models["m"].id == str(tmp_path.resolve() / "m")


def test_batching_is_off_unless_a_model_asks_for_it(tmp_path: Path) -> None:
    shipped = load_registry(SHIPPED)
    assert all(entry.max_batch_size == 1 for entry in shipped.models.values())
    path = registry_with_model(
        tmp_path, 'id: "a/b"\ntype: sd\nmax_batch_size: 4\nbatch_window: 0.2\n'
    )
    entry = load_registry(path).entry("x")
    assert (entry.max_batch_size, entry.batch_window) == (4, 0.2)


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("max_batch_size: 0", "models.x.max_batch_size"),
        ("max_batch_size: 1000", "models.x.max_batch_size"),
        ("max_batch_size: four", "models.x.max_batch_size"),
        ("batch_window: -1", "models.x.batch_window"),
    ],
)
def test_bad_batching_settings_name_the_key(tmp_path: Path, setting: str, key: str) -> None:
    message = config_error(registry_with_model(tmp_path, f'id: "a/b"\ntype: sd\n{setting}\n'))
    assert key in message
