"""ComfyUI workflows and clients as others ship them, vendored for the tests (each file
notes its source)."""
