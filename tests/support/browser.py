"""Headless Chromium (Debian's chromium and chromium-driver) driven by selenium.

Its performance log records the page's websocket frames, so a test can read
what the server sent the browser, byte for byte.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.system import require_program

WINDOW = (1400, 1000)


def browser_binaries() -> tuple[str, str]:
    """Chromium and its driver; a skip where they are missing (a failure in CI)."""
    return (
        require_program("chromium", "chromium"),
        require_program("chromedriver", "chromium-driver"),
    )


@contextmanager
def chromium(binaries: tuple[str, str]) -> Iterator[Any]:
    """A headless Chromium that logs its network events (websocket frames included)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = binaries
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def websocket_frames_received(browser: Any) -> list[bytes]:
    """The payloads of the websocket frames the page received since the last call."""
    frames = []
    for entry in browser.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event["method"] != "Network.webSocketFrameReceived":
            continue
        response = event["params"]["response"]
        payload = response["payloadData"]
        # Binary frames (opcode 2, Streamlit's protobufs) come base64-encoded.
        frames.append(base64.b64decode(payload) if response["opcode"] == 2 else payload.encode())
    return frames
