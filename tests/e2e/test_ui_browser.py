"""The web page in a real browser: `darkroom ui` in headless Chromium, driven by selenium.

AppTest (test_ui.py) runs the page script without a browser or timers; this
test covers what only a browser does: the Streamlit server, the form's
round trip, the live panel's own polling, images loaded over HTTP. It saves
the screenshot the README shows (docs/ui.png).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import browser as chromium_browser
from tests.support.page import running_page
from tests.support.processes import REPO_ROOT, ApiProcess

SCREENSHOT = REPO_ROOT / "docs" / "ui.png"
WAIT_S = 90.0
IMAGES = 4
# History's thumbnails are on the page too, in a tab not shown.
VISIBLE_TAB_IMAGES = "[role='tabpanel'] [data-testid='stImage'] img"


@pytest.fixture(scope="session")
def browser_binaries() -> tuple[str, str]:
    """Session-scoped and first in the test's arguments: a machine without a
    browser skips before the stack is started for nothing."""
    return chromium_browser.browser_binaries()


@pytest.fixture
def ui_url(api_server: ApiProcess, tmp_path: Path) -> Iterator[str]:
    """`darkroom ui` as a person starts it, in front of the e2e API."""
    with running_page(["--api-url", api_server.url], tmp_path / "ui.log") as url:
        yield url


def test_a_prompt_typed_in_the_browser_becomes_an_image(
    browser_binaries: tuple[str, str], ui_url: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium_browser.chromium(browser_binaries) as browser:
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


def _loaded_images(page: Any) -> list[Any]:
    """The images of the tab shown (Generate) that the browser has finished loading."""
    from selenium.webdriver.common.by import By

    return [
        img
        for img in page.find_elements(By.CSS_SELECTOR, VISIBLE_TAB_IMAGES)
        if page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    ]
