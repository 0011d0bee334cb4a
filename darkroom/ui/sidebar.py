"""The sidebar: which API, which key, which model.

Everything else on the page needs what it returns; when the API cannot
answer, the page shows why (and reconnects by itself once it can). Which API
URLs a visitor may choose, and where the server's own key goes, is
`access.PageAccess`'s to say.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from darkroom.client import ApiError, DarkroomClient, allowed_priorities
from darkroom.ui import session
from darkroom.ui.access import PageAccess
from darkroom.ui.form import (
    ModelLimits,
    adapters_for,
    default_model,
    models_from_api,
    offered,
)
from darkroom.ui.messages import describe_api_error, is_transient

# How often a page whose API is down tries again.
RECONNECT_EVERY_S = 3.0
# Widgets whose defaults come from the model: forgotten when the model changes,
# so the new model's defaults (and limits) apply.
MODEL_FIELDS = (
    "width",
    "height",
    "steps",
    "guidance",
    "negative_prompt",
    "strength",
    "loras",
    # Each model type has its own samplers (flux and sd3: Euler only).
    "sampler",
    "scheduler",
    # The hires fix's upscalers (latent ones for SD and SDXL) and steps (max_steps).
    "hires_upscaler",
    "hires_steps",
)


@dataclass(frozen=True)
class Connected:
    api: DarkroomClient
    models: dict[str, ModelLimits]
    model: ModelLimits  # the one picked in the sidebar
    priorities: tuple[str, ...]  # those the caller's key may use, highest first
    # LoRA adapters picked in the sidebar for the model, with their scales.
    loras: tuple[tuple[str, float], ...] = ()


def render() -> Connected | None:
    """The sidebar; None (after saying why in the main area) when the API did not answer
    or may not be called."""
    access = PageAccess.from_environment()
    with st.sidebar:
        st.header("darkroom")
        st.caption("Diffusion image generation on a queue of GPU workers.")
        api_url, typed_key = _connection_fields(access)
    refusal = access.refusal(api_url)
    if refusal is not None:
        st.error(refusal)  # and nothing dialled
        return None
    api = session.client(api_url, access.key_for(api_url, typed_key))
    try:
        answer = api.models()
        priorities = allowed_priorities(api)
    except ApiError as exc:
        st.error(describe_api_error(exc, api.base_url))
        if is_transient(exc):
            st.fragment(_reconnect, run_every=RECONNECT_EVERY_S)(api)
        return None
    models = models_from_api(answer)
    with st.sidebar:
        model = _pick_model(models, default_model(answer))
        loras = _pick_loras(api, model)
    return Connected(api, models, model, priorities, loras)


def _connection_fields(access: PageAccess) -> tuple[str, str | None]:
    """The API URL and the key the visitor typed (None: none typed).

    The server's key is never a widget's value: every widget value travels to
    the browser. The field only says that one is set.
    """
    api_url = st.text_input(
        "API URL", value=access.configured_url, key="api_url", help=_url_help(access)
    ).strip()
    server_key_set = bool(access.server_key)
    typed_key = st.text_input(
        "API key",
        key="api_key",
        type="password",
        placeholder="set on the server" if server_key_set else "",
        help=(
            f"This page's server holds a key for {access.configured_url}; a key typed "
            "here replaces it for your session only."
            if server_key_set
            else "Needed when the API has keys on (API_KEYS); sent as a Bearer token."
        ),
    ).strip()
    return api_url, typed_key or None


def _url_help(access: PageAccess) -> str:
    if access.any_url:
        return "Any http(s) URL: this page's operator allows them all."
    return "The URLs this page may call: " + ", ".join(
        [access.configured_url, *access.allowed_urls]
    )


def _pick_model(models: dict[str, ModelLimits], default: str) -> ModelLimits:
    names = offered(models)
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


def _pick_loras(api: DarkroomClient, model: ModelLimits) -> tuple[tuple[str, float], ...]:
    """Adapters for the model, each with a scale slider (outside the form: picking one
    shows its slider at once)."""
    try:
        available = adapters_for(model, api.loras())
    except ApiError:
        return ()  # an API without adapters: nothing to pick
    if not available:
        return ()
    defaults = {lora["name"]: float(lora.get("scale", 1.0)) for lora in available}
    picked = st.multiselect(
        "LoRA adapters",
        list(defaults),
        key="loras",
        help="Styles, characters, products on top of the model (GET /loras); "
        f"at most {model.max_loras} at once.",
        max_selections=model.max_loras or None,
    )
    return tuple(
        (
            name,
            st.slider(f"{name} scale", -2.0, 2.0, defaults[name], 0.05, key=f"lora_scale_{name}"),
        )
        for name in picked
    )


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
