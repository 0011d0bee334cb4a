"""The web page in a real browser: `darkroom ui` in headless Chromium, driven by selenium.

AppTest (test_ui.py) runs the page script without a browser or timers; this
test covers what only a browser does: the Streamlit server, the form's
round trip, the live panel's own polling, images loaded over HTTP. It saves
the screenshot the README shows (docs/ui.png).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from darkroom.stack import free_port
from tests.support.processes import REPO_ROOT, ApiProcess
from tests.support.system import require_program

SCREENSHOT = REPO_ROOT / "docs" / "ui.png"
WINDOW = (1400, 1000)
WAIT_S = 90.0
IMAGES = 4
# History's thumbnails are on the page too, in a tab not shown.
VISIBLE_TAB_IMAGES = "[role='tabpanel'] [data-testid='stImage'] img"


@pytest.fixture(scope="session")
def browser_binaries() -> tuple[str, str]:
    """Chromium and its driver; a skip where they are missing (a failure in CI).

    Session-scoped and first in the test's arguments: a machine without a
    browser skips before the stack is started for nothing.
    """
    return (
        require_program("chromium", "chromium"),
        require_program("chromedriver", "chromium-driver"),
    )


@pytest.fixture
def ui_url(api_server: ApiProcess, tmp_path: Path) -> Iterator[str]:
    """`darkroom ui` as a person starts it, in front of the e2e API."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "DARKROOM_API_KEY"}
    log_path = tmp_path / "ui.log"
    argv = [sys.executable, "-m", "darkroom.cli", "ui", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*argv, "--api-url", api_server.url],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(url, proc, log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_health(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"darkroom ui exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"darkroom ui did not answer in time:\n{log_path.read_text()}")
        time.sleep(0.2)


def test_a_prompt_typed_in_the_browser_becomes_an_image(
    browser_binaries: tuple[str, str], ui_url: str
) -> None:
    chromium, driver_path = browser_binaries
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
        browser.get(ui_url)
        prompt = wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, "textarea[aria-label='Prompt']"))
        )
        prompt.send_keys("a lighthouse over a night sea, oil painting")
        images = browser.find_element(By.CSS_SELECTOR, "input[aria-label='Images']")
        images.send_keys(f"\b{IMAGES}")  # over the default 1: a full gallery
        browser.find_element(By.XPATH, "//button[.//p[normalize-space()='Generate']]").click()

        # The live panel polls on its own until the job is done, then the gallery shows
        # (each image once the browser has loaded it, with its seed under it).
        wait.until(lambda page: len(_loaded_images(page)) == IMAGES)
        captions = [
            c.text for c in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stImageCaption']")
        ]
        assert len([c for c in captions if c.startswith("seed ")]) == IMAGES, captions
        downloads = browser.find_elements(
            By.CSS_SELECTOR, "[role='tabpanel'] [data-testid='stDownloadButton']"
        )
        assert len(downloads) == IMAGES
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))
    finally:
        browser.quit()


def _loaded_images(page: Any) -> list[Any]:
    """The images of the tab shown (Generate) that the browser has finished loading."""
    from selenium.webdriver.common.by import By

    return [
        img
        for img in page.find_elements(By.CSS_SELECTOR, VISIBLE_TAB_IMAGES)
        if page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    ]
