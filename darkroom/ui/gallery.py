"""A finished job on the page: its images with seeds and downloads, or why it has none."""

from __future__ import annotations

from typing import Any

import streamlit as st

from darkroom.client import ApiError, DarkroomClient
from darkroom.ui import session
from darkroom.ui.messages import (
    error_text,
    escape_markdown,
    image_caption,
    optimized_prompt,
    params_line,
)

# Two a row: the gallery shares the page with the form.
COLUMNS = 2
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def show_job(api: DarkroomClient, job: dict[str, Any], place: str) -> None:
    """A terminal job: the gallery, its error, or that it was canceled.

    `place` keeps widget keys apart when one job shows on two tabs.
    """
    st.markdown(f"**Prompt:** {escape_markdown(job['params']['prompt'])}")
    used = optimized_prompt(job)
    if used is not None:
        st.info(f"Prompt used (rewritten by prompt optimisation): {used}")
    if job["status"] == "failed":
        st.error(error_text(job))
    elif job["status"] == "canceled":
        st.warning("The job was canceled.")
    elif job["images"]:
        _gallery(api, job, place)
    st.caption(params_line(job))
    with st.expander("All parameters"):
        st.json({"id": job["id"], "model": job["model"], **job["params"]})


def _gallery(api: DarkroomClient, job: dict[str, Any], place: str) -> None:
    images = job["images"]
    columns = st.columns(min(len(images), COLUMNS))
    for index, image in enumerate(images):
        with columns[index % COLUMNS]:
            try:
                data = session.image_bytes(api, job["id"], index, image["url"])
            except ApiError as exc:
                session.show_api_error(exc, api)
                continue
            st.image(data, caption=image_caption(image), width="stretch")
            extension = EXTENSIONS.get(image["content_type"], "png")
            st.download_button(
                "Download",
                data,
                file_name=f"darkroom-{job['id'][:8]}-{image['seed']}.{extension}",
                mime=image["content_type"],
                key=f"download:{place}:{job['id']}:{index}",
                on_click="ignore",
            )


def thumbnail(api: DarkroomClient, job: dict[str, Any]) -> bytes | None:
    """The job's first image (None without one, or when it cannot be fetched)."""
    if not job["images"]:
        return None
    try:
        return session.image_bytes(api, job["id"], 0, job["images"][0]["url"])
    except ApiError:
        # A thumbnail is a nicety: an expired or unreachable image leaves a blank.
        return None
