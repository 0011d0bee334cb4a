"""The HTTP client's two safety rules, against real local HTTP servers.

Its key goes only to the API's exact origin (scheme, host, port), and an error
answer's body is shown only when it is darkroom's own error shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from darkroom.cli import main
from darkroom.client import (
    PRIORITIES,
    ApiError,
    DarkroomClient,
    allowed_priorities,
    darkroom_error_message,
)
from tests.support.recorder import Answer, Recorder

KEY = "client-test-key-0123456789abcdef"
FOREIGN_BODY = "<html>internal dashboard: token=abc</html>"


@pytest.fixture
def api() -> Iterator[Recorder]:
    with Recorder(Answer(200, b"PNG")) as recorder:
        yield recorder


@pytest.fixture
def storage() -> Iterator[Recorder]:
    """Another origin, as a presigned S3 URL is."""
    with Recorder(Answer(200, b"PNG")) as recorder:
        yield recorder


@pytest.mark.parametrize(
    ("url", "gets_key"),
    [
        ("http://127.0.0.1:8000/files/a.png", True),
        ("HTTP://127.0.0.1:8000/x", True),
        # Starts like the API, is another host or port.
        ("http://127.0.0.1:8000.evil.example/", False),
        ("http://127.0.0.1:80001/files/a.png", False),
        ("http://127.0.0.1:8000@evil.example/", False),
        ("http://127.0.0.1/files/a.png", False),
        ("https://127.0.0.1:8000/files/a.png", False),
        ("http://localhost:8000/files/a.png", False),
        ("http://[::1]:8000/files/a.png", False),
        ("not a url at all", False),
    ],
)
def test_the_key_goes_to_the_apis_exact_origin_only(url: str, gets_key: bool) -> None:
    with DarkroomClient("http://127.0.0.1:8000/", api_key=KEY) as client:
        assert client.sends_key_to(url) is gets_key


def test_the_default_port_is_the_same_origin() -> None:
    with DarkroomClient("https://api.example", api_key=KEY) as client:
        assert client.sends_key_to("https://api.example:443/files/a.png")
        assert not client.sends_key_to("http://api.example/files/a.png")


def test_no_key_is_sent_when_none_is_set() -> None:
    with DarkroomClient("http://127.0.0.1:8000") as client:
        assert not client.sends_key_to("http://127.0.0.1:8000/jobs")


def test_downloads_carry_the_key_to_the_api_only(api: Recorder, storage: Recorder) -> None:
    with DarkroomClient(api.url, api_key=KEY) as client:
        assert client.download(f"{api.url}/files/images/a.png") == b"PNG"
        assert client.download(f"{storage.url}/bucket/a.png?X-Amz-Signature=s") == b"PNG"
    assert [r.headers.get("authorization") for r in api.requests] == [f"Bearer {KEY}"]
    assert [r.headers.get("authorization") for r in storage.requests] == [None]


def test_a_foreign_error_page_is_described_by_its_status_only() -> None:
    with (
        Recorder(Answer(502, FOREIGN_BODY.encode(), "text/html")) as server,
        DarkroomClient(server.url) as client,
        pytest.raises(ApiError) as refused,
    ):
        client.status()
    assert refused.value.status_code == 502
    assert str(refused.value).startswith("HTTP 502: Bad Gateway")
    assert "internal dashboard" not in str(refused.value)


def test_darkroom_errors_show_their_message() -> None:
    body = {"error": {"type": "invalid_request", "message": "width: at most 1024", "field": "w"}}
    answer = json.dumps({**body, "detail": "width: at most 1024"}).encode()
    with (
        Recorder(Answer(422, answer)) as server,
        DarkroomClient(server.url) as client,
        pytest.raises(ApiError) as refused,
    ):
        client.submit({"prompt": "p"})
    assert str(refused.value) == "HTTP 422: width: at most 1024"


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"type": "x", "message": "m", "secret": "s"}, "detail": None},  # extra key
        {"error": {"type": "x", "message": "m"}},  # no detail
        {"error": {"type": "x", "message": "m"}, "detail": None, "more": 1},
        {"error": {"type": "x", "message": ["m"]}, "detail": None},
        {"error": "m", "detail": None},
        ["error"],
        "m",
    ],
)
def test_only_darkroom_error_shape_counts(body: object) -> None:
    response = httpx.Response(500, json=body)
    assert darkroom_error_message(response) is None


def test_the_cli_prints_no_foreign_error_body(capsys: pytest.CaptureFixture[str]) -> None:
    with Recorder(Answer(500, FOREIGN_BODY.encode(), "text/html")) as server:
        assert main(["status", "--api-url", server.url]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("darkroom: HTTP 500: Internal Server Error")
    assert "internal dashboard" not in error


def test_the_priorities_of_me_highest_first() -> None:
    me = {"owner": "ab12", "priorities": ["low", "normal"], "admin": False, "auth": True}
    with Recorder(Answer(200, json.dumps(me).encode())) as server:
        with DarkroomClient(server.url) as client:
            assert allowed_priorities(client) == ("normal", "low")
        assert [r.path for r in server.requests] == ["/me"]


def test_an_api_without_me_leaves_every_priority_to_its_own_judgement() -> None:
    not_found = {"error": {"type": "not_found", "message": "Not Found"}, "detail": "Not Found"}
    with (
        Recorder(Answer(404, json.dumps(not_found).encode())) as server,
        DarkroomClient(server.url) as client,
    ):
        assert allowed_priorities(client) == PRIORITIES == ("high", "normal", "low")
