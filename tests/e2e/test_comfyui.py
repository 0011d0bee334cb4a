"""ComfyUI's API on the real stack: the API over HTTP, real Celery workers, S3 over
moto. ComfyUI's own example client and Open WebUI's ComfyUI engine (their calls
vendored in tests/support/comfyui) run against darkroom; every prompt is an ordinary
job of its key, and each key sees only its own history, files, queue and messages."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websocket
from PIL import Image

from tests.support.comfyui import example_client, open_webui
from tests.support.e2e_fixtures import api_with_keys
from tests.support.polling import wait_until
from tests.support.processes import ApiProcess

KEY_A = "comfy-test-key-a-0123456789abcdef"
KEY_B = "comfy-test-key-b-0123456789abcdef"
WAIT_S = 90.0


@pytest.fixture(scope="module")
def keyed(
    e2e_env: dict[str, str], workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    with api_with_keys(e2e_env, tmp_path_factory, KEY_A, KEY_B) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tiny(
    workflow: dict[str, Any], model: str = "tiny-sd", prompt: str | None = None
) -> dict[str, Any]:
    """The workflow at darkroom's test sizes: 64x64, 2 steps, on a test model."""
    workflow = copy.deepcopy(workflow)
    workflow["4"]["inputs"]["ckpt_name"] = f"{model}.safetensors"
    workflow["5"]["inputs"].update(width=64, height=64)
    workflow["3"]["inputs"]["steps"] = 2
    if prompt is not None:
        workflow["6"]["inputs"]["text"] = prompt
    return workflow


def example() -> dict[str, Any]:
    return tiny(json.loads(example_client.PROMPT_TEXT), prompt=f"comfy {uuid.uuid4().hex[:8]}")


class Socket:
    """A /ws client (websocket-client), reading messages until a prompt is done."""

    def __init__(self, api: ApiProcess, key: str | None, client_id: str):
        host = api.url.removeprefix("http://")
        headers = [f"Authorization: Bearer {key}"] if key else []
        self.ws = websocket.create_connection(
            f"ws://{host}/ws?clientId={client_id}", header=headers, timeout=WAIT_S
        )
        self.messages: list[dict[str, Any]] = []
        self.frames: list[bytes] = []

    def read(self) -> None:
        """One message or binary frame, kept."""
        out = self.ws.recv()
        if isinstance(out, bytes):
            self.frames.append(out)
        else:
            self.messages.append(json.loads(out))

    def until(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {WAIT_S}s: {self.messages}")
            self.read()

    def until_done(self, prompt_id: str) -> list[dict[str, Any]]:
        def done() -> bool:
            return any(
                m["type"] == "executing"
                and m["data"]["node"] is None
                and m["data"]["prompt_id"] == prompt_id
                for m in self.messages
            )

        self.until(done, f"end of prompt {prompt_id}")
        return [m for m in self.messages if m["data"].get("prompt_id") == prompt_id]

    def close(self) -> None:
        self.ws.close()


def post_prompt(
    api: ApiProcess, workflow: dict[str, Any], key: str | None = None, **body: Any
) -> httpx.Response:
    headers = bearer(key) if key else {}
    return httpx.post(
        f"{api.url}/prompt", json={"prompt": workflow, **body}, headers=headers, timeout=30
    )


def job(api: ApiProcess, job_id: str, key: str | None = None) -> dict[str, Any]:
    response = httpx.get(f"{api.url}/jobs/{job_id}", headers=bearer(key) if key else {}, timeout=10)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- the clients ---------------------------------------------------------------------------


def test_comfyuis_own_example_client_runs_unchanged(api_server: ApiProcess) -> None:
    images = example_client.run(api_server.url.removeprefix("http://"), example())
    [data] = images["9"]
    image = png(data)
    assert (image.format, image.size) == ("PNG", (64, 64))


def test_open_webuis_comfyui_engine(keyed: ApiProcess) -> None:
    # Open WebUI's calls (utils/images/comfyui.py): Bearer on the socket and on HTTP,
    # its default workflow with its nodes filled in, a seed drawn up to 2^50.
    seed = 2**50 - 3
    workflow = open_webui.workflow_for(
        "tiny-sd", f"owui {uuid.uuid4().hex[:6]}", 64, 64, 2, seed=seed
    )
    client_id = str(uuid.uuid4())
    socket = Socket(keyed, KEY_A, client_id)
    try:
        answer = post_prompt(keyed, workflow, KEY_A, client_id=client_id)
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        assert answer.json()["node_errors"] == {}
        messages = socket.until_done(prompt_id)
    finally:
        socket.close()
    kinds = [m["type"] for m in messages]
    assert kinds[:3] == ["execution_start", "execution_cached", "executing"]
    assert kinds[-3:] == ["executed", "execution_success", "executing"]
    history = httpx.get(
        f"{keyed.url}/history/{prompt_id}", headers=bearer(KEY_A), timeout=10
    ).json()
    entry = history[prompt_id]
    assert entry["status"] == {
        "status_str": "success",
        "completed": True,
        "messages": entry["status"]["messages"],
    }
    assert entry["darkroom"]["seed"] == seed
    # Open WebUI keeps the images of SaveImage/PreviewImage nodes, as /view URLs.
    [image] = entry["outputs"]["9"]["images"]
    view = httpx.get(f"{keyed.url}/view", params=image, headers=bearer(KEY_A), timeout=10)
    assert png(view.content).size == (64, 64)
    [job_id] = entry["darkroom"]["job_ids"]
    made = job(keyed, job_id, KEY_A)
    assert (made["params"]["seed"], made["params"]["source_seed"]) == (seed % 2**32, seed)
    # The same ComfyUI seed always makes the same image.
    again = post_prompt(keyed, workflow, KEY_A).json()["prompt_id"]
    entry_again = wait_until(
        lambda: httpx.get(f"{keyed.url}/history/{again}", headers=bearer(KEY_A)).json().get(again),
        WAIT_S,
    )
    view_again = httpx.get(
        f"{keyed.url}/view", params=entry_again["outputs"]["9"]["images"][0], headers=bearer(KEY_A)
    )
    assert png(view_again.content).tobytes() == png(view.content).tobytes()


def test_object_info_lists_the_registrys_models_as_open_webui_reads_them(keyed: ApiProcess) -> None:
    info = httpx.get(f"{keyed.url}/object_info", headers=bearer(KEY_A), timeout=10).json()
    # Open WebUI's model list: CheckpointLoaderSimple's ckpt_name options.
    assert {"tiny-sd", "tiny-flaky"} <= set(
        info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    )
    assert "dpmpp_2m" in info["KSampler"]["input"]["required"]["sampler_name"][0]
    assert "karras" in info["KSampler"]["input"]["required"]["scheduler"][0]
    one = httpx.get(
        f"{keyed.url}/api/object_info/KSampler", headers=bearer(KEY_A), timeout=10
    ).json()
    assert list(one) == ["KSampler"]
    stats = httpx.get(f"{keyed.url}/system_stats", headers=bearer(KEY_A), timeout=10).json()
    assert set(stats) == {"system", "devices"}


# --- refusals: ComfyUI's node_errors, nothing queued -----------------------------------------


@pytest.mark.parametrize(
    ("change", "node", "kind"),
    [
        (
            lambda w: w.update({"10": {"class_type": "FaceDetailer", "inputs": {}}}),
            "10",
            "missing_node_type",
        ),
        (lambda w: w["8"]["inputs"].update(samples=["77", 0]), "8", "required_input_missing"),
        (
            lambda w: w["4"]["inputs"].update(ckpt_name="sd_xl_base_1.0.safetensors"),
            "4",
            "value_not_in_list",
        ),
        (lambda w: w["3"]["inputs"].update(seed=2**64), "3", "value_bigger_than_max"),
    ],
)
def test_a_workflow_darkroom_cannot_run_is_refused_naming_the_node(
    keyed: ApiProcess, change: Any, node: str, kind: str
) -> None:
    workflow = example()
    change(workflow)
    before = httpx.get(f"{keyed.url}/jobs", headers=bearer(KEY_A), params={"limit": 100}).json()[
        "jobs"
    ]
    answer = post_prompt(keyed, workflow, KEY_A)
    assert answer.status_code == 400
    body = answer.json()
    assert {error["type"] for error in body["node_errors"][node]["errors"]} == {kind}
    after = httpx.get(f"{keyed.url}/jobs", headers=bearer(KEY_A), params={"limit": 100}).json()[
        "jobs"
    ]
    assert len(after) == len(before)


def test_a_limit_of_the_model_is_a_node_error_on_the_node_that_set_it(keyed: ApiProcess) -> None:
    workflow = example()
    workflow["5"]["inputs"].update(width=8192, height=8192)
    answer = post_prompt(keyed, workflow, KEY_A)
    assert answer.status_code == 400
    [error] = answer.json()["node_errors"]["5"]["errors"]
    assert "max" in error["message"]


# --- tenancy -------------------------------------------------------------------------------


def test_each_key_sees_only_its_own(keyed: ApiProcess) -> None:
    client_id = str(uuid.uuid4())
    eve = Socket(keyed, KEY_B, client_id)  # the same clientId, another key
    alice = Socket(keyed, KEY_A, client_id)
    try:
        prompt_id = post_prompt(keyed, example(), KEY_A, client_id=client_id).json()["prompt_id"]
        alice.until_done(prompt_id)
        eve.ws.settimeout(1.0)
        with contextlib.suppress(websocket.WebSocketTimeoutException):
            while True:
                eve.read()
        # Eve's socket said hello (its status), and nothing of Alice's prompt.
        assert eve.messages[0]["type"] == "status"
        assert all(m["data"].get("prompt_id") != prompt_id for m in eve.messages)
    finally:
        alice.close()
        eve.close()
    entry = httpx.get(f"{keyed.url}/history/{prompt_id}", headers=bearer(KEY_A)).json()[prompt_id]
    image = entry["outputs"]["9"]["images"][0]
    assert httpx.get(f"{keyed.url}/history/{prompt_id}", headers=bearer(KEY_B)).json() == {}
    assert prompt_id not in httpx.get(f"{keyed.url}/history", headers=bearer(KEY_B)).json()
    assert httpx.get(f"{keyed.url}/view", params=image, headers=bearer(KEY_B)).status_code == 404
    assert httpx.get(f"{keyed.url}/view", params=image).status_code == 401


def test_a_socket_without_a_key_is_refused_when_keys_are_on(keyed: ApiProcess) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException):
        Socket(keyed, None, "nobody")
    assert post_prompt(keyed, example()).status_code == 401


# --- images in, previews, queue, interrupt, hires -----------------------------------------------


def upload(api: ApiProcess, image: Image.Image, name: str, key: str) -> dict[str, str]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    # As Open WebUI uploads (comfyui_upload_image): /api/upload/image, type=input.
    response = httpx.post(
        f"{api.url}/api/upload/image",
        files={"image": (name, buffer.getvalue(), "image/png")},
        data={"type": "input"},
        headers=bearer(key),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def gradient() -> Image.Image:
    image = Image.new("RGBA", (64, 64))
    image.putdata([(x * 4, y * 4, 90, 255) for y in range(64) for x in range(64)])
    return image


def inpaint_workflow(name: str) -> dict[str, Any]:
    workflow = example()
    workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": name, "upload": "image"}}
    workflow["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    workflow["12"] = {
        "class_type": "SetLatentNoiseMask",
        "inputs": {"samples": ["11", 0], "mask": ["10", 1]},
    }
    workflow["3"]["inputs"].update(latent_image=["12", 0], denoise=1.0)
    del workflow["5"]
    return workflow


def test_an_uploaded_image_with_a_transparent_area_is_inpainted(keyed: ApiProcess) -> None:
    source = gradient()
    source.putdata([(*p[:3], 0 if i % 64 < 32 else 255) for i, p in enumerate(source.getdata())])
    name = upload(keyed, source, f"cat-{uuid.uuid4().hex[:6]}.png", KEY_A)["name"]
    assert upload(keyed, source, name, KEY_A)["name"] != name  # not overwritten: renamed
    answer = post_prompt(keyed, inpaint_workflow(name), KEY_A)
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    entry = wait_until(
        lambda: (
            httpx.get(f"{keyed.url}/history/{prompt_id}", headers=bearer(KEY_A))
            .json()
            .get(prompt_id)
        ),
        WAIT_S,
    )
    assert entry["status"]["status_str"] == "success", entry["status"]
    image = png(
        httpx.get(
            f"{keyed.url}/view", params=entry["outputs"]["9"]["images"][0], headers=bearer(KEY_A)
        ).content
    )
    out, before = image.convert("RGB"), source.convert("RGB")
    # The opaque right half is kept exactly; the transparent left half repainted.
    assert out.crop((32, 0, 64, 64)).tobytes() == before.crop((32, 0, 64, 64)).tobytes()
    assert out.crop((0, 0, 32, 64)).tobytes() != before.crop((0, 0, 32, 64)).tobytes()
    [job_id] = entry["darkroom"]["job_ids"]
    assert job(keyed, job_id, KEY_A)["params"]["mode"] == "inpaint"
    # Another key's LoadImage does not find it.
    refused = post_prompt(keyed, inpaint_workflow(name), KEY_B)
    assert refused.status_code == 400
    assert "Invalid image file" in refused.json()["node_errors"]["10"]["errors"][0]["details"]


def test_previews_progress_queue_and_interrupt(keyed: ApiProcess) -> None:
    # The flaky test model's "slow" prompts take a while a step: long enough to watch.
    workflow = tiny(
        json.loads(example_client.PROMPT_TEXT),
        model="tiny-flaky",
        prompt=f"slow comfy {uuid.uuid4().hex[:6]}",
    )
    workflow["3"]["inputs"]["steps"] = 8
    client_id = str(uuid.uuid4())
    socket = Socket(keyed, KEY_A, client_id)
    try:
        prompt_id = post_prompt(keyed, workflow, KEY_A, client_id=client_id).json()["prompt_id"]
        socket.until(lambda: socket.frames, "preview frame")
        queue = httpx.get(f"{keyed.url}/queue", headers=bearer(KEY_A)).json()
        assert [entry[1] for entry in queue["queue_running"]] == [prompt_id]
        assert httpx.get(f"{keyed.url}/queue", headers=bearer(KEY_B)).json()["queue_running"] == []
        assert (
            httpx.post(f"{keyed.url}/interrupt", json={}, headers=bearer(KEY_A)).status_code == 200
        )
        messages = socket.until_done(prompt_id)
    finally:
        socket.close()
    event, image_type = struct.unpack(">II", socket.frames[0][:8])
    assert (event, image_type) == (1, 1)
    assert png(socket.frames[0][8:]).format == "JPEG"
    kinds = [m["type"] for m in messages]
    assert "progress" in kinds
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert all(p["max"] == 8 and p["node"] == "3" for p in progress)
    assert kinds[-2:] == ["execution_interrupted", "executing"]
    entry = httpx.get(f"{keyed.url}/history/{prompt_id}", headers=bearer(KEY_A)).json()[prompt_id]
    assert entry["status"]["status_str"] == "error"


def test_a_latent_upscale_and_second_ksampler_run_as_the_hires_fix(api_server: ApiProcess) -> None:
    workflow = example()
    workflow["10"] = {
        "class_type": "LatentUpscaleBy",
        "inputs": {"samples": ["3", 0], "upscale_method": "bilinear", "scale_by": 2.0},
    }
    workflow["11"] = copy.deepcopy(workflow["3"])
    workflow["11"]["inputs"].update(latent_image=["10", 0], steps=1, denoise=0.5)
    workflow["8"]["inputs"]["samples"] = ["11", 0]
    images = example_client.run(api_server.url.removeprefix("http://"), workflow)
    assert png(images["9"][0]).size == (128, 128)
