"""LoRA adapters at the API: the registry's and a key's own, checked before any job is
queued (real adapters made by PEFT, the real storage on disk, a real Redis)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
import yaml
from fastapi.testclient import TestClient

from api.main import create_app
from shared.settings import Settings
from tests.conftest import write_registry
from tests.support.loras import make_sd_lora, make_sdxl_lora

KEY_A = "lora-key-a-0123456789abcdef"
KEY_B = "lora-key-b-0123456789abcdef"


@pytest.fixture(scope="module")
def files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-loras")
    return {
        "house": make_sd_lora(tiny_model_dir, root / "house.safetensors", seed=1),
        "mine": make_sd_lora(tiny_model_dir, root / "mine.safetensors", seed=2),
        "xl": make_sdxl_lora(root / "xl.safetensors", seed=3),
    }


@pytest.fixture(scope="module")
def registry_path(
    tiny_model_dir: Path, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The test registry, tiny-sd taking at most two adapters, and one registry adapter."""
    path = write_registry(tmp_path_factory.mktemp("lora-registry") / "models.yaml", tiny_model_dir)
    raw = yaml.safe_load(path.read_text())
    raw["models"]["tiny-sd"]["params"]["max_loras"] = 2
    raw["loras"] = {
        "house": {"source": str(files["house"]), "base": "sd", "scale": 0.7, "triggers": ["hs"]}
    }
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def api(
    make_settings: Callable[..., Settings], api_redis: redis.Redis, registry_path: Path
) -> Iterator[TestClient]:
    settings = make_settings(
        registry_path=registry_path, api_keys=f"{KEY_A},{KEY_B}", lora_max_bytes=200_000
    )
    with TestClient(create_app(settings)) as client:
        yield client


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(api: TestClient, key: str, name: str, data: bytes) -> Any:
    return api.post(
        "/loras",
        data={"name": name},
        files={"file": (f"{name}.safetensors", data, "application/octet-stream")},
        headers=as_key(key),
    )


def queued(api: TestClient) -> int:
    return sum(api.get("/status", headers=as_key(KEY_A)).json()["queues"].values())


def test_a_key_uploads_lists_and_deletes_its_own_adapter(
    api: TestClient, files: dict[str, Path], tmp_path: Path
) -> None:
    data = files["mine"].read_bytes()
    answer = upload(api, KEY_A, "mine", data)
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert (made["name"], made["base"], made["owner"]) == ("mine", "sd", "key")
    assert made["sha256"] == hashlib.sha256(data).hexdigest()

    listed = {m["name"]: m for m in api.get("/loras", headers=as_key(KEY_A)).json()["loras"]}
    assert listed["house"]["owner"] == "registry"
    assert listed["house"]["triggers"] == ["hs"]
    assert listed["mine"]["owner"] == "key"
    # Private to its key: another key does not see it, cannot read or delete it.
    others = {m["name"] for m in api.get("/loras", headers=as_key(KEY_B)).json()["loras"]}
    assert others == {"house"}
    assert api.get("/loras/mine", headers=as_key(KEY_B)).status_code == 404
    assert api.delete("/loras/mine", headers=as_key(KEY_B)).status_code == 404
    job = {"prompt": "x", "loras": [{"name": "mine"}]}
    refused = api.post("/jobs", json=job, headers=as_key(KEY_B))
    assert refused.status_code == 422
    assert "unknown LoRA adapter 'mine'" in refused.json()["error"]["message"]

    assert api.delete("/loras/house", headers=as_key(KEY_A)).status_code == 403
    assert api.delete("/loras/mine", headers=as_key(KEY_A)).status_code == 204
    assert api.get("/loras/mine", headers=as_key(KEY_A)).status_code == 404


def test_a_job_records_its_adapters_scales_and_hashes(
    api: TestClient, files: dict[str, Path]
) -> None:
    assert upload(api, KEY_A, "mine", files["mine"].read_bytes()).status_code == 201
    body = {"prompt": "x", "loras": [{"name": "house"}, {"name": "mine", "scale": 0.4}]}
    answer = api.post("/jobs", json=body, headers=as_key(KEY_A))
    assert answer.status_code == 202, answer.text
    job = answer.json()
    loras = job["params"]["loras"]
    assert [(x["name"], x["scale"]) for x in loras] == [("house", 0.7), ("mine", 0.4)]
    assert loras[0]["sha256"] == hashlib.sha256(files["house"].read_bytes()).hexdigest()
    assert loras[1]["sha256"] == hashlib.sha256(files["mine"].read_bytes()).hexdigest()
    # Checked against tiny-sd (the primary): it runs there, not on any free worker.
    assert job["queue"] == "darkroom.model.tiny-sd"


@pytest.mark.parametrize(
    ("loras", "model", "says"),
    [
        ([{"name": "nope"}], None, "unknown LoRA adapter 'nope'"),
        ([{"name": "xl"}], None, "LoRA 'xl' is for sdxl models; model tiny-sd (sd) takes sd"),
        ([{"name": "house"}], "tiny-flaky", "takes none"),
        ([{"name": "house"}, {"name": "xl"}, {"name": "mine"}], None, "takes at most 2"),
        ([{"name": "house"}, {"name": "house"}], None, "named twice"),
    ],
)
def test_a_job_with_adapters_its_model_cannot_take_is_refused_and_nothing_queued(
    api: TestClient, files: dict[str, Path], loras: list[Any], model: str | None, says: str
) -> None:
    assert upload(api, KEY_A, "xl", files["xl"].read_bytes()).status_code == 201
    assert upload(api, KEY_A, "mine", files["mine"].read_bytes()).status_code == 201
    body = {"prompt": "x", "loras": loras, **({"model": model} if model else {})}
    answer = api.post("/jobs", json=body, headers=as_key(KEY_A))
    assert answer.status_code == 422, answer.text
    assert says in answer.json()["error"]["message"]
    assert queued(api) == 0


def pickled() -> bytes:
    buffer = io.BytesIO()
    torch.save({"lora.down.weight": torch.zeros(4, 4)}, buffer)
    return buffer.getvalue()


def test_files_that_are_not_safe_adapters_are_refused(
    api: TestClient, files: dict[str, Path]
) -> None:
    bad = upload(api, KEY_A, "evil", pickled())
    assert bad.status_code == 422
    assert "not a safetensors file" in bad.json()["error"]["message"]
    big = upload(api, KEY_A, "big", b"\0" * 200_001)
    assert big.status_code == 413
    assert "LORA_MAX_BYTES" in big.json()["error"]["message"]
    clash = upload(api, KEY_A, "house", files["mine"].read_bytes())
    assert clash.status_code == 409
    named = upload(api, KEY_A, "../up", files["mine"].read_bytes())
    assert named.status_code == 422
    remaining = {m["name"] for m in api.get("/loras", headers=as_key(KEY_A)).json()["loras"]}
    assert remaining == {"house"}


def test_a_url_to_a_private_address_is_refused_without_a_request(api: TestClient) -> None:
    for url in ("https://127.0.0.1:9/x.safetensors", "https://[::1]:9/x.safetensors"):
        answer = api.post("/loras", json={"name": "far", "url": url}, headers=as_key(KEY_A))
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["field"] == "url"
        assert "non-public address" in error["message"]
    plain = api.post(
        "/loras", json={"name": "far", "url": "http://127.0.0.1:9/x"}, headers=as_key(KEY_A)
    )
    assert plain.status_code == 422
    assert "https:// or s3://" in plain.json()["error"]["message"]
