"""API keys and ownership: 401s, open health checks, and each key seeing only its own jobs."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.auth import basic_keys
from api.main import create_app
from shared.apikeys import ANONYMOUS, KeyRing, hash_key, owner_id
from shared.jobs import StoredImage
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import job_key

KEY_A = "key-a-0123456789abcdefghij"
KEY_B = "key-b-0123456789abcdefghij"
KEY_C = "key-c-0123456789abcdefghij"  # only in the hashed keys file
BODY = {"prompt": "a lighthouse", "model": "tiny-sd"}

PROTECTED = [
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/0123456789abcdef"),
    ("POST", "/jobs/0123456789abcdef/cancel"),
    ("GET", "/jobs/0123456789abcdef/events"),
    ("GET", "/models"),
    ("GET", "/status"),
    ("GET", "/files/jobs/0123456789abcdef/0.png"),
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(api_keys=f"{KEY_A}, {KEY_B}")


@pytest.fixture
def keyed(keyed_settings: Settings, api_redis: redis.Redis) -> Iterator[TestClient]:
    """The API with keys A and B configured."""
    with TestClient(create_app(keyed_settings)) as client:
        yield client


def submit(client: TestClient, key: str, **fields: object) -> str:
    response = client.post("/jobs", json={**BODY, **fields}, headers=bearer(key))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


# --- 401 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("not-a-key-0123456789"),
        bearer(KEY_A.upper()),
        {"Authorization": KEY_A},  # no scheme
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": "Bearer "},
        {"X-API-Key": KEY_A},
    ],
    ids=["none", "unknown", "wrong-case", "no-scheme", "basic", "empty", "other-header"],
)
def test_protected_endpoints_need_a_valid_key(
    keyed: TestClient,
    api_redis: redis.Redis,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    response = keyed.request(method, path, headers=headers, json=BODY if method == "POST" else None)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["type"] == "unauthorized"
    assert "Authorization: Bearer" in error["message"] or error["message"] == "invalid API key"
    assert api_redis.keys("darkroom:job*") == []


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


# A key in A1111's --api-auth form: a Basic header carries it as user and password.
PAIR_KEY = "webui:0123456789abcdefghij"


@pytest.fixture
def keyed_with_pair(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(api_keys=f"{KEY_A},{PAIR_KEY}"))) as client:
        yield client


def test_a1111_paths_take_http_basic_with_the_key(keyed_with_pair: TestClient) -> None:
    as_password = keyed_with_pair.get("/sdapi/v1/sd-models", headers=basic("sillytavern", KEY_A))
    assert as_password.status_code == 200, as_password.text
    as_pair = keyed_with_pair.get("/sdapi/v1/sd-models", headers=basic(*PAIR_KEY.split(":")))
    assert as_pair.status_code == 200, as_pair.text
    wrong = keyed_with_pair.get("/sdapi/v1/sd-models", headers=basic("user", "not-a-key-0123"))
    assert wrong.status_code == 401
    missing = keyed_with_pair.get("/sdapi/v1/sd-models")
    assert missing.status_code == 401
    assert "HTTP Basic" in missing.text
    # Only A1111's paths: darkroom's own API keeps to Bearer.
    assert keyed_with_pair.get("/jobs", headers=basic("sillytavern", KEY_A)).status_code == 401


def test_basic_credentials_are_the_password_then_the_whole_pair() -> None:
    from starlette.requests import Request

    def keys_in(header: str) -> list[str]:
        scope = {"type": "http", "headers": [(b"authorization", header.encode())]}
        return basic_keys(Request(scope))

    encoded = base64.b64encode(b"user:pass:word").decode()
    assert keys_in(f"Basic {encoded}") == ["pass:word", "user:pass:word"]
    assert keys_in("Basic !!!not-base64") == []
    assert keys_in(f"Basic {base64.b64encode(b'no-colon').decode()}") == []
    assert keys_in(f"Bearer {encoded}") == []


def test_a_wrong_key_is_named_an_invalid_token(keyed: TestClient) -> None:
    response = keyed.get("/jobs", headers=bearer("not-a-key-0123456789"))
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="darkroom", error="invalid_token"'
    missing = keyed.get("/jobs")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="darkroom"'


def test_authentication_comes_before_validation(keyed: TestClient) -> None:
    # An anonymous caller learns nothing about what a valid request would need.
    assert keyed.post("/jobs", json={"prompt": ""}).status_code == 401
    assert keyed.get("/jobs", params={"limit": 0}).status_code == 401


def test_health_checks_and_docs_stay_open(keyed: TestClient) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    assert keyed.get("/docs").status_code == 200
    schema = keyed.get("/openapi.json")
    assert schema.status_code == 200
    assert schema.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # The schema marks which operations need the key.
    paths = schema.json()["paths"]
    assert paths["/jobs"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/healthz"]["get"]


@pytest.mark.parametrize("key", [KEY_A, KEY_B])
def test_every_configured_key_is_accepted(keyed: TestClient, key: str) -> None:
    for method, path in [("GET", "/jobs"), ("GET", "/models"), ("GET", "/status")]:
        assert keyed.request(method, path, headers=bearer(key)).status_code == 200


def test_the_owner_is_stored_but_never_shown(keyed: TestClient, api_redis: redis.Redis) -> None:
    response = keyed.post("/jobs", json=BODY, headers=bearer(KEY_A))
    job = response.json()
    stored = json.loads(api_redis.hget(job_key(job["id"]), "owner"))  # type: ignore[arg-type]
    assert stored == owner_id(hash_key(KEY_A))
    assert len(stored) == 16
    assert "owner" not in job
    assert stored not in response.text
    assert "owner" not in keyed.get(f"/jobs/{job['id']}", headers=bearer(KEY_A)).json()


# --- ownership ------------------------------------------------------------------------------


def test_another_keys_job_is_404_like_an_unknown_one(keyed: TestClient) -> None:
    job_id = submit(keyed, KEY_A)
    assert keyed.get(f"/jobs/{job_id}", headers=bearer(KEY_A)).status_code == 200

    theirs = keyed.get(f"/jobs/{job_id}", headers=bearer(KEY_B))
    unknown = keyed.get("/jobs/ffffffffffffffffffffffffffffffff", headers=bearer(KEY_B))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["type"] == unknown.json()["error"]["type"] == "not_found"
    assert theirs.json()["error"]["message"] == unknown.json()["error"]["message"].replace(
        "ffffffffffffffffffffffffffffffff", job_id
    )
    assert keyed.get(f"/jobs/{job_id}/events", headers=bearer(KEY_B)).status_code == 404


def test_another_key_cannot_cancel_a_job(keyed: TestClient) -> None:
    job_id = submit(keyed, KEY_A)
    response = keyed.post(f"/jobs/{job_id}/cancel", headers=bearer(KEY_B))
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert keyed.get(f"/jobs/{job_id}", headers=bearer(KEY_A)).json()["status"] == "queued"
    assert keyed.post(f"/jobs/{job_id}/cancel", headers=bearer(KEY_A)).status_code == 200


def test_each_key_lists_only_its_own_jobs(keyed: TestClient) -> None:
    mine = [submit(keyed, KEY_A, seed=i) for i in range(5)]
    theirs = [submit(keyed, KEY_B, seed=i) for i in range(3)]
    keyed.post(f"/jobs/{mine[1]}/cancel", headers=bearer(KEY_A))

    pages, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = keyed.get("/jobs", params=params, headers=bearer(KEY_A)).json()
        pages.append([job["id"] for job in page["jobs"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [job_id for page in pages for job_id in page] == list(reversed(mine))
    assert all(len(page) <= 2 for page in pages)

    listed_b = keyed.get("/jobs", headers=bearer(KEY_B)).json()["jobs"]
    assert [job["id"] for job in listed_b] == list(reversed(theirs))
    canceled = keyed.get("/jobs", params={"status": "canceled"}, headers=bearer(KEY_B)).json()
    assert canceled["jobs"] == []
    canceled = keyed.get("/jobs", params={"status": "canceled"}, headers=bearer(KEY_A)).json()
    assert [job["id"] for job in canceled["jobs"]] == [mine[1]]


def test_idempotency_keys_are_per_api_key(keyed: TestClient) -> None:
    headers_a = {**bearer(KEY_A), "Idempotency-Key": "order-1"}
    headers_b = {**bearer(KEY_B), "Idempotency-Key": "order-1"}
    first = keyed.post("/jobs", json=BODY, headers=headers_a).json()["id"]
    other = keyed.post("/jobs", json=BODY, headers=headers_b)
    assert other.status_code == 202
    assert "Idempotent-Replayed" not in other.headers
    assert other.json()["id"] != first
    assert keyed.post("/jobs", json=BODY, headers=headers_a).json()["id"] == first


def test_images_are_served_only_to_their_jobs_key(
    keyed: TestClient, keyed_settings: Settings
) -> None:
    job_id = submit(keyed, KEY_A)
    key = f"jobs/{job_id}/0.png"
    storage = LocalStorage(Path(keyed_settings.storage_url.removeprefix("file://")), "")
    storage.put(key, b"png bytes", "image/png")
    image = StoredImage(key=key, width=64, height=64, seed=1)
    keyed.app.state.darkroom.store.update(  # type: ignore[attr-defined]
        job_id, images=[image.model_dump(mode="json")]
    )

    assert keyed.get(f"/files/{key}", headers=bearer(KEY_A)).content == b"png bytes"
    assert keyed.get(f"/files/{key}", headers=bearer(KEY_B)).status_code == 404
    assert keyed.get(f"/files/{key}").status_code == 401
    # Through another of B's own jobs' directory: judged by the file it resolves to.
    other = submit(keyed, KEY_B)
    sneaky = f"/files/jobs/{other}/..%2F{job_id}%2F0.png"
    assert keyed.get(sneaky, headers=bearer(KEY_B)).status_code == 404


# --- open mode ------------------------------------------------------------------------------


def test_without_keys_everything_is_shared_and_anonymous(
    api: TestClient, api_redis: redis.Redis
) -> None:
    job_id = api.post("/jobs", json=BODY).json()["id"]
    assert json.loads(api_redis.hget(job_key(job_id), "owner")) == ANONYMOUS  # type: ignore[arg-type]
    # Any Authorization header is ignored: there is nothing to check it against.
    other = bearer("whatever-0123456789")
    assert api.get(f"/jobs/{job_id}", headers=other).status_code == 200
    assert [j["id"] for j in api.get("/jobs", headers=other).json()["jobs"]] == [job_id]


def test_jobs_made_while_open_are_not_any_keys(
    make_settings: Callable[..., Settings], keyed_settings: Settings, api_redis: redis.Redis
) -> None:
    with TestClient(create_app(make_settings())) as open_api:
        job_id = open_api.post("/jobs", json=BODY).json()["id"]
    with TestClient(create_app(keyed_settings)) as keyed:
        assert keyed.get(f"/jobs/{job_id}", headers=bearer(KEY_A)).status_code == 404
        assert keyed.get("/jobs", headers=bearer(KEY_A)).json()["jobs"] == []


def test_open_api_warns_at_start(
    make_settings: Callable[..., Settings],
    api_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO), TestClient(create_app(make_settings())):
        pass
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "no API keys configured: the API is open to anyone who can reach it"
    ]


def test_keyed_api_does_not_warn(
    keyed_settings: Settings, api_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), TestClient(create_app(keyed_settings)):
        pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "API keys: 2 configured" in caplog.text


def test_keys_are_never_logged(
    keyed_settings: Settings, api_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-key-0123456789abc"
    with caplog.at_level(logging.DEBUG), TestClient(create_app(keyed_settings)) as client:
        submit(client, KEY_A)
        client.get("/jobs", headers=bearer(wrong))
        client.get("/jobs/nope", headers=bearer(KEY_B))
    for secret in (KEY_A, KEY_B, wrong, hash_key(KEY_A), hash_key(KEY_B)):
        assert secret not in caplog.text
    assert KEY_A not in repr(keyed_settings)


# --- the hashed keys file -------------------------------------------------------------------


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys.sha256"
    path.write_text(
        "# darkroom API keys, one SHA-256 digest per line\n"
        f"{hash_key(KEY_C)}  # team c\n"
        "\n"
        f"   {hash_key(KEY_B).upper()}\n"
    )
    return path


def test_hashed_keys_file(
    make_settings: Callable[..., Settings], api_redis: redis.Redis, keys_file: Path
) -> None:
    settings = make_settings(api_keys_file=keys_file)
    with TestClient(create_app(settings)) as client:
        job_id = submit(client, KEY_C)
        assert client.get(f"/jobs/{job_id}", headers=bearer(KEY_C)).status_code == 200
        assert client.get(f"/jobs/{job_id}", headers=bearer(KEY_B)).status_code == 404
        assert client.get("/jobs", headers=bearer(KEY_A)).status_code == 401
        assert client.get("/jobs", headers=bearer(hash_key(KEY_C))).status_code == 401


def test_a_keys_identity_is_the_same_from_either_setting(
    make_settings: Callable[..., Settings], api_redis: redis.Redis, keys_file: Path
) -> None:
    with TestClient(create_app(make_settings(api_keys=KEY_B))) as plain:
        job_id = submit(plain, KEY_B)
    with TestClient(create_app(make_settings(api_keys_file=keys_file))) as hashed:
        assert hashed.get(f"/jobs/{job_id}", headers=bearer(KEY_B)).status_code == 200


def test_both_settings_together(
    make_settings: Callable[..., Settings], api_redis: redis.Redis, keys_file: Path
) -> None:
    settings = make_settings(api_keys=KEY_A, api_keys_file=keys_file)
    assert len(settings.api_key_digests) == 3
    with TestClient(create_app(settings)) as client:
        for key in (KEY_A, KEY_B, KEY_C):
            assert client.get("/jobs", headers=bearer(key)).status_code == 200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# only comments\n\n", "holds no key digests"),
        (f"{hash_key(KEY_A)}\n{KEY_B}\n", "line 2: expected a SHA-256 hex digest"),
        (f"{hash_key(KEY_A)[:-1]}\n", "line 1"),
    ],
    ids=["empty", "plain key", "short digest"],
)
def test_bad_keys_file_is_refused_at_start(
    make_settings: Callable[..., Settings], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(ValidationError, match=message) as refused:
        make_settings(api_keys_file=path)
    assert KEY_B not in str(refused.value)  # a pasted key is never echoed


def test_missing_keys_file_is_refused_at_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="cannot be read"):
        make_settings(api_keys_file=tmp_path / "nope")


@pytest.mark.parametrize("bad", ["short", "has space 0123456789", "ключ-0123456789abcdef"])
def test_weak_or_odd_plain_keys_are_refused_without_echo(
    make_settings: Callable[..., Settings], bad: str
) -> None:
    with pytest.raises(ValidationError, match="API_KEYS entries must") as refused:
        make_settings(api_keys=f"{KEY_A},{bad}")
    assert bad not in str(refused.value)
    assert KEY_A not in str(refused.value)


def test_key_ring() -> None:
    ring = KeyRing([hash_key(KEY_A), hash_key(KEY_B), hash_key(KEY_A)])
    assert ring.enabled
    assert len(ring) == 2
    assert ring.owner_of(KEY_A) == hash_key(KEY_A)[:16]
    assert ring.owner_of(KEY_B) == hash_key(KEY_B)[:16]
    assert ring.owner_of(KEY_C) is None
    assert ring.owner_of("") is None
    assert not KeyRing([]).enabled
