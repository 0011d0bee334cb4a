"""The web page in a real browser: `darkroom ui` in headless Chromium, driven by selenium.

AppTest (test_ui.py) runs the page script without a browser or timers; this
test covers what only a browser does: the Streamlit server, the form's
round trip, the live panel's own polling, images loaded over HTTP. It saves
the screenshot the README shows (docs/ui.png).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from shared.store import mask_key
from tests.support import browser as chromium_browser
from tests.support.page import running_page
from tests.support.processes import REPO_ROOT, ApiProcess

SCREENSHOT = REPO_ROOT / "docs" / "ui.png"
WAIT_S = 90.0
IMAGES = 4
# History's thumbnails are on the page too, in a tab not shown.
VISIBLE_TAB_IMAGES = "[role='tabpanel'] [data-testid='stImage'] img"
TERMINAL = ("succeeded", "failed", "canceled")
# The image to inpaint, and the stroke across its canvas: from the centre, this many
# screen pixels left and right, in this many mouse moves.
SOURCE_PX = 64
STROKE_HALF = 120
STROKE_MOVES = 12
# Strokes drawn before the page must show it took one (see the test).
DRAW_ATTEMPTS = 3


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


def test_a_mask_painted_on_the_upload_repaints_only_there(
    browser_binaries: tuple[str, str],
    ui_url: str,
    api_server: ApiProcess,
    e2e_redis_url: str,
    tmp_path: Path,
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # Noise: any pixel the job repainted differs from its input.
    rng = np.random.default_rng(11)
    source = rng.integers(0, 255, (SOURCE_PX, SOURCE_PX, 3), dtype=np.uint8)
    source_path = tmp_path / "source.png"
    Image.fromarray(source, "RGB").save(source_path)
    prompt = f"a red fox, inpainted {uuid.uuid4().hex[:8]}"

    with chromium_browser.chromium(browser_binaries) as browser:
        wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
        browser.get(ui_url)
        wait.until(
            ec.element_to_be_clickable((By.XPATH, "//summary[.//p[starts-with(., 'Image to')]]"))
        ).click()
        browser.find_element(By.CSS_SELECTOR, "input[type='file']").send_keys(str(source_path))
        canvas = wait.until(lambda page: _mask_canvas(page))
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        # All of it shows in the form's column: none of the image is scrolled out of view.
        scroller = "const s = arguments[0].closest('.dc-scroll');"
        assert browser.execute_script(f"{scroller} return s.scrollWidth <= s.clientWidth", canvas)

        # One horizontal stroke through the middle, drawn as a person drags the mouse.
        side = canvas.size["width"]
        scale = side / SOURCE_PX  # canvas pixels per image pixel

        def draw() -> None:
            stroke = ActionChains(browser).move_to_element_with_offset(canvas, -STROKE_HALF, 0)
            stroke.click_and_hold()
            for _ in range(STROKE_MOVES):
                stroke.move_by_offset(2 * STROKE_HALF // STROKE_MOVES, 0)
            stroke.release().perform()

        # The page has the strokes once it says so (each stroke reruns it). On a busy
        # machine a drag can come before the canvas listens: the same stroke again.
        for attempt in range(1, DRAW_ATTEMPTS + 1):
            draw()
            try:
                WebDriverWait(browser, WAIT_S / DRAW_ATTEMPTS, poll_frequency=0.2).until(
                    lambda page: "Inpainting: only the painted area" in page.page_source
                )
                break
            except TimeoutException:
                if attempt == DRAW_ATTEMPTS:
                    raise

        prompt_box = browser.find_element(By.CSS_SELECTOR, "textarea[aria-label='Prompt']")
        prompt_box.send_keys(prompt)
        browser.find_element(By.XPATH, "//button[.//p[normalize-space()='Generate']]").click()
        job = wait.until(lambda _: _finished_job(api_server.url, prompt))

    assert job["status"] == "succeeded", job["error"]
    assert job["params"]["mode"] == "inpaint"
    out = np.asarray(_download(job["images"][0]["url"]).convert("RGB"))
    assert out.shape == source.shape
    changed = (out != source).any(axis=2)
    # The mask the page sent (the job keeps it for its TTL): white where painted.
    raw = redis.Redis.from_url(e2e_redis_url).get(mask_key(job["id"]))
    assert raw is not None
    painted = np.asarray(Image.open(io.BytesIO(raw)).convert("L")) > 127
    assert painted.shape == source.shape[:2]
    # It is what was drawn: a horizontal stroke about the drag's length, in the
    # image's middle half (the page may shift a few pixels as it reruns under the
    # drag, and a stroke drawn again lands beside the first).
    rows = np.where(painted.any(axis=1))[0]
    cols = np.where(painted.any(axis=0))[0]
    assert rows.size, "nothing painted"
    assert SOURCE_PX / 4 <= rows.min() <= rows.max() < SOURCE_PX * 3 / 4, rows
    assert cols.max() - cols.min() + 1 >= 2 * STROKE_HALF / scale - 2
    assert rows.max() - rows.min() < cols.max() - cols.min()
    # Every pixel outside the painted mask is the input's, exactly; under it, repainted.
    assert not changed[~painted].any(), np.argwhere(changed & ~painted)[:10]
    assert changed[painted].mean() > 0.5


def _mask_canvas(page: Any) -> Any:
    """The canvas that takes the strokes (Fabric.js's upper canvas), once shown.

    streamlit-drawable-canvas is a components-v2 component with isolated styles:
    it renders in the page itself (no iframe), inside a shadow root."""
    from selenium.common.exceptions import NoSuchElementException
    from selenium.webdriver.common.by import By

    for host in page.find_elements(By.CSS_SELECTOR, "[data-testid='stBidiComponentIsolated']"):
        try:
            canvas = host.shadow_root.find_element(By.CSS_SELECTOR, "canvas.upper-canvas")
        except NoSuchElementException:
            continue
        if canvas.size["width"] > 0:
            return canvas
    return None


def _finished_job(api_url: str, prompt: str) -> dict[str, Any] | None:
    """The job with `prompt` (GET /jobs, as any client asks), once it is terminal."""
    jobs = httpx.get(f"{api_url}/jobs", params={"limit": 20}, timeout=10).json()["jobs"]
    for job in jobs:
        if job["params"]["prompt"] == prompt and job["status"] in TERMINAL:
            return dict(job)
    return None


def _download(url: str) -> Image.Image:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


def _loaded_images(page: Any) -> list[Any]:
    """The images of the tab shown (Generate) that the browser has finished loading."""
    from selenium.webdriver.common.by import By

    return [
        img
        for img in page.find_elements(By.CSS_SELECTOR, VISIBLE_TAB_IMAGES)
        if page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    ]
