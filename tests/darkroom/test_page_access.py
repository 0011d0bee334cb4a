"""The web page's access rules (darkroom/ui/access.py): which URLs a visitor may choose,
and which key goes where. Plain functions of the page's environment."""

from __future__ import annotations

import pytest

from darkroom.process_commands import streamlit_ui_env
from darkroom.ui.access import ALLOWED_API_URLS_ENV, PageAccess

API = "http://127.0.0.1:8000"
SERVER_KEY = "page-server-key-0123456789"


def access(*allowed: str, key: str | None = SERVER_KEY) -> PageAccess:
    return PageAccess.from_environment(streamlit_ui_env(API, key, allowed))


@pytest.mark.parametrize(
    "url", [API, f"{API}/", "HTTP://127.0.0.1:8000", "http://127.0.0.1:8000//"]
)
def test_the_configured_url_is_allowed_however_written(url: str) -> None:
    assert access().permits(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001",
        "http://127.0.0.1:8000.evil.example",
        f"{API}@127.0.0.1:9000",
        "http://127.0.0.1:80001",
        "https://127.0.0.1:8000",
        f"{API}/other",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "",
    ],
)
def test_by_default_nothing_else_is(url: str) -> None:
    refusal = access().refusal(url)
    assert refusal is not None
    assert refusal.startswith("This page may not call")
    assert API in refusal


def test_the_operator_allows_more_or_any() -> None:
    page = access("http://127.0.0.1:9000/", "http://10.0.0.5:8000")
    assert page.permits("http://127.0.0.1:9000")
    assert page.permits("http://10.0.0.5:8000/")
    assert not page.permits("http://10.0.0.5:8001")

    anything = access("*")
    assert anything.permits("https://images.example:8443/darkroom")
    assert not anything.permits("file:///etc/passwd")
    assert anything.refusal("gopher://x") == "The page calls only http(s) URLs, not 'gopher://x'."


def test_the_allowed_urls_travel_in_the_environment() -> None:
    env = streamlit_ui_env(API, None, ["http://a:1", "*"])
    assert env[ALLOWED_API_URLS_ENV] == "http://a:1 *"
    assert "DARKROOM_API_KEY" not in env
    parsed = PageAccess.from_environment({**env, ALLOWED_API_URLS_ENV: "http://a:1, http://b:2"})
    assert parsed.allowed_urls == ("http://a:1", "http://b:2")


def test_the_server_key_goes_to_the_configured_api_only() -> None:
    page = access("*")
    assert page.key_for(API, None) == SERVER_KEY
    assert page.key_for(f"{API}/", None) == SERVER_KEY
    assert page.key_for("http://127.0.0.1:9000", None) is None
    assert page.key_for(f"{API}.evil.example", None) is None


def test_a_typed_key_replaces_the_servers() -> None:
    assert access().key_for(API, "mine") == "mine"
    assert access("*").key_for("http://127.0.0.1:9000", "mine") == "mine"
    assert access(key=None).key_for(API, None) is None
