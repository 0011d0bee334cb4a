"""LoRA adapters end to end: a real worker on tiny-sd, the API over HTTP, adapters made
by PEFT (one in the registry, one a key uploads), and the real webuiapi and openai
clients for AUTOMATIC1111's `<lora:name:weight>` and OpenAI's extra_body."""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import redis
import webuiapi
import yaml
from PIL import Image
from streamlit.testing.v1 import AppTest

from darkroom.stack import free_port
from darkroom.ui.form import rerun_body
from tests.conftest import write_registry
from tests.support.loras import make_sd_lora
from tests.support.polling import wait_until
from tests.support.processes import (
    REPO_ROOT,
    ApiProcess,
    WorkerProcess,
    start_api,
    start_worker,
)

LORAS_DB = 15
APP = REPO_ROOT / "darkroom" / "ui" / "app.py"
BODY = {"prompt": "a lighthouse at dusk", "seed": 11, "width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def env(
    redis_base_url: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    url = f"{redis_base_url}/{LORAS_DB}"
    redis.Redis.from_url(url).flushdb()
    root = tmp_path_factory.mktemp("loras-e2e")
    registry = write_registry(root / "models.yaml", tiny_model_dir)
    raw = yaml.safe_load(registry.read_text())
    house = make_sd_lora(tiny_model_dir, root / "house.safetensors", seed=7)
    raw["loras"] = {"house": {"source": str(house), "base": "sd"}}
    registry.write_text(yaml.safe_dump(raw))
    return {
        "REDIS_URL": url,
        "MODEL_CONFIG": str(registry),
        "STORAGE_URL": f"file://{root / 'store'}",
        "HF_CACHE_DIR": str(root / "cache"),
    }


@pytest.fixture(scope="module")
def worker(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    logs = tmp_path_factory.mktemp("loras-logs")
    started = start_worker("lora@test", {**env, "WORKER_MODEL": "tiny-sd"}, logs, env["REDIS_URL"])
    yield started
    started.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def api(
    env: dict[str, str], worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    server = start_api(env, tmp_path_factory.mktemp("loras-api") / "api.log", free_port())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(api: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60) as client:
        yield client


def run(http: httpx.Client, **extra: Any) -> dict[str, Any]:
    answer = http.post("/jobs", json={**BODY, **extra})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    return wait_until(
        lambda: (
            (j := http.get(f"/jobs/{job_id}").json())["status"] in ("succeeded", "failed") and j
        ),
        timeout_s=120,
        what=f"job {job_id}",
    )


def pixels_of(http: httpx.Client, job: dict[str, Any]) -> np.ndarray:
    assert job["status"] == "succeeded", job
    data = http.get(job["images"][0]["url"]).content
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def decoded(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def test_adapters_change_the_image_and_leave_the_base_untouched(
    http: httpx.Client, tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = pixels_of(http, run(http))
    styled_job = run(http, loras=[{"name": "house", "scale": 1.0}])
    styled = pixels_of(http, styled_job)
    assert np.abs(styled - base).max() > 10
    assert styled_job["params"]["loras"][0]["sha256"]
    assert np.array_equal(pixels_of(http, run(http, loras=[{"name": "house", "scale": 0}])), base)

    own = make_sd_lora(tiny_model_dir, tmp_path / "own.safetensors", seed=8)
    uploaded = http.post(
        "/loras", data={"name": "own"}, files={"file": ("own.safetensors", own.read_bytes())}
    )
    assert uploaded.status_code == 201, uploaded.text
    both = pixels_of(http, run(http, loras=[{"name": "house"}, {"name": "own", "scale": 0.5}]))
    assert not np.array_equal(both, styled)
    # Right after adapters: exactly the image the worker made before it had any.
    assert np.array_equal(pixels_of(http, run(http)), base)


def test_a1111_prompt_tags_apply_and_leave_the_prompt(api: ApiProcess, http: httpx.Client) -> None:
    webui = webuiapi.WebUIApi(baseurl=f"{api.url}/sdapi/v1", sampler="Euler", steps=2)
    tagged = webui.txt2img(
        prompt=f"{BODY['prompt']} <lora:house:0.8>, <lora:nope:1>",
        seed=BODY["seed"],
        width=64,
        height=64,
        steps=2,
        cfg_scale=7.5,
        override_settings={"sd_model_checkpoint": "tiny-sd"},
    )
    assert tagged.info["prompt"] == BODY["prompt"]
    assert tagged.info["extra_generation_params"]["Lora hashes"].startswith("house: ")
    assert tagged.info["darkroom_ignored"] == ["nope: no such LoRA adapter"]
    [job_id] = tagged.info["job_ids"]
    job = http.get(f"/jobs/{job_id}").json()
    assert [(x["name"], x["scale"]) for x in job["params"]["loras"]] == [("house", 0.8)]
    same = run(http, model="tiny-sd", sampler="Euler", loras=[{"name": "house", "scale": 0.8}])
    expected = pixels_of(http, same)
    assert np.array_equal(np.asarray(tagged.image.convert("RGB"), dtype=np.int16), expected)
    assert "house" in {x["name"] for x in webui.session.get(f"{api.url}/sdapi/v1/loras").json()}


def test_openai_extra_body_takes_adapters(api: ApiProcess, http: httpx.Client) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="unused", max_retries=0)
    answer = client.images.generate(
        prompt=BODY["prompt"],
        model="tiny-sd",
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": BODY["seed"], "num_inference_steps": 2, "loras": [{"name": "house"}]},
    )
    expected = pixels_of(http, run(http, model="tiny-sd", loras=[{"name": "house"}]))
    assert np.array_equal(decoded(answer.data[0].b64_json or ""), expected)


def test_the_web_page_picks_adapters_with_their_scales(
    api: ApiProcess, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARKROOM_API_URL", api.url)
    monkeypatch.delenv("DARKROOM_API_KEY", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, at.exception
    at.multiselect(key="loras").select("house").run()
    at.slider(key="lora_scale_house").set_value(0.6).run()
    at.text_area(key="prompt").input(BODY["prompt"])
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    job_id = at.session_state["current_job"]
    job = http.get(f"/jobs/{job_id}").json()
    assert [(x["name"], x["scale"]) for x in job["params"]["loras"]] == [("house", 0.6)]
    # "Run again" carries them.
    assert rerun_body(job)["loras"] == [{"name": "house", "scale": 0.6}]  # type: ignore[index]


def test_the_command_line_submits_adapters(api: ApiProcess, http: httpx.Client) -> None:
    command = ["submit", "a fox", "--lora", "house:0.3", "--json", "--api-url", api.url]
    submitted = subprocess.run(
        [sys.executable, "-m", "darkroom.cli", *command],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = http.get(f"/jobs/{json.loads(submitted.stdout)['id']}").json()
    assert [(x["name"], x["scale"]) for x in job["params"]["loras"]] == [("house", 0.3)]
