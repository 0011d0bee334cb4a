"""Webhook URLs are checked at submit time: http(s) only, public addresses only by default."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from shared.settings import Settings
from shared.webhooks import is_public

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = {"prompt": "x", "model": "tiny-sd"}


@pytest.fixture
def hooks_api(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(webhook_secret=SECRET))) as client:
        yield client


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://192.168.1.10/hook",
        "http://100.64.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_non_public_targets_are_refused(hooks_api: TestClient, url: str) -> None:
    response = hooks_api.post("/jobs", json={**BODY, "webhook": url})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "webhook"
    assert "non-public" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "not a url", "http:///nohost", "http://user:pw@example.com/"]
)
def test_malformed_webhook_urls_are_refused(hooks_api: TestClient, url: str) -> None:
    assert hooks_api.post("/jobs", json={**BODY, "webhook": url}).status_code == 422


def test_private_targets_are_allowed_with_the_development_setting(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    settings = make_settings(webhook_secret=SECRET, webhook_allow_private_networks=True)
    with TestClient(create_app(settings)) as client:
        response = client.post("/jobs", json={**BODY, "webhook": "http://127.0.0.1:9/hook"})
    assert response.status_code == 202
    section = response.json()["webhook"]
    assert section == {
        "url": "http://127.0.0.1:9/hook",
        "events_filter": ["completed"],
        "state": "pending",
        "attempts": [],
    }


def test_webhooks_need_a_signing_secret(api: TestClient) -> None:
    response = api.post("/jobs", json={**BODY, "webhook": "https://example.com/hook"})
    assert response.status_code == 422
    assert "WEBHOOK_SECRET" in response.json()["error"]["message"]


def test_unknown_event_names_are_refused(hooks_api: TestClient) -> None:
    response = hooks_api.post("/jobs", json={**BODY, "webhook_events_filter": ["finished"]})
    assert response.status_code == 422


def test_is_public() -> None:
    assert is_public("93.184.216.34")
    assert is_public("2606:2800:220:1::1")
    assert not any(
        map(
            is_public,
            [
                "127.0.0.1",
                "10.1.1.1",
                "172.16.0.1",
                "169.254.169.254",
                "100.64.1.1",
                "fe80::1",
                "fc00::1",
                "::1",
                "240.0.0.1",
            ],
        )
    )


def test_bad_webhook_secret_is_refused_at_start(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="whsec_"):
        make_settings(webhook_secret="plain-secret")
