"""The webhook signing secret `darkroom up` makes when none is set, kept in a private file.

A log is no place for a secret (it is copied, shipped and kept by whoever
collects it), so the log says where the secret is, and the file is readable
by its owner alone.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

# Enough entropy for an HMAC key (Standard Webhooks suggests 24 to 64 bytes).
SECRET_BYTES = 24
FILE_MODE = 0o600


def new_secret() -> str:
    """A fresh `whsec_<base64>` secret (the format WEBHOOK_SECRET takes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def save_secret(path: Path, secret: str) -> Path:
    """Write `secret` to `path`, mode 0600, and return its absolute path.

    The mode is set before a byte is written, also on a file left by an earlier
    run (which keeps its old mode when opened); a symlink is refused rather
    than followed to wherever it points.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), FILE_MODE)
        file.write(secret + "\n")
    return path.resolve()
