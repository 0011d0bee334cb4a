"""A job's hires fix and tiling, resolved and refused before anything is queued."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.params import resolve_params
from shared.errors import InvalidRequest
from shared.hires import cover_size, target_size
from shared.jobs import JobCreate
from shared.registry import ModelEntry, ModelParams

SD = ModelEntry(id="org/sd", type="sd", params=ModelParams(max_size=(1024, 1024)))
FLUX = ModelEntry(id="org/flux", type="flux", params=ModelParams(use_negative_prompt=False))
NO_I2I = ModelEntry(id="org/x", type="sd", params=ModelParams(supports_i2i=False))


def resolve(entry: ModelEntry = SD, **fields: object) -> object:
    body = JobCreate.model_validate({"prompt": "p", "width": 512, "height": 512, **fields})
    return resolve_params(body, entry, None)


@pytest.mark.parametrize(
    ("hires", "size"),
    [
        ({}, (1024, 1024)),  # scale 2 by default
        ({"scale": 1.5}, (768, 768)),
        ({"width": 1024}, (1024, 1024)),  # the other side keeps the aspect ratio
        ({"width": 1000, "height": 600}, (1000, 600)),
        ({"scale": 1.3}, (664, 664)),  # 665.6: down to the 8-pixel grid
    ],
)
def test_the_final_size_as_a1111_computes_it(
    hires: dict[str, object], size: tuple[int, int]
) -> None:
    params = resolve(hires=hires)
    assert params.hires is not None
    assert (params.hires.width, params.hires.height) == size
    assert (params.width, params.height) == (512, 512)  # the first pass's
    assert (params.hires.steps, params.hires.strength, params.hires.upscaler) == (
        params.steps,
        0.7,
        "Latent",
    )


def test_another_aspect_ratio_is_covered_then_cropped() -> None:
    assert target_size((512, 512), None, 1000, 600) == (1000, 600)
    assert cover_size((512, 512), (1000, 600)) == (1000, 1000)


@pytest.mark.parametrize(
    ("entry", "fields", "message", "field"),
    [
        (
            SD,
            {"hires": {"scale": 4}},
            "hires size 2048x2048 exceeds this model's max_size",
            "hires",
        ),
        (
            SD,
            {"hires": {"upscaler": "R-ESRGAN 4x+"}},
            "'R-ESRGAN 4x+' is not available",
            "hires.upscaler",
        ),
        (SD, {"hires": {"steps": 5000}}, None, None),
        (NO_I2I, {"hires": {}}, "supports_i2i", "hires"),
        (FLUX, {"hires": {"upscaler": "Latent"}}, "pack their latents", "hires.upscaler"),
    ],
)
def test_what_cannot_run_is_refused_naming_the_field(
    entry: ModelEntry, fields: dict[str, object], message: str | None, field: str | None
) -> None:
    if message is None:
        with pytest.raises(ValueError, match="less than or equal to 1000"):  # JobCreate's
            resolve(entry, **fields)
        return
    with pytest.raises(InvalidRequest, match=re.escape(message)) as refused:
        resolve(entry, **fields)
    assert refused.value.field == field


def test_scale_and_a_size_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        JobCreate.model_validate({"prompt": "p", "hires": {"scale": 2, "width": 1024}})


def test_flow_models_take_an_image_upscaler() -> None:
    params = resolve(FLUX, width=256, height=256, hires={"upscaler": "Lanczos"})
    assert params.hires is not None
    assert params.hires.upscaler == "Lanczos"


def test_tiling_is_kept_on_the_job() -> None:
    assert resolve(tiling=True).tiling is True
    assert resolve().tiling is False


def test_post_jobs_takes_hires_and_tiling(api: TestClient) -> None:
    body = {"prompt": "p", "model": "tiny-sd", "width": 64, "height": 64, "steps": 2}
    accepted = api.post("/jobs", json={**body, "hires": {"scale": 2, "steps": 1}, "tiling": True})
    assert accepted.status_code == 202, accepted.text
    params = accepted.json()["params"]
    assert (params["hires"]["width"], params["hires"]["height"], params["tiling"]) == (
        128,
        128,
        True,
    )
    refused = api.post("/jobs", json={**body, "hires": {"upscaler": "ESRGAN_4x"}})
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "hires.upscaler"
    i2i = api.post("/jobs", json={**body, "hires": {}, "init_image": _png()})
    assert i2i.status_code == 422
    assert "text-to-image" in i2i.json()["error"]["message"]


def _png() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
