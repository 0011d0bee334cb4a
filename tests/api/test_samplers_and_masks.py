"""A job's sampler and inpainting mask, resolved and refused before anything is queued."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.images import DecodedImage
from api.params import resolve_params, resolve_sampler
from shared.errors import InvalidRequest
from shared.jobs import JobCreate
from shared.registry import ModelEntry, ModelParams
from shared.samplers import NOISE_SAMPLERS, find_sampler

SD = ModelEntry(id="org/sd", type="sd", params=ModelParams(supports_inpainting=True))
FLUX = ModelEntry(id="org/flux", type="flux", params=ModelParams(use_negative_prompt=False))
SDXL_DEFAULT = ModelEntry(
    id="org/sdxl", type="sdxl", params=ModelParams(default_sampler="DPM++ 2M Karras")
)
IMAGE = DecodedImage(data=b"png", width=512, height=384, format="PNG")


def _png(size: tuple[int, int], mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_issue_names_are_all_known() -> None:
    for name in ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE", "DDIM"):
        assert find_sampler(name, "sd") is not None, name
    for name in ("UniPC", "LMS", "Heun"):
        assert find_sampler(name, "sdxl") is not None, name


@pytest.mark.parametrize(
    ("asked", "canonical"),
    [("euler a", "Euler a"), ("k_dpmpp_2m", "DPM++ 2M"), ("DDIM", "DDIM"), (None, None)],
)
def test_names_and_aliases_resolve_to_the_a1111_name(asked: str | None, canonical: str) -> None:
    assert resolve_sampler(asked, SD) == canonical


def test_the_models_default_sampler_applies_when_none_is_named() -> None:
    assert resolve_sampler(None, SDXL_DEFAULT) == "DPM++ 2M Karras"
    assert resolve_sampler("Euler", SDXL_DEFAULT) == "Euler"


def test_an_unknown_sampler_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as refused:
        resolve_sampler("DPM++ 9000", SD)
    assert refused.value.field == "sampler"
    message = str(refused.value)
    assert all(s.name in message for s in NOISE_SAMPLERS)


def test_flow_models_take_only_their_own_sampler() -> None:
    assert resolve_sampler("Euler", FLUX) == "Euler"
    with pytest.raises(InvalidRequest, match=r"known: Euler$"):
        resolve_sampler("DPM++ 2M", FLUX)


def test_a_registry_default_sampler_must_exist() -> None:
    with pytest.raises(ValueError, match="default_sampler 'Nope'"):
        ModelEntry(id="x", type="sd", params=ModelParams(default_sampler="Nope"))


def test_a_mask_makes_an_inpainting_job_at_full_strength() -> None:
    mask = DecodedImage(data=b"m", width=512, height=384, format="PNG")
    params = resolve_params(JobCreate(prompt="p", mask_image="m", init_image="i"), SD, IMAGE, mask)
    assert params.mode == "inpaint"
    assert params.strength == 1.0
    assert (params.width, params.height) == (512, 384)


@pytest.mark.parametrize(
    ("entry", "init", "mask_size", "expected"),
    [
        (SD, None, (512, 384), "needs the init_image"),
        (SD, IMAGE, (256, 256), r"must be the size of init_image \(512x384\)"),
        (SDXL_DEFAULT, IMAGE, (512, 384), "does not support inpainting"),
    ],
)
def test_masks_that_cannot_be_used_are_refused(
    entry: ModelEntry, init: DecodedImage | None, mask_size: tuple[int, int], expected: str
) -> None:
    mask = DecodedImage(data=b"m", width=mask_size[0], height=mask_size[1], format="PNG")
    with pytest.raises(InvalidRequest, match=expected) as refused:
        resolve_params(JobCreate(prompt="p", mask_image="m"), entry, init, mask)
    assert refused.value.field == "mask_image"


def test_post_jobs_answers_422_naming_the_field(api: TestClient) -> None:
    unknown = api.post("/jobs", json={"prompt": "p", "model": "tiny-sd", "sampler": "Nope"})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["field"] == "sampler"
    assert "DPM++ 2M Karras" in unknown.json()["error"]["message"]

    body = {"prompt": "p", "model": "tiny-sd", "init_image": _png((64, 64))}
    wrong_size = api.post("/jobs", json={**body, "mask_image": _png((32, 32), "L")})
    assert wrong_size.status_code == 422
    assert wrong_size.json()["error"]["field"] == "mask_image"

    accepted = api.post("/jobs", json={**body, "mask_image": _png((64, 64), "L")})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["params"]["mode"] == "inpaint"


def test_models_list_each_models_samplers_and_inpainting(api: TestClient) -> None:
    models = api.get("/models").json()["models"]
    assert models["tiny-sd"]["supports_inpainting"] is True
    assert "DPM++ 2M Karras" in models["tiny-sd"]["samplers"]
    assert models["tiny-flaky"]["supports_inpainting"] is False


# A1111 1.6+'s samplers and schedules (issue #29, 2).
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("DPM++ 3M SDE", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
        ("DPM++ 2M SDE Heun", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
        ("LCM", {}),
        # A1111 1.5's names with the schedule in them.
        ("DPM++ 3M SDE Exponential", {"solver_order": 3, "use_exponential_sigmas": True}),
        ("Euler Karras", {"use_karras_sigmas": True}),
    ],
)
def test_a1111_16_samplers_map_to_diffusers_options(name: str, options: dict[str, object]) -> None:
    sampler = find_sampler(name, "sdxl")
    assert sampler is not None, name
    assert options.items() <= sampler.options.items()
    assert resolve_sampler(name, SD) == sampler.name


@pytest.mark.parametrize("name", ["Restart", "DPM fast", "DPM adaptive", "DPM++ 2S a"])
def test_samplers_diffusers_cannot_express_are_refused_by_name(name: str) -> None:
    with pytest.raises(InvalidRequest, match="no diffusers counterpart") as refused:
        resolve_sampler(name, SD)
    assert name in str(refused.value)
    assert refused.value.field == "sampler"


@pytest.mark.parametrize(
    ("asked", "stored"),
    [
        ("Karras", "karras"),
        ("Exponential", "exponential"),
        ("SGM Uniform", "sgm_uniform"),
        ("sgm_uniform", "sgm_uniform"),
        ("Simple", "simple"),
        ("Beta", "beta"),
        ("Normal", "normal"),
        ("Automatic", None),
        (None, None),
    ],
)
def test_a_schedule_is_stored_by_its_a1111_id(asked: str | None, stored: str | None) -> None:
    params = resolve_params(JobCreate(prompt="p", sampler="Euler", scheduler=asked), SD, None)
    assert params.scheduler == stored


@pytest.mark.parametrize("name", ["Align Your Steps", "KL Optimal", "polyexponential"])
def test_schedules_diffusers_cannot_express_are_refused_by_name(name: str) -> None:
    with pytest.raises(InvalidRequest, match="no diffusers counterpart") as refused:
        resolve_params(JobCreate(prompt="p", scheduler=name), SD, None)
    assert refused.value.field == "scheduler"


def test_a_schedule_the_sampler_cannot_take_is_refused_naming_both() -> None:
    with pytest.raises(InvalidRequest, match="'Karras' does not apply to sampler 'DDIM'"):
        resolve_params(JobCreate(prompt="p", sampler="DDIM", scheduler="Karras"), SD, None)
    with pytest.raises(InvalidRequest, match="unknown; known: Automatic"):
        resolve_params(JobCreate(prompt="p", scheduler="Wobbly"), SD, None)
    # A flow model's Euler takes Karras sigmas, not a timestep spacing.
    flux = resolve_params(JobCreate(prompt="p", scheduler="Karras"), FLUX, None)
    assert flux.scheduler == "karras"
    with pytest.raises(InvalidRequest, match="does not apply"):
        resolve_params(JobCreate(prompt="p", sampler="Euler", scheduler="Simple"), FLUX, None)


def test_models_list_each_models_schedulers(api: TestClient) -> None:
    models = api.get("/models").json()["models"]
    assert {"Automatic", "Karras", "Exponential", "SGM Uniform", "Beta"} <= set(
        models["tiny-sd"]["schedulers"]
    )
    refused = api.post("/jobs", json={"prompt": "p", "model": "tiny-sd", "scheduler": "Restart"})
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "scheduler"
