"""The Generate tab's image-to-image section: the init image and its strength.

Outside the Generate form, above it: a file uploader inside a form hands over
its file only when the form is submitted, and what depends on the upload (the
form's text-to-image-only switches) must see it as soon as it is chosen. Its
values are read when Generate is pressed, with the form's.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from darkroom.ui.form import DEFAULT_STRENGTH, ModelLimits


@dataclass(frozen=True)
class InitImage:
    data: bytes  # the file as uploaded
    strength: float


def render(model: ModelLimits) -> InitImage | None:
    """The section (for models that do image-to-image); the image once one is uploaded."""
    if not model.supports_i2i:
        return None
    with st.expander("Image to image"):
        upload = st.file_uploader(
            "Init image", type=["png", "jpg", "jpeg", "webp"], key="init_image"
        )
        strength = st.slider(
            "Strength",
            0.05,
            1.0,
            DEFAULT_STRENGTH,
            step=0.05,
            key="strength",
            help="How far from the init image: 0 keeps it, 1 ignores it.",
        )
    if upload is None:
        return None
    return InitImage(upload.getvalue(), strength)
