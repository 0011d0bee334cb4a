"""The Generate tab: the form, then the job it queued, live until it finishes."""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from darkroom.client import ApiError, DarkroomClient
from darkroom.ui import gallery, generate_form, image_input, session
from darkroom.ui.form import FormValues, request_body
from darkroom.ui.messages import describe_api_error, escape_markdown, short_prompt
from darkroom.ui.progress import is_terminal, queued_text, running_text
from darkroom.ui.sidebar import Connected

# How often the live panel asks the API about the job it follows: one small
# GET per second per open page.
POLL_EVERY_S = 1.0
PLACE = "generate"
# Why the last Generate was refused (a 429, a 422), in the session: shown on
# every run until the next submit, so a rerun (the previous job finishing, a
# poll tick) never wipes it before it was read.
SUBMIT_REFUSED = "submit_refused"


def render(connected: Connected) -> None:
    """The form on the left, the job it queued on the right (as A1111 and Replicate lay it out)."""
    session.show_notice(PLACE)
    form_column, result_column = st.columns([5, 6], gap="large")
    with form_column:
        init_image = image_input.render(connected.model)
        values = generate_form.render(connected.model, connected.priorities, init_image)
    with result_column:
        if values is not None:
            _submit(connected, dataclasses.replace(values, loras=connected.loras))
        refused = session.get(SUBMIT_REFUSED)
        if refused:
            st.error(refused)
        job_id = session.get(session.CURRENT_JOB)
        if job_id:
            follow(connected.api, job_id)
        else:
            st.caption("Images show here once a job finishes.")


def _submit(connected: Connected, values: FormValues) -> None:
    if not values.prompt.strip():
        st.warning("Write a prompt first.")
        return
    try:
        job = connected.api.submit(request_body(connected.model, values))
    except ApiError as exc:
        session.put(SUBMIT_REFUSED, describe_api_error(exc, connected.api.base_url))
        return
    session.put(SUBMIT_REFUSED, None)
    session.put(session.CURRENT_JOB, job["id"])


def follow(api: DarkroomClient, job_id: str) -> None:
    """The job as it stands: finished, or a panel that updates itself until it is."""
    job = session.ask(api, lambda api: api.get(job_id))
    if job is None:
        return
    if is_terminal(job):
        gallery.show_job(api, job, PLACE)
    else:
        st.fragment(_live, run_every=POLL_EVERY_S)(api, job_id)


def _live(api: DarkroomClient, job_id: str) -> None:
    """Reruns on its own every POLL_EVERY_S; hands over to the whole page once the job ends."""
    job = session.ask(api, lambda api: api.get(job_id))
    if job is None:
        return  # keeps polling: the panel picks up again when the API answers
    if is_terminal(job):
        st.rerun()
    st.markdown(f"**Prompt:** {escape_markdown(short_prompt(job['params']['prompt']))}")
    if job["status"] == "queued":
        st.info(queued_text(job))
        st.progress(0.0, text="waiting for a worker")
    else:
        st.progress(min(1.0, float(job["progress"])), text=running_text(job))
        _preview(api, job)
    cancel = st.button("Cancel", key="cancel", disabled=bool(job.get("cancel_requested")))
    if cancel:
        _cancel(api, job_id)


def _preview(api: DarkroomClient, job: dict[str, Any]) -> None:
    """The image as it forms (the job's latest live preview), under the progress bar.
    Asking every POLL_EVERY_S keeps the job watched, so the worker makes them."""
    latest = session.ask(api, lambda api: api.preview(job["id"]))
    if latest is None:
        return
    width = min(int(job["params"]["width"]), 512)
    st.image(latest.webp, caption=f"preview, step {latest.step}/{latest.steps}", width=width)


def _cancel(api: DarkroomClient, job_id: str) -> None:
    job = session.ask(api, lambda api: api.cancel(job_id))
    if job is None:
        return  # 409: it finished meanwhile; the next poll shows how
    if is_terminal(job):
        st.rerun()
    st.info("Cancel requested: the job stops after its current step.")
