"""Live previews on the real stack: the API over HTTP with two keys, real workers (their
engine processes make the previews), the event stream, the preview endpoint, the
`openai` SDK's streamed images and `webuiapi`'s progress."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import redis
import webuiapi
from PIL import Image

from shared.previews import preview_key
from tests.e2e.helpers import TERMINAL, download_png
from tests.support.e2e_fixtures import api_with_keys
from tests.support.polling import wait_until
from tests.support.processes import ApiProcess

KEY_A = "preview-test-key-a-0123456789abcdef"
KEY_B = "preview-test-key-b-0123456789abcdef"
# The flaky model's "slow" prompts take SLOW_STEP_S a step: long enough to watch.
FLAKY = "tiny-flaky"


@pytest.fixture(scope="module")
def api(
    e2e_env: dict[str, str], workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    with api_with_keys(e2e_env, tmp_path_factory, KEY_A, KEY_B) as server:
        yield server


@pytest.fixture(scope="module")
def alice(api: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=_auth(KEY_A), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def bob(api: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=_auth(KEY_B), timeout=60) as client:
        yield client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def slow_job(client: httpx.Client, steps: int = 6, **body: Any) -> dict[str, Any]:
    prompt = f"slow preview {uuid.uuid4().hex[:8]}"
    response = client.post("/jobs", json={"prompt": prompt, "model": FLAKY, "steps": steps, **body})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


@dataclass
class Event:
    id: int | None
    kind: str
    data: dict[str, Any]


def events(response: httpx.Response) -> Iterator[Event]:
    """The SSE events of a streamed response, as they come."""
    event_id, kind, data = None, "message", ""
    for line in response.iter_lines():
        if line.startswith("id: "):
            event_id = int(line.removeprefix("id: "))
        elif line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data:
            yield Event(event_id, kind, json.loads(data))
            event_id, kind, data = None, "message", ""


def stream_all(client: httpx.Client, job_id: str, **headers: str) -> list[Event]:
    with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        return list(events(response))


def webp(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "WEBP"
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_a_watched_job_streams_previews_of_its_own_image_before_it_ends(
    alice: httpx.Client,
) -> None:
    job = slow_job(alice, steps=8)
    seen = stream_all(alice, job["id"])

    kinds = [event.kind for event in seen]
    assert kinds[-1] == "status"
    assert seen[-1].data["status"] == "succeeded"
    previews = [event for event in seen if event.kind == "preview"]
    assert previews, kinds
    assert kinds.index("preview") < len(kinds) - 1
    for event in previews:
        image = webp(event.data["image"])
        assert image.size == (64, 64)  # the job's size (under 512 px)
        assert event.data["index"] == 0
        assert 1 <= event.data["step"] <= event.data["steps"] == 8
    # Every event is numbered, in order.
    ids = [event.id for event in seen]
    assert None not in ids
    assert ids == sorted(ids)  # type: ignore[type-var]
    # The preview is of this job: a later step looks more like its final image
    # than like another job's.
    _, final = download_png(seen[-1].data["images"][0]["url"])
    other = alice.post("/jobs", json={"prompt": "another picture", "model": FLAKY, "seed": 5})
    other_job = wait_until(lambda: _finished(alice, other.json()["id"]), what="other job")
    _, elsewhere = download_png(other_job["images"][0]["url"])
    last = pixels(webp(previews[-1].data["image"]))
    own = np.corrcoef(last.ravel(), pixels(final).ravel())[0, 1]
    foreign = np.corrcoef(last.ravel(), pixels(elsewhere).ravel())[0, 1]
    assert own > foreign


def _finished(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return job if job["status"] in TERMINAL else None


def test_reconnecting_with_last_event_id_resends_the_missed_status_changes(
    alice: httpx.Client,
) -> None:
    job = slow_job(alice, steps=6)
    with alice.stream("GET", f"/jobs/{job['id']}/events") as response:
        first = next(events(response))  # then the client goes away
    assert first.kind == "status"
    assert first.id is not None
    wait_until(lambda: _finished(alice, job["id"]), what="the job to end")

    resumed = stream_all(alice, job["id"], **{"Last-Event-ID": str(first.id)})
    statuses = [event.data["status"] for event in resumed if event.kind == "status"]
    order = ["queued", "running", "succeeded"]
    assert statuses == order[order.index(first.data["status"]) + 1 :]
    assert all(event.kind != "preview" for event in resumed)  # previews are not replayed
    assert all(event.id is not None and event.id > first.id for event in resumed)

    # From the very start: every status change, each with its own number.
    replayed = stream_all(alice, job["id"], **{"Last-Event-ID": "0"})
    assert [event.data["status"] for event in replayed] == order
    assert [event.id for event in replayed] == sorted({event.id for event in replayed})  # type: ignore[type-var]
    assert replayed[-1].data["images"]
    assert replayed[0].data["images"] == []


def test_the_preview_endpoint_serves_the_latest_to_its_owner_only(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    job = slow_job(alice, steps=10)
    url = f"/jobs/{job['id']}/preview"

    def preview() -> httpx.Response | None:
        response = alice.get(url)  # each ask marks the job watched
        if response.status_code == 404:
            assert response.json()["error"]["type"] in {"preview_not_ready", "not_found"}
            return None
        return response

    response = wait_until(preview, timeout_s=60, interval_s=0.1, what="a preview")
    assert response.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)
    assert 1 <= int(response.headers["X-Preview-Step"]) <= int(response.headers["X-Preview-Steps"])
    denied = bob.get(url)
    assert denied.status_code == 404
    assert denied.json()["error"]["type"] == "not_found"
    assert bob.get(f"/jobs/{job['id']}/events").status_code == 404
    wait_until(lambda: _finished(alice, job["id"]), what="the job to end")


def test_no_preview_is_made_while_nobody_watches(alice: httpx.Client, e2e_redis_url: str) -> None:
    job = slow_job(alice, steps=4)
    done = wait_until(lambda: _finished(alice, job["id"]), what="the job to end")
    assert done["status"] == "succeeded"
    assert redis.Redis.from_url(e2e_redis_url).exists(preview_key(job["id"])) == 0
    missing = alice.get(f"/jobs/{job['id']}/preview")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "preview_not_ready"


# --- OpenAI: stream=true through the SDK ---------------------------------------------------


def sdk(api: ApiProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_the_openai_sdk_streams_partial_images_then_each_final_image(api: ApiProcess) -> None:
    with sdk(api, KEY_A) as client:
        stream = client.images.generate(
            model=FLAKY,
            prompt=f"slow openai stream {uuid.uuid4().hex[:8]}",
            size="64x64",
            n=2,
            stream=True,
            partial_images=2,
            extra_body={"num_inference_steps": 8},
        )
        received = list(stream)

    types = [event.type for event in received]
    partials = [e for e in received if e.type == "image_generation.partial_image"]
    completed = [e for e in received if e.type == "image_generation.completed"]
    assert partials, types
    assert types.index("image_generation.completed") > types.index("image_generation.partial_image")
    assert [e.index for e in completed] == [0, 1]  # type: ignore[attr-defined]
    for event in partials:
        assert event.partial_image_index < 2
        assert event.output_format == "png"
        image = Image.open(io.BytesIO(base64.b64decode(event.b64_json)))
        assert (image.format, image.size) == ("PNG", (64, 64))
    by_image: dict[int, list[int]] = {}
    for event in partials:
        by_image.setdefault(event.index, []).append(event.partial_image_index)  # type: ignore[attr-defined]
    assert all(numbers == list(range(len(numbers))) for numbers in by_image.values())
    finals = [Image.open(io.BytesIO(base64.b64decode(e.b64_json))) for e in completed]
    assert all(image.size == (64, 64) for image in finals)
    assert completed[0].size == "64x64"


def test_a_streamed_edit_answers_image_edit_events(api: ApiProcess) -> None:
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(source, format="PNG")
    with sdk(api, KEY_A) as client:
        stream = client.images.edit(
            model="tiny-sd",
            image=("red.png", source.getvalue(), "image/png"),
            prompt="a red square, streamed",
            stream=True,
            partial_images=1,
            output_format="webp",
        )
        received = list(stream)
    assert received[-1].type == "image_edit.completed"
    kinds = {event.type for event in received}
    assert kinds <= {"image_edit.partial_image", "image_edit.completed"}
    final = Image.open(io.BytesIO(base64.b64decode(received[-1].b64_json)))
    assert final.format == "WEBP"


def test_a_failed_streamed_job_raises_in_the_sdk(api: ApiProcess) -> None:
    with sdk(api, KEY_A) as client:
        stream = client.images.generate(
            model=FLAKY, prompt="raise while streaming", size="64x64", stream=True
        )
        with pytest.raises(openai.APIError, match="failed"):
            list(stream)


def test_a_streamed_call_of_six_images_follows_both_its_jobs(
    api: ApiProcess, alice: httpx.Client
) -> None:
    prompt = f"slow openai six {uuid.uuid4().hex[:8]}"
    with sdk(api, KEY_A) as client:
        received = list(_six_images_streamed(client, prompt, partial_images=1, steps=4))

    completed = [e for e in received if e.type == "image_generation.completed"]
    partials = [e for e in received if e.type == "image_generation.partial_image"]
    assert sorted(e.index for e in completed) == list(range(6))  # type: ignore[attr-defined]
    assert partials
    # Every partial image is of an image of the call, at most one each.
    indexes = [e.index for e in partials]  # type: ignore[attr-defined]
    assert set(indexes) <= set(range(6))
    assert len(indexes) == len(set(indexes))
    jobs = _jobs_of(alice, prompt)
    assert [job["params"]["num_images"] for job in jobs] == [4, 2]
    assert {job["status"] for job in jobs} == {"succeeded"}


def test_a_streamed_call_ends_on_a_canceled_job_and_cancels_the_rest(
    api: ApiProcess, alice: httpx.Client
) -> None:
    prompt = f"slow openai cancel {uuid.uuid4().hex[:8]}"
    with sdk(api, KEY_A) as client:
        stream = _six_images_streamed(client, prompt, partial_images=3, steps=20)

        def read_and_cancel_the_running_job() -> None:
            for event in stream:
                if event.type == "image_generation.partial_image":
                    # The first job is running: its owner cancels it.
                    first = _jobs_of(alice, prompt)[0]
                    alice.post(f"/jobs/{first['id']}/cancel")

        with pytest.raises(openai.APIError, match="canceled"):
            read_and_cancel_the_running_job()

    ended = [wait_until(lambda j=job: _finished(alice, j["id"])) for job in _jobs_of(alice, prompt)]
    assert [job["status"] for job in ended] == ["canceled", "canceled"]


def _six_images_streamed(
    client: openai.OpenAI, prompt: str, partial_images: int, steps: int
) -> Any:
    """A streamed call of six images: two jobs (4 + 2) on the flaky model."""
    return client.images.generate(
        model=FLAKY,
        prompt=prompt,
        size="64x64",
        n=6,
        stream=True,
        partial_images=partial_images,
        extra_body={"num_inference_steps": steps},
    )


def _jobs_of(client: httpx.Client, prompt: str) -> list[dict[str, Any]]:
    """The caller's jobs of that prompt, oldest first."""
    listed = client.get("/jobs", params={"limit": 100}).json()["jobs"]
    return [job for job in reversed(listed) if job["params"]["prompt"] == prompt]


def test_refusals_come_before_the_stream_starts(api: ApiProcess) -> None:
    with sdk(api, KEY_A) as client, pytest.raises(openai.BadRequestError):
        client.images.generate(model=FLAKY, prompt="x", size="64x64", stream=True, n=11)


# --- A1111: current_image ---------------------------------------------------------------


def webui(api: ApiProcess, key: str) -> webuiapi.WebUIApi:
    client = webuiapi.WebUIApi(baseurl=f"{api.url}/sdapi/v1")
    client.session.headers["Authorization"] = f"Bearer {key}"
    return client


def test_a1111_progress_shows_the_callers_own_preview_only(
    api: ApiProcess, alice: httpx.Client
) -> None:
    job = slow_job(alice, steps=12)
    mine, theirs = webui(api, KEY_A), webui(api, KEY_B)

    def current_image() -> str | None:
        answer = mine.get_progress()
        return answer.get("current_image")  # type: ignore[no-any-return]

    image_b64 = wait_until(current_image, timeout_s=60, interval_s=0.1, what="current_image")
    image = Image.open(io.BytesIO(base64.b64decode(image_b64)))
    assert (image.format, image.size) == ("PNG", (64, 64))
    other = theirs.get_progress()
    assert other["current_image"] is None
    assert other["state"]["job"] == ""  # nothing of another key's job
    skipped = alice.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json()
    assert skipped["current_image"] is None
    assert skipped["state"]["job"] == job["id"]
    wait_until(lambda: _finished(alice, job["id"]), what="the job to end")
