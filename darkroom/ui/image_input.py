"""The Generate tab's image-to-image section: the init image, its strength, and the
inpainting mask painted on it.

Outside the Generate form, above it: a file uploader inside a form hands over
its file only when the form is submitted, and what depends on the upload (the
canvas that shows it, the form's text-to-image-only switches) must see it as
soon as it is chosen. Its values are read when Generate is pressed, with the
form's.

The canvas is streamlit-drawable-canvas's (Fabric.js): freehand strokes on a
background image are a browser component, not ours to write.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import streamlit as st
from PIL import Image
from streamlit.runtime.uploaded_file_manager import UploadedFile

from darkroom.ui.form import DEFAULT_STRENGTH, ModelLimits
from darkroom.ui.mask import DEFAULT_BRUSH_PX, MAX_BRUSH_PX, canvas_size, mask_from_strokes

# Half-transparent magenta: the image shows through, and it stands out on most.
# Only where the strokes are counts (their alpha), not their colour.
MASK_COLOUR = "rgba(255, 0, 255, 0.5)"


@dataclass(frozen=True)
class InitImage:
    data: bytes  # the file as uploaded
    strength: float
    # PNG at the upload's size, white where to repaint; None: image-to-image.
    mask: bytes | None = None


def render(model: ModelLimits) -> InitImage | None:
    """The section (for models that do image-to-image); the image once one is uploaded."""
    if not model.supports_i2i:
        return None
    title = "Image to image and inpainting" if model.supports_inpainting else "Image to image"
    with st.expander(title):
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
            help="How far from the init image (where painted, when inpainting): "
            "0 keeps it, 1 ignores it.",
        )
        mask = None
        if upload is not None and model.supports_inpainting:
            mask = _mask_canvas(upload)
    if upload is None:
        return None
    return InitImage(upload.getvalue(), strength, mask)


def _mask_canvas(upload: UploadedFile) -> bytes | None:
    """The upload on a canvas to paint the area to repaint on; the mask, once painted."""
    # Imported here: the component registers itself on import, which needs the
    # running page's Streamlit runtime (its scan of components' manifests); at the
    # top, importing this module anywhere else (a test, a tool) would fail.
    from streamlit_drawable_canvas import st_canvas

    try:
        image = Image.open(io.BytesIO(upload.getvalue()))
        image.load()
    except (OSError, Image.DecompressionBombError):
        st.warning("This file does not read as an image; the API will say why.")
        return None
    width, height = canvas_size(image.size)
    brush = st.slider("Brush", 1, MAX_BRUSH_PX, DEFAULT_BRUSH_PX, key="mask_brush")
    result = st_canvas(
        stroke_width=brush,
        stroke_color=MASK_COLOUR,
        # At the canvas's size: the page sends it to the browser on every rerun.
        background_image=image.convert("RGB").resize((width, height)),
        drawing_mode="freedraw",
        width=width,
        height=height,
        return_image_data=True,
        # Per upload: another image starts with a clean canvas.
        key=f"mask_canvas:{upload.file_id}",
    )
    mask = mask_from_strokes(result.image_data, image.size)
    if mask is None:
        st.caption(
            "Paint over what to repaint (inpainting). Nothing painted: image-to-image "
            "of the whole image."
        )
    else:
        st.caption("Inpainting: only the painted area is repainted, the rest kept exactly.")
    return mask
