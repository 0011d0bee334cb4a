"""Local images expire with their job records."""

import os
import time
from pathlib import Path

from shared.storage import LocalStorage


def test_prune_removes_only_images_older_than_the_retention(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://x")
    storage.put("jobs/old/0.png", b"old", "image/png")
    storage.put("jobs/new/0.png", b"new", "image/png")
    day_ago = time.time() - 25 * 3600
    os.utime(storage.path("jobs/old/0.png"), (day_ago, day_ago))

    assert storage.prune(24 * 3600) == 1

    assert not storage.path("jobs/old/0.png").exists()
    assert storage.path("jobs/new/0.png").read_bytes() == b"new"


def test_prune_keeps_the_adapters_keys_brought(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://x")
    storage.put("loras/key-a/style.safetensors", b"weights", "application/octet-stream")
    day_ago = time.time() - 25 * 3600
    os.utime(storage.path("loras/key-a/style.safetensors"), (day_ago, day_ago))

    assert storage.prune(24 * 3600) == 0
    assert storage.get("loras/key-a/style.safetensors") == b"weights"
