"""The System tab: what `GET /status` reports, laid out for an operator."""

from __future__ import annotations

from typing import Any

import streamlit as st

from darkroom.client import DarkroomClient
from darkroom.ui import session


def render(api: DarkroomClient) -> None:
    st.button("Refresh", key="system_refresh")  # a click reruns the page: a fresh status
    status = session.ask(api, DarkroomClient.status)
    if status is None:
        return
    _overall(status)
    st.subheader("Workers")
    if status.get("workers"):
        st.dataframe(worker_rows(status["workers"]), hide_index=True, key="workers_table")
    else:
        st.caption("No live workers.")
    st.subheader("Models")
    st.dataframe(model_rows(status.get("models", {})), hide_index=True, key="models_table")
    st.subheader("Queues")
    st.dataframe(queue_rows(status.get("queues", {})), hide_index=True, key="queues_table")


def _overall(status: dict[str, Any]) -> None:
    state = status["status"]
    show = {"ok": st.success, "degraded": st.warning}.get(state, st.error)
    show(f"Service status: {state}")
    redis = status.get("redis") or {}
    if not redis.get("reachable", True):
        st.error(f"The API cannot reach Redis: {redis.get('error')}")
    for problem in status.get("problems", []):
        st.warning(problem)
    if not status.get("problems"):
        st.caption("No problems reported.")


def worker_rows(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "worker": w["name"],
            "state": w["state"],
            "model": w.get("model") or "-",
            # A worker serving several models: each it holds, and where.
            "holds": ", ".join(f"{m} ({t})" for m, t in sorted((w.get("models") or {}).items()))
            or "-",
            "device": w.get("device") or "-",
            "current job": w.get("current_job") or "-",
            "jobs done": w.get("jobs_done", 0),
        }
        for w in workers
    ]


def model_rows(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "model": name,
            "workers": load["workers"],
            "may load it": load.get("loadable", load["workers"]),
            "queued jobs": load["queued"],
        }
        for name, load in sorted(models.items())
    ]


def queue_rows(queues: dict[str, int]) -> list[dict[str, Any]]:
    return [{"queue": name, "waiting messages": depth} for name, depth in sorted(queues.items())]
