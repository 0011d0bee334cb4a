"""The web page (darkroom/ui) driven by Streamlit's AppTest against the real stack.

AppTest runs the page script in this process, as a browser session would,
with no timers: each `at.run()` is one rerun (what a click, or the live
panel's one-second tick, causes), so a test polls with reruns until what it
waits for shows. The page reaches the API over HTTP like any client.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from streamlit.testing.v1 import AppTest

from api.main import create_app
from darkroom.client import DarkroomClient
from darkroom.stack import free_port
from darkroom.ui import form, messages
from shared.settings import Settings
from tests.e2e.helpers import submit
from tests.support.polling import wait_until
from tests.support.processes import REPO_ROOT, ApiProcess, start_api

APP = REPO_ROOT / "darkroom" / "ui" / "app.py"
FLAKY = "tiny-flaky"
# Long enough to watch it run and cancel it (0.2 s a step), never waited out.
SLOW_STEPS = 40
KEY_A = "ui-test-key-aaaaaaaaaaaaaaaa"
KEY_B = "ui-test-key-bbbbbbbbbbbbbbbb"
POLL_S = 0.2
WAIT_S = 90.0

OpenPage = Callable[..., AppTest]


@pytest.fixture
def open_page(monkeypatch: pytest.MonkeyPatch, api_server: ApiProcess) -> OpenPage:
    """A fresh browser session on the page, against `api_url` (the e2e API by default)."""

    def open_it(api_url: str = api_server.url, api_key: str | None = None) -> AppTest:
        # The page takes its defaults from the environment, as `darkroom ui` sets it.
        monkeypatch.setenv("DARKROOM_API_URL", api_url)
        if api_key is None:
            monkeypatch.delenv("DARKROOM_API_KEY", raising=False)
        else:
            monkeypatch.setenv("DARKROOM_API_KEY", api_key)
        at = AppTest.from_file(str(APP), default_timeout=30).run()
        assert not at.exception, at.exception
        return at

    return open_it


@pytest.fixture(scope="module")
def api(api_server: ApiProcess) -> Iterator[DarkroomClient]:
    with DarkroomClient(api_server.url) as client:
        yield client


@pytest.fixture(scope="module")
def keyed_api(
    e2e_env: dict[str, str], workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """A second API process on the same Redis with API keys on and one submit a minute."""
    env = {**e2e_env, "API_KEYS": f"{KEY_A},{KEY_B}", "RATE_LIMIT_SUBMITS_PER_MINUTE": "1"}
    server = start_api(env, tmp_path_factory.mktemp("keyed-api") / "api.log", free_port())
    yield server
    server.stop()


# --- driving the page ---------------------------------------------------------------


def page_text(at: AppTest) -> str:
    """Every piece of text on the page, one per line (for asserts and failure messages)."""
    parts: list[str] = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"WARNING {e.value}" for e in at.warning]
    parts += [f"ERROR {e.value}" for e in at.error]
    parts += [f"PROGRESS {bar.value}% {bar.text}" for bar in at.progress]
    return "\n".join(parts)


def rerun_until(at: AppTest, condition: Callable[[AppTest], Any], what: str) -> Any:
    """Rerun the page (a poll tick) until `condition` holds; its value. Bounded by WAIT_S."""

    def shown() -> Any:
        at.run()
        assert not at.exception, at.exception
        return condition(at)

    return wait_until(shown, WAIT_S, POLL_S, what=lambda: f"{what}; it shows:\n{page_text(at)}")


def generate(at: AppTest, prompt: str, model: str | None = None, **fields: Any) -> str:
    """Fill the form (number fields by key) and press Generate; the job id it queued."""
    if model is not None and at.selectbox(key="model").value != model:
        at.selectbox(key="model").select(model).run()
    at.text_area(key="prompt").input(prompt)
    for key, value in fields.items():
        at.number_input(key=key).set_value(value)
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    job_id = at.session_state.get("current_job")
    assert job_id, f"nothing queued; the page shows:\n{page_text(at)}"
    return str(job_id)


def finished(at: AppTest) -> bool:
    """The Generate tab shows a terminal job (the live panel is gone)."""
    generate_tab = at.tabs[0]
    return not generate_tab.progress and any("Prompt:" in m.value for m in generate_tab.markdown)


def progress_text(at: AppTest) -> str:
    return str(at.progress[0].text) if at.progress else ""


def slow_prompt() -> str:
    return f"slow ui {uuid.uuid4().hex[:8]}"


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the form -----------------------------------------------------------------------


def test_the_form_follows_the_chosen_models_limits(open_page: OpenPage) -> None:
    at = open_page()
    assert at.selectbox(key="model").value == "tiny-sd"  # the primary, which a worker serves
    width, steps = at.number_input(key="width"), at.number_input(key="steps")
    assert (width.value, width.max, steps.value, steps.max) == (64, 256, 2, 10)
    assert at.file_uploader(key="init_image")  # tiny-sd does image-to-image
    assert at.text_area(key="negative_prompt").value == "blurry"  # its registry default

    at.selectbox(key="model").select(FLAKY).run()
    assert at.number_input(key="width").max == 128
    assert at.number_input(key="steps").max == 50
    assert not at.file_uploader  # text-to-image only
    assert not [t for t in at.text_area if t.key == "negative_prompt"]  # it uses none
    assert "text-to-image only" in page_text(at)


def test_the_priority_select_offers_what_the_key_may_use(
    open_page: OpenPage, keyed_api: ApiProcess
) -> None:
    # API keys off: the one caller may use every priority, highest first.
    select = open_page().selectbox(key="priority")
    assert (select.options, select.value) == (["high", "normal", "low"], "normal")
    # A key from API_KEYS may use normal and low (GET /me), so high is not offered.
    select = open_page(api_url=keyed_api.url, api_key=KEY_A).selectbox(key="priority")
    assert (select.options, select.value) == (["normal", "low"], "normal")


def test_an_empty_prompt_is_caught_on_the_page(open_page: OpenPage) -> None:
    at = open_page()
    at.text_area(key="prompt").input("   ")
    at.button(key="generate").click().run()
    assert "Write a prompt first." in [w.value for w in at.warning]
    assert "current_job" not in at.session_state


# --- a job from Generate to its images ----------------------------------------------


def test_generate_shows_the_images_with_seeds_and_parameters(
    open_page: OpenPage, api: DarkroomClient
) -> None:
    at = open_page()
    prompt = "밤바다 위의 등대, 유화"  # Korean is text like any other
    job_id = generate(at, prompt, seed=1234, num_images=2)
    rerun_until(at, finished, "the finished job")

    job = api.get(job_id)
    assert job["status"] == "succeeded"
    assert job["params"]["prompt"] == prompt
    generate_tab = at.tabs[0]
    images = generate_tab.image
    assert len(images) == 2
    captions = [caption for image in images for caption in image.captions]
    assert captions == [f"seed {image['seed']} · 64x64" for image in job["images"]]
    assert job["params"]["seed"] == 1234
    shown = [m.value for m in generate_tab.markdown]
    assert f"**Prompt:** {messages.escape_markdown(prompt)}" in shown
    assert "tiny-sd · 64x64 · 2 steps" in page_text(at)
    assert "seed 1234" in page_text(at)
    assert len(generate_tab.download_button) == 2
    # What the download buttons hand out: the PNGs the API serves, fetched by the page.
    fetched = at.session_state["image_bytes"]
    for index, image in enumerate(job["images"]):
        assert fetched[(job_id, index)] == api.download(image["url"])
        assert Image.open(io.BytesIO(fetched[(job_id, index)])).size == (64, 64)


def test_image_to_image_sends_the_upload_and_strength(
    open_page: OpenPage, api: DarkroomClient
) -> None:
    at = open_page()
    at.file_uploader(key="init_image").upload("start.png", png(), "image/png")
    at.slider(key="strength").set_value(0.5)
    job_id = generate(at, "a harbour at noon")
    rerun_until(at, finished, "the finished job")
    job = api.get(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert (job["params"]["mode"], job["params"]["strength"]) == ("img2img", 0.5)
    assert "image-to-image, strength 0.5" in page_text(at)
    # tiny-sd inpaints: the upload shows on a canvas to paint a mask on (AppTest has
    # no browser to paint with: tests/e2e/test_ui_browser.py does), and with nothing
    # painted the job is image-to-image.
    canvases = [e for e in at.get("bidi_component") if (e.key or "").startswith("mask_canvas:")]
    assert len(canvases) == 1
    assert "Nothing painted: image-to-image of the whole image." in page_text(at)


def test_the_sampler_and_schedule_picked_are_what_the_job_runs_with(
    open_page: OpenPage, api: DarkroomClient
) -> None:
    at = open_page()
    sampler, schedule = at.selectbox(key="sampler"), at.selectbox(key="scheduler")
    # tiny-sd's registry entry names no default sampler: none is sent unless picked.
    assert (sampler.value, schedule.value) == ("model default", "Automatic")
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= set(sampler.options)  # GET /models' list
    assert {"Karras", "Exponential", "SGM Uniform"} <= set(schedule.options)
    sampler.select("DPM++ 2M")
    schedule.select("Exponential")
    job_id = generate(at, "a lighthouse, exponential sigmas")
    rerun_until(at, finished, "the finished job")

    job = api.get(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert (job["params"]["sampler"], job["params"]["scheduler"]) == ("DPM++ 2M", "exponential")
    # History's "Run again" body keeps them, and the API takes it as it is.
    again = api.get(api.submit(form.rerun_body(job) or {})["id"])
    assert (again["params"]["sampler"], again["params"]["scheduler"]) == (
        "DPM++ 2M",
        "exponential",
    )


def test_the_hires_fix_and_tiling_switches_make_the_job_so(
    open_page: OpenPage, api: DarkroomClient
) -> None:
    at = open_page()
    assert at.selectbox(key="hires_upscaler").value == "Latent"  # tiny-sd is an SD model
    at.checkbox(key="hires").check()
    at.checkbox(key="tiling").check()
    job_id = generate(at, "a seamless brick wall", seed=5)
    rerun_until(at, finished, "the finished job")

    job = api.get(job_id)
    assert job["status"] == "succeeded", job["error"]
    params = job["params"]
    # Scale 2 (the default) from tiny-sd's 64x64: the images come out at 128x128.
    assert (params["width"], params["height"]) == (64, 64)
    assert params["hires"] == {
        "width": 128,
        "height": 128,
        "steps": params["steps"],
        "strength": 0.7,
        "upscaler": "Latent",
    }
    assert params["tiling"] is True
    assert [(i["width"], i["height"]) for i in job["images"]] == [(128, 128)]
    # History's "Run again" body keeps both, and the API takes it as it is.
    again = api.get(api.submit(form.rerun_body(job) or {})["id"])
    assert (again["params"]["hires"], again["params"]["tiling"]) == (params["hires"], True)


def test_the_hires_fix_is_offered_for_text_to_image_on_models_that_take_it(
    open_page: OpenPage,
) -> None:
    at = open_page()
    assert at.checkbox(key="hires")
    at.file_uploader(key="init_image").upload("start.png", png(), "image/png").run()
    assert not [c for c in at.checkbox if c.key == "hires"]  # an image-to-image job
    assert at.checkbox(key="tiling")  # which may tile all the same

    at.selectbox(key="model").select(FLAKY).run()  # text-to-image only: no second pass
    assert not [c for c in at.checkbox if c.key == "hires"]
    assert at.checkbox(key="tiling")


def test_a_running_job_shows_its_queue_position_then_progress_and_cancels(
    open_page: OpenPage, api: DarkroomClient
) -> None:
    # One job busy on the flaky model's only worker: the page's job waits behind it.
    ahead = api.submit({"prompt": slow_prompt(), "model": FLAKY, "steps": SLOW_STEPS})
    try:
        _wait(lambda: api.get(ahead["id"])["status"] == "running", "the first job running")
        at = open_page()
        job_id = generate(at, slow_prompt(), model=FLAKY, steps=SLOW_STEPS)
        # Behind the busy job: next in line (or further back, were others queued too).
        queued = re.compile(r"Queued: (next in line|\d+ jobs? ahead)")
        assert [i for i in at.info if queued.fullmatch(i.value)], page_text(at)
        assert at.button(key="cancel")
    finally:
        api.cancel(ahead["id"])

    text = rerun_until(
        at,
        lambda page: re.search(
            rf"step [1-9]\d*/{SLOW_STEPS}, about \d+ (s|min)\b.* left", progress_text(page)
        ),
        "progress with steps and the time left",
    )
    assert text
    assert api.get(job_id)["status"] == "running"

    at.button(key="cancel").click().run()
    rerun_until(at, finished, "the canceled job")
    assert "The job was canceled." in [w.value for w in at.warning]
    assert api.get(job_id)["status"] == "canceled"


def test_a_running_job_shows_its_live_preview_under_the_progress_bar(
    open_page: OpenPage, api: DarkroomClient
) -> None:
    at = open_page()
    job_id = generate(at, slow_prompt(), model=FLAKY, steps=SLOW_STEPS)

    def preview_caption(page: AppTest) -> str | None:
        captions = [c for image in page.tabs[0].get("image") for c in image.captions]  # type: ignore[attr-defined]
        return next((c for c in captions if c.startswith("preview, step ")), None)

    caption = rerun_until(at, preview_caption, "a live preview")
    assert re.fullmatch(rf"preview, step [1-9]\d*/{SLOW_STEPS}", caption)
    api.cancel(job_id)
    rerun_until(at, finished, "the canceled job")


def test_a_failed_job_shows_its_error_message(open_page: OpenPage) -> None:
    at = open_page()
    generate(at, "please raise", model=FLAKY)
    rerun_until(at, finished, "the failed job")
    errors = [e.value for e in at.error]
    assert any("the flaky pipeline raised on purpose" in e for e in errors), errors
    assert not at.tabs[0].image


def test_a_refused_request_shows_the_apis_message(open_page: OpenPage) -> None:
    at = open_page()
    # The form allows what the model allows; the API still judges the size grid.
    at.text_area(key="prompt").input("a square")
    at.number_input(key="width").set_value(60)
    at.button(key="generate").click().run()
    errors = [e.value for e in at.error]
    assert any(
        "the API refused the request (HTTP 422)" in e and "multiple of 8" in e for e in errors
    ), errors


# --- an API that is down, then back -------------------------------------------------


def test_an_unreachable_api_says_so_and_the_page_recovers(
    open_page: OpenPage, e2e_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    at = open_page(api_url=url)
    assert [e.value for e in at.error] == [
        f"cannot reach the darkroom API at {url}; is it running? "
        "(`darkroom up` starts one; the page reconnects by itself when it answers)"
    ]
    assert not at.text_area  # no form without the API's models
    assert not at.tabs

    server = start_api(e2e_env, tmp_path / "api.log", port)
    try:
        rerun_until(at, lambda page: page.text_area and not page.error, "the form again")
        assert at.selectbox(key="model").value == "tiny-sd"
        assert [tab.label for tab in at.tabs] == ["Generate", "History", "System"]
    finally:
        server.stop()


# --- history ------------------------------------------------------------------------


def test_history_opens_a_job_and_runs_it_again(open_page: OpenPage, api: DarkroomClient) -> None:
    at = open_page()
    prompt = f"history lighthouse {uuid.uuid4().hex[:6]}"
    first = generate(at, prompt, seed=77)
    rerun_until(at, finished, "the finished job")

    history = at.tabs[1]
    assert history.label == "History"
    card_buttons = [b.key for b in history.button if (b.key or "").startswith("open:")]
    assert f"open:{first}" in card_buttons
    assert history.image  # thumbnails of the finished jobs

    at.button(key=f"open:{first}").click().run()
    history = at.tabs[1]
    assert f"Job {first}" in [s.value for s in history.subheader]
    assert [c for image in history.image for c in image.captions if c.startswith("seed 77 ")]

    at.button(key="run_again").click().run()
    again = at.session_state["current_job"]
    assert again != first
    assert at.session_state["tab"] == "Generate"  # the page moved to the new job
    assert f"Queued again as job {again}." in [s.value for s in at.success]
    rerun_until(at, finished, "the job run again")
    old, new = api.get(first), api.get(again)
    assert new["status"] == "succeeded"
    for field in ("prompt", "seed", "steps", "width", "height", "guidance_scale", "num_images"):
        assert new["params"][field] == old["params"][field], field


# --- system -------------------------------------------------------------------------


def test_the_system_view_shows_workers_models_queues_and_problems(
    open_page: OpenPage,
    api: DarkroomClient,
    workers: object,
    e2e_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A job for a model no worker serves (accepted because it is autoscaled, as
    # through an API with AUTOSCALED_MODELS): /status reports it as a problem.
    for name, value in {**e2e_env, "AUTOSCALED_MODELS": "tiny-batch"}.items():
        monkeypatch.setenv(name, value)
    with TestClient(create_app(Settings(_env_file=None))) as autoscaling:  # type: ignore[call-arg]
        stuck = submit(autoscaling, prompt="nobody serves me", model="tiny-batch")
    try:
        at = open_page()
        problem = re.compile(r"model tiny-batch: \d+ queued job\(s\) and no live worker serves it")
        rerun_until(
            at,
            lambda page: any(problem.match(w.value) for w in page.tabs[2].warning),
            "the stuck model's problem",
        )
        system = at.tabs[2]
        # In the order the tab lays them out.
        names = ("workers_table", "models_table", "queues_table")
        tables = {name: frame.value for name, frame in zip(names, system.dataframe, strict=True)}
        assert {"e2e-tiny@test", "e2e-flaky@test"} <= set(tables["workers_table"]["worker"])
        served = tables["workers_table"].set_index("worker")["model"]
        assert (served["e2e-tiny@test"], served["e2e-flaky@test"]) == ("tiny-sd", FLAKY)
        models = tables["models_table"].set_index("model")
        assert models.loc["tiny-sd", "workers"] >= 1
        assert models.loc["tiny-batch", "queued jobs"] >= 1
        assert "queue" in tables["queues_table"].columns
    finally:
        api.cancel(stuck["id"])


# --- API keys and rate limits -------------------------------------------------------


def test_a_key_typed_in_the_sidebar_opens_an_api_with_keys(
    open_page: OpenPage, keyed_api: ApiProcess
) -> None:
    at = open_page(api_url=keyed_api.url)
    errors = [e.value for e in at.error]
    assert any(
        e.startswith("the API needs a valid API key: enter it in the sidebar") for e in errors
    )
    assert not at.text_area

    at.text_input(key="api_key").input(KEY_A).run()
    assert not at.error
    job_id = generate(at, "a keyed lighthouse")
    rerun_until(at, finished, "the finished job")
    assert at.image
    with DarkroomClient(keyed_api.url, api_key=KEY_A) as owner:
        assert owner.get(job_id)["status"] == "succeeded"


def test_a_rate_limited_submit_says_when_to_retry(
    open_page: OpenPage, keyed_api: ApiProcess
) -> None:
    at = open_page(api_url=keyed_api.url, api_key=KEY_B)  # the key from the environment
    generate(at, "the one submit this minute")
    at.text_area(key="prompt").input("one too many")
    at.button(key="generate").click().run()
    errors = [e.value for e in at.error]
    assert any(re.match(r"rate limited; retry in \d+ s", e) for e in errors), page_text(at)


def _wait(condition: Callable[[], bool], what: str) -> None:
    wait_until(condition, WAIT_S, POLL_S, what=f"never saw {what}:")
