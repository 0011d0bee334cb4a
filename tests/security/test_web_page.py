"""The web page as a visitor would probe it: the server's API key, and the URLs it dials.

`darkroom ui` runs in a real process in front of an API with keys on, holding
that API's key (as `darkroom up` hands it the first of API_KEYS). Visitors
speak to it over Streamlit's websocket, as raw protobufs or through a real
Chromium, and every byte the server sends them is searched for the key. Other
"APIs" are local HTTP receivers that record every request: one the operator
allowed (`--allow-api-url`), one it did not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from darkroom.stack import free_port
from tests.support import browser as chromium_browser
from tests.support.page import running_page
from tests.support.processes import ApiProcess, start_api
from tests.support.recorder import Answer, Recorder
from tests.support.streamlit_visitor import Visitor

SERVER_KEY = "page-server-key-K9x2Qv7LmZ4wT8rB"
VISITOR_KEY = "visitor-own-key-H3nP6sY1cV5bJ0dF"
# A page of some other server, which must never reach a visitor's screen.
FOREIGN_BODY = "internal-admin-page: db password hunter2"
API_URL_FIELD = "API URL"
API_KEY_FIELD = "API key"
REFUSED = "This page may not call"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def keyed_api(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API with one key on: the page's server holds it."""
    env = {**e2e_env, "API_KEYS": SERVER_KEY}
    server: ApiProcess = start_api(
        env, tmp_path_factory.mktemp("page-api") / "api.log", free_port()
    )
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def allowed_other() -> Iterator[Recorder]:
    """Another API URL the operator allowed; it answers 500 with a page of its own."""
    with Recorder(Answer(500, FOREIGN_BODY.encode(), "text/html")) as recorder:
        yield recorder


@pytest.fixture(scope="module")
def not_allowed() -> Iterator[Recorder]:
    """A URL the operator never allowed: a service inside the page server's network."""
    with Recorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def page(
    keyed_api: str, allowed_other: Recorder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`darkroom ui` with the API's key in its environment, allowing one more URL."""
    args = ["--api-url", keyed_api, "--allow-api-url", allowed_other.url]
    log_path = tmp_path_factory.mktemp("page") / "ui.log"
    with running_page(args, log_path, env={"DARKROOM_API_KEY": SERVER_KEY}) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_receivers(allowed_other: Recorder, not_allowed: Recorder) -> None:
    allowed_other.clear()
    not_allowed.clear()


# --- a raw websocket visitor --------------------------------------------------------


def test_the_page_works_with_the_servers_key_and_never_sends_it(page: str) -> None:
    with Visitor(page) as visitor:
        run = visitor.run()
        # The models and the service's status: calls the API answers only with the key.
        assert run.contains("tiny-sd"), run.alerts()
        assert any(alert.startswith("Service status") for alert in run.alerts()), run.alerts()
        key_field = next(
            m.delta.new_element.text_input
            for m in run.messages
            if m.delta.new_element.text_input.label == API_KEY_FIELD
        )
        assert (key_field.default, key_field.value) == ("", "")
        assert key_field.placeholder == "set on the server"
        assert not run.contains(SERVER_KEY)


def test_a_url_the_operator_did_not_allow_is_refused_and_never_dialled(
    page: str, keyed_api: str, not_allowed: Recorder
) -> None:
    port = not_allowed.url.rsplit(":", 1)[1]
    attempts = [
        not_allowed.url,
        f"{not_allowed.url}/models",
        # The allowed URL as a user name in front of the real host.
        f"{keyed_api}@127.0.0.1:{port}",
    ]
    with Visitor(page) as visitor:
        visitor.run()
        for url in attempts:
            run = visitor.run({API_URL_FIELD: url})
            assert [a for a in run.alerts() if a.startswith(REFUSED)], (url, run.alerts())
            assert not run.contains(SERVER_KEY)
    assert not_allowed.requests == []


def test_an_allowed_other_api_gets_no_key_and_its_error_page_is_not_shown(
    page: str, allowed_other: Recorder
) -> None:
    with Visitor(page) as visitor:
        visitor.run()
        run = visitor.run({API_URL_FIELD: allowed_other.url})
        assert allowed_other.requests, "the allowed URL was not called"
        assert [r.headers.get("authorization") for r in allowed_other.requests] == [None] * len(
            allowed_other.requests
        )
        assert any("HTTP 500" in alert for alert in run.alerts()), run.alerts()
        assert not run.contains(FOREIGN_BODY)
        assert not run.contains(SERVER_KEY)


def test_a_typed_key_replaces_the_servers_for_that_visitor_only(
    page: str, allowed_other: Recorder
) -> None:
    with Visitor(page) as typist, Visitor(page) as other:
        typist.run()
        typist.run({API_URL_FIELD: allowed_other.url, API_KEY_FIELD: VISITOR_KEY})
        sent = {r.headers.get("authorization") for r in allowed_other.requests}
        assert sent == {f"Bearer {VISITOR_KEY}"}

        allowed_other.clear()
        other.run()
        seen = other.run({API_URL_FIELD: allowed_other.url})
        assert {r.headers.get("authorization") for r in allowed_other.requests} == {None}
        assert not seen.contains(VISITOR_KEY)
        assert not any(run.contains(SERVER_KEY) for run in [*typist.runs, *other.runs])


# --- a real browser ------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_binaries() -> tuple[str, str]:
    return chromium_browser.browser_binaries()


def test_a_browser_gets_no_key_and_cannot_point_the_page_elsewhere(
    browser_binaries: tuple[str, str], page: str, not_allowed: Recorder
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium_browser.chromium(browser_binaries) as browser:
        wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
        browser.get(page)
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "textarea[aria-label='Prompt']")))
        key_input = browser.find_element(By.CSS_SELECTOR, f"input[aria-label='{API_KEY_FIELD}']")
        assert key_input.get_attribute("value") == ""
        frames = chromium_browser.websocket_frames_received(browser)
        assert any(b"tiny-sd" in frame for frame in frames)  # the frames were read

        url_input = browser.find_element(By.CSS_SELECTOR, f"input[aria-label='{API_URL_FIELD}']")
        url_input.send_keys(Keys.CONTROL, "a")
        url_input.send_keys(not_allowed.url, Keys.ENTER)
        wait.until(lambda b: REFUSED in _alert_texts(b))
        frames += chromium_browser.websocket_frames_received(browser)

        assert not_allowed.requests == []
        assert not [frame for frame in frames if SERVER_KEY.encode() in frame]
        assert SERVER_KEY not in browser.page_source
        assert SERVER_KEY not in _every_input_value(browser)


def _alert_texts(browser: Any) -> str:
    # Read in one script: Streamlit redraws alerts, and an element found by one
    # call may be gone by the next.
    return str(
        browser.execute_script(
            "return Array.from(document.querySelectorAll('[role=alert]'))"
            ".map(e => e.innerText).join(' ')"
        )
    )


def _every_input_value(browser: Any) -> str:
    """What the page's fields hold (a value typed or set is not in the page's HTML)."""
    return str(
        browser.execute_script(
            "return Array.from(document.querySelectorAll('input, textarea'))"
            ".map(e => e.value).join('\\n')"
        )
    )


def test_the_page_logs_no_key(page: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    logs = Path(tmp_path_factory.getbasetemp()).glob("page*/ui.log")
    assert all(SERVER_KEY not in log.read_text(errors="replace") for log in logs)
