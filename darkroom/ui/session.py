"""What one browser session keeps between reruns: its client, its job, fetched images.

Streamlit reruns the page script on every interaction (and the live panel
every second): what must survive a rerun lives in `st.session_state`, under
the names below and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from darkroom.client import ApiError, DarkroomClient
from darkroom.ui.messages import describe_api_error

# The page's tabs, and the session-state name of the one shown (a callback
# sets it to move the page to another tab).
T = TypeVar("T")

TABS = ("Generate", "History", "System")
TAB = "tab"
# Session-state names.
CLIENT = "darkroom_client"
CURRENT_JOB = "current_job"  # the job the Generate tab follows
OPENED_JOB = "opened_job"  # the job opened in History
IMAGES = "image_bytes"
NOTICE = "notice:"  # + a place: a callback's message, shown once by the next run
# Short enough that a dead API leaves the page waiting a few seconds, not
# half a minute; long enough for a busy API on a slow link.
CLIENT_TIMEOUT_S = 10.0
# Image bytes kept per session: a gallery and a page of history thumbnails.
IMAGES_KEPT = 64


def client(api_url: str, api_key: str | None) -> DarkroomClient:
    """The session's client for this URL and key; a new one when either changed."""
    held: tuple[str, str | None, DarkroomClient] | None = st.session_state.get(CLIENT)
    if held is not None and held[:2] == (api_url, api_key):
        return held[2]
    if held is not None:
        held[2].close()
    fresh = DarkroomClient(api_url, api_key=api_key, timeout_s=CLIENT_TIMEOUT_S)
    st.session_state[CLIENT] = (api_url, api_key, fresh)
    return fresh


def image_bytes(api: DarkroomClient, job_id: str, index: int, url: str) -> bytes:
    """An image's bytes, fetched once per session.

    Keyed by job and index, not URL: the API signs fresh URLs on every read.
    """
    kept: dict[tuple[str, int], bytes] = st.session_state.setdefault(IMAGES, {})
    key = (job_id, index)
    if key not in kept:
        kept[key] = api.download(url)
        while len(kept) > IMAGES_KEPT:
            kept.pop(next(iter(kept)))
    return kept[key]


def show_api_error(exc: ApiError, api: DarkroomClient) -> None:
    st.error(describe_api_error(exc, api.base_url))


def ask(api: DarkroomClient, call: Callable[[DarkroomClient], T]) -> T | None:
    """`call(api)`, or None after showing why the API refused it or was away."""
    try:
        return call(api)
    except ApiError as exc:
        show_api_error(exc, api)
        return None


def get(name: str) -> Any:
    return st.session_state.get(name)


def put(name: str, value: Any) -> None:
    st.session_state[name] = value


def notify(place: str, kind: str, text: str) -> None:
    """Leave a message for `place` on the next run (callbacks run before the page is drawn)."""
    st.session_state[NOTICE + place] = (kind, text)


def show_notice(place: str) -> None:
    notice: tuple[str, str] | None = st.session_state.pop(NOTICE + place, None)
    if notice is None:
        return
    kind, text = notice
    {"error": st.error, "warning": st.warning, "success": st.success}.get(kind, st.info)(text)
