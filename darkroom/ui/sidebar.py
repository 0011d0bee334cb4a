"""The sidebar: which API, which key, which model.

Everything else on the page needs what it returns; when the API cannot
answer, the page shows why (and reconnects by itself once it can).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from darkroom.client import ApiError, DarkroomClient, default_api_key, default_api_url
from darkroom.ui import session
from darkroom.ui.form import ModelLimits, default_model, models_from_api
from darkroom.ui.messages import describe_api_error, is_transient

# How often a page whose API is down tries again.
RECONNECT_EVERY_S = 3.0
# Widgets whose defaults come from the model: forgotten when the model changes,
# so the new model's defaults (and limits) apply.
MODEL_FIELDS = ("width", "height", "steps", "guidance", "negative_prompt", "strength")


@dataclass(frozen=True)
class Connected:
    api: DarkroomClient
    models: dict[str, ModelLimits]
    model: ModelLimits  # the one picked in the sidebar


def render() -> Connected | None:
    """The sidebar; None (after saying why in the main area) when the API did not answer."""
    with st.sidebar:
        st.header("darkroom")
        st.caption("Diffusion image generation on a queue of GPU workers.")
        api_url = st.text_input("API URL", value=default_api_url(), key="api_url").strip()
        api_key = st.text_input(
            "API key",
            value=default_api_key() or "",
            key="api_key",
            type="password",
            help="Needed when the API has keys on (API_KEYS); sent as a Bearer token.",
        ).strip()
    api = session.client(api_url, api_key or None)
    try:
        answer = api.models()
    except ApiError as exc:
        st.error(describe_api_error(exc, api.base_url))
        if is_transient(exc):
            st.fragment(_reconnect, run_every=RECONNECT_EVERY_S)(api)
        return None
    models = models_from_api(answer)
    with st.sidebar:
        model = _pick_model(models, default_model(answer))
    return Connected(api, models, model)


def _pick_model(models: dict[str, ModelLimits], default: str) -> ModelLimits:
    names = sorted(models)
    name = st.selectbox(
        "Model",
        names,
        index=names.index(default) if default in names else 0,
        key="model",
        on_change=_forget_model_fields,
    )
    model = models[name]
    st.caption(model.description or "No description in the registry.")
    st.caption(model.summary())
    return model


def _forget_model_fields() -> None:
    for name in MODEL_FIELDS:
        st.session_state.pop(name, None)


def _reconnect(api: DarkroomClient) -> None:
    """Try the API again; once it answers, draw the whole page again."""
    try:
        api.models()
    except ApiError:
        st.caption(f"Trying again every {RECONNECT_EVERY_S:g} s…")
        return
    st.rerun()
