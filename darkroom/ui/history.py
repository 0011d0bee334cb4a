"""The History tab: the caller's recent jobs as thumbnails; open one, run it again."""

from __future__ import annotations

from typing import Any

import streamlit as st

from darkroom.client import ApiError, DarkroomClient
from darkroom.ui import gallery, session
from darkroom.ui.form import rerun_body
from darkroom.ui.messages import describe_api_error, escape_markdown, job_label, short_prompt
from darkroom.ui.progress import is_terminal, status_text

PLACE = "history"
# GET /jobs returns the caller's jobs newest first; one screen of them.
RECENT_JOBS = 12
COLUMNS = 4
THUMBNAIL_PX = 160
CARD_PROMPT_CHARS = 60


def render(api: DarkroomClient) -> None:
    session.show_notice(PLACE)
    st.button("Refresh", key="history_refresh")  # a click reruns the page: fresh jobs
    jobs = session.ask(api, lambda api: api.list_jobs(limit=RECENT_JOBS))
    if jobs is None:
        return
    if not jobs:
        st.caption("No jobs yet: the jobs you generate show here.")
        return
    for start in range(0, len(jobs), COLUMNS):
        for column, job in zip(st.columns(COLUMNS), jobs[start : start + COLUMNS], strict=False):
            with column:
                _card(api, job)
    opened = session.get(session.OPENED_JOB)
    if opened:
        _opened(api, opened)


def _card(api: DarkroomClient, job: dict[str, Any]) -> None:
    with st.container(border=True):
        picture = gallery.thumbnail(api, job)
        if picture is not None:
            st.image(picture, width=THUMBNAIL_PX)
        st.caption(job_label(job))
        st.markdown(escape_markdown(short_prompt(job["params"]["prompt"], CARD_PROMPT_CHARS)))
        st.button(
            "Open",
            key=f"open:{job['id']}",
            on_click=session.put,
            args=(session.OPENED_JOB, job["id"]),
        )


def _opened(api: DarkroomClient, job_id: str) -> None:
    st.divider()
    st.subheader(f"Job {job_id}")
    job = session.ask(api, lambda api: api.get(job_id))
    if job is None:
        return
    if is_terminal(job):
        gallery.show_job(api, job, PLACE)
    else:
        st.info(status_text(job))
    body = rerun_body(job)
    if body is None:
        st.caption(
            "An image-to-image or inpainting job: its input image is not kept, "
            "so it cannot run again."
        )
        return
    st.button(
        "Run again",
        key="run_again",
        help="Submit the same parameters and seed again",
        on_click=_run_again,
        args=(api, body),
    )


def _run_again(api: DarkroomClient, body: dict[str, Any]) -> None:
    """A callback: it runs before the page is drawn, so it may switch the tab."""
    try:
        job = api.submit(body)
    except ApiError as exc:
        session.notify(PLACE, "error", describe_api_error(exc, api.base_url))
        return
    session.put(session.CURRENT_JOB, job["id"])
    st.session_state[session.TAB] = session.TABS[0]
    session.notify("generate", "success", f"Queued again as job {job['id']}.")
