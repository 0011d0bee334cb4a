"""GET /metrics of the API on its own: route templates, open with keys on, Redis away, off."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from darkroom.stack import free_port
from shared.settings import Settings

KEY = "metrics-test-key-0123456789"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text)[(name, frozenset(labels.items()))]


def _requests(text: str, method: str, route: str, status: str) -> float:
    return _value(text, "darkroom_http_requests_total", method=method, route=route, status=status)


def test_requests_counted_by_route_template(api: TestClient) -> None:
    job = api.post("/jobs", json={"prompt": "a fox", "model": "tiny-sd"}).json()
    for _ in range(3):
        api.get(f"/jobs/{job['id']}")
    api.get("/jobs/0123456789abcdef0123456789abcdef")
    api.get("/wp-admin/setup.php")

    text = api.get("/metrics").text

    route = "/jobs/{job_id}"
    assert (
        _value(text, "darkroom_http_requests_total", method="GET", route=route, status="200") == 3
    )
    assert (
        _value(text, "darkroom_http_requests_total", method="GET", route=route, status="404") == 1
    )
    unmatched = _value(
        text, "darkroom_http_requests_total", method="GET", route="unmatched", status="404"
    )
    assert unmatched == 1
    assert (
        _value(text, "darkroom_http_request_duration_seconds_count", method="GET", route=route) == 4
    )
    assert _value(text, "darkroom_jobs_submitted_total", model="tiny-sd", priority="normal") == 1
    assert _value(text, "darkroom_queue_depth", model="tiny-sd", priority="normal") == 1
    assert job["id"] not in text
    assert "wp-admin" not in text


def test_refused_submissions_are_not_counted_as_submitted(api: TestClient) -> None:
    assert api.post("/jobs", json={"prompt": "x", "model": "nope"}).status_code == 422
    text = api.get("/metrics").text
    assert "darkroom_jobs_submitted_total{" not in text
    assert _requests(text, "POST", "/jobs", "422") == 1


def test_metrics_are_open_when_api_keys_are_on(
    make_settings: Callable[..., Settings], api_redis: object
) -> None:
    with TestClient(create_app(make_settings(api_keys=KEY))) as keyed:
        assert keyed.get("/jobs").status_code == 401
        response = keyed.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_redis_away_still_answers_with_redis_up_zero(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings)) as away:
        response = away.get("/metrics")
    assert response.status_code == 200
    assert _value(response.text, "darkroom_redis_up") == 0
    assert "darkroom_queue_depth" not in response.text


def test_metrics_enabled_false_answers_404(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(metrics_enabled=False))) as off:
        response = off.get("/metrics")
    assert response.status_code == 404
    assert "METRICS_ENABLED" in response.json()["error"]["message"]
