"""The whole flow: API -> Redis -> Celery worker -> tiny pipeline -> S3 (moto) -> poll."""

from __future__ import annotations

import base64
import io

from fastapi.testclient import TestClient
from PIL import Image

from tests.e2e.helpers import download_png, submit, wait_for


def _png_b64(width: int, height: int, color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_txt2img_job_succeeds_with_png_of_requested_size(client: TestClient) -> None:
    job = submit(client, prompt="a red fox", model="tiny-sd", width=64, height=48, seed=7)
    assert job["status"] == "queued"

    done = wait_for(client, job["id"])

    assert done["status"] == "succeeded", done["error"]
    assert done["model_used"] == "tiny-sd"
    assert done["progress"] == 1.0
    assert done["attempts"] == 1
    assert done["started_at"]
    assert done["finished_at"]
    [image] = done["images"]
    assert (image["width"], image["height"], image["seed"]) == (64, 48, 7)
    data, png = download_png(image["url"])
    assert data.startswith(b"\x89PNG")
    assert png.format == "PNG"
    assert png.size == (64, 48)


def test_same_seed_gives_the_same_pixels_twice(client: TestClient) -> None:
    first = submit(client, prompt="same seed", model="tiny-sd", seed=1234, steps=2)
    second = submit(client, prompt="same seed", model="tiny-sd", seed=1234, steps=2)
    other = submit(client, prompt="same seed", model="tiny-sd", seed=1235, steps=2)

    images = [wait_for(client, job["id"])["images"][0] for job in (first, second, other)]
    pngs = [download_png(image["url"])[1] for image in images]
    pixels = [png.tobytes() for png in pngs]

    assert pixels[0] == pixels[1]
    assert pixels[0] != pixels[2]
    # The same parameters too; only the job each names differs (its `darkroom` chunk).
    assert pngs[0].info["parameters"] == pngs[1].info["parameters"]


def test_num_images_gives_consecutive_seeds(client: TestClient) -> None:
    job = wait_for(
        client, submit(client, prompt="three", model="tiny-sd", seed=10, num_images=3)["id"]
    )
    assert [image["seed"] for image in job["images"]] == [10, 11, 12]
    blobs = {download_png(image["url"])[0] for image in job["images"]}
    assert len(blobs) == 3


def test_img2img_job_succeeds(client: TestClient) -> None:
    job = submit(
        client,
        prompt="a blue square, repainted",
        model="tiny-sd",
        init_image=_png_b64(96, 64, (0, 0, 255)),
        strength=0.5,
        seed=3,
    )
    assert job["params"]["mode"] == "img2img"
    assert (job["params"]["width"], job["params"]["height"]) == (96, 64)

    done = wait_for(client, job["id"])

    assert done["status"] == "succeeded", done["error"]
    _, png = download_png(done["images"][0]["url"])
    assert png.size == (96, 64)


def test_img2img_accepts_a_data_url_and_resizes_to_the_asked_size(client: TestClient) -> None:
    data_url = "data:image/png;base64," + _png_b64(50, 50, (200, 10, 10))
    job = submit(client, prompt="resize", model="tiny-sd", init_image=data_url, width=64, height=64)
    done = wait_for(client, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert download_png(done["images"][0]["url"])[1].size == (64, 64)


def test_failing_generation_ends_failed_and_the_worker_takes_the_next_job(
    client: TestClient,
) -> None:
    bad = submit(client, prompt="please raise", model="tiny-flaky")
    good = submit(client, prompt="fine", model="tiny-flaky")

    failed = wait_for(client, bad["id"])
    succeeded = wait_for(client, good["id"])

    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "generation_error"
    assert "raised on purpose" in failed["error"]["message"]
    assert failed["images"] == []
    assert succeeded["status"] == "succeeded"
    assert succeeded["model_used"] == "tiny-flaky"


def test_jobs_route_to_the_worker_serving_their_model(client: TestClient) -> None:
    jobs = [
        submit(client, prompt=f"route {i}", model=model)
        for i, model in enumerate(["tiny-sd", "tiny-flaky"] * 3)
    ]
    for job in jobs:
        done = wait_for(client, job["id"])
        assert done["model_used"] == job["model"]
        assert done["worker"] == (
            "e2e-tiny@test" if job["model"] == "tiny-sd" else "e2e-flaky@test"
        )


def test_status_and_models_show_what_workers_serve(client: TestClient) -> None:
    status = client.get("/status").json()
    served = {w["name"]: w["model"] for w in status["workers"]}
    assert served == {"e2e-tiny@test": "tiny-sd", "e2e-flaky@test": "tiny-flaky"}
    assert status["redis"]["reachable"] is True
    assert "darkroom.model.tiny-sd" in status["queues"]

    models = client.get("/models").json()
    assert models["current"] == "tiny-sd"
    assert models["served"] == {"tiny-sd": 1, "tiny-flaky": 1}

    assert client.get("/readyz").status_code == 200
