"""Inpainting and samplers through the queue: a real worker, images over S3."""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tests.e2e.helpers import download_png, submit, wait_for


def _b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_inpainting_repaints_the_mask_and_keeps_the_rest(client: TestClient) -> None:
    rng = np.random.default_rng(7)
    source = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255  # repaint the centre square
    job = submit(
        client,
        prompt="a red fox",
        model="tiny-sd",
        init_image=_b64_png(source),
        mask_image=_b64_png(Image.fromarray(mask, "L")),
        seed=3,
    )
    done = wait_for(client, job["id"])
    assert done["status"] == "succeeded", done.get("error")
    assert done["params"]["mode"] == "inpaint"
    _, image = download_png(done["images"][0]["url"])
    out = np.asarray(image.convert("RGB"), np.int16)
    before = np.asarray(source, np.int16)
    outside = mask == 0
    assert np.array_equal(out[outside], before[outside])
    assert np.abs(out[~outside] - before[~outside]).mean() > 5


def test_a_jobs_sampler_does_not_leak_into_the_next_job(client: TestClient) -> None:
    def image_of(**body: object) -> bytes:
        done = wait_for(
            client, submit(client, prompt="a lighthouse", model="tiny-sd", **body)["id"]
        )
        assert done["status"] == "succeeded", done.get("error")
        return download_png(done["images"][0]["url"])[1].tobytes()  # its pixels

    plain = image_of(seed=11, steps=4)
    with_ddim = image_of(seed=11, steps=4, sampler="DDIM")
    plain_again = image_of(seed=11, steps=4)
    assert with_ddim != plain
    assert plain_again == plain
