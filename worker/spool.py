"""A worker's images waiting for storage: files in a local directory of its own, up to a budget.

Only a buffer: a job whose images are here stays `running`, claimed by this
worker, until they are stored. If the worker dies, the reaper re-runs the job
elsewhere and the files are worth nothing, so a worker empties its spool as it
starts (a worker restarted under the same name finds its predecessor's there)
and as it exits.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from worker.metrics import SPOOL_BYTES


@dataclass(frozen=True)
class SpooledImage:
    key: str
    path: Path
    size: int
    content_type: str


def spool_dir(base: Path | None, worker_name: str) -> Path:
    """Where `worker_name` spools: a directory of its own under `base` (default
    `darkroom-spool` in the system temp dir), so workers sharing a host never
    touch each other's files."""
    root = base if base is not None else Path(tempfile.gettempdir()) / "darkroom-spool"
    return root / quote(worker_name, safe="@-._")


class Spool:
    """Files under `root`, counted against `max_bytes`: past it the spool is full."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self._used = 0
        self._room = threading.Condition()

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def full(self) -> bool:
        # An empty spool is never full: with a budget of 0 a worker takes no new
        # job while any image waits, and takes jobs again once none does.
        return self._used > 0 and self._used >= self.max_bytes

    def write(self, key: str, data: bytes, content_type: str) -> SpooledImage:
        """Keep `data` (the image stored under `key`) until it is removed; raises OSError."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / quote(key, safe="")
        try:
            path.write_bytes(data)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        with self._room:
            self._set_used(self._used + len(data))
        return SpooledImage(key, path, len(data), content_type)

    def read(self, image: SpooledImage) -> bytes:
        return image.path.read_bytes()

    def remove(self, image: SpooledImage) -> None:
        """The image is stored, or no longer wanted: its room is free again."""
        image.path.unlink(missing_ok=True)
        with self._room:
            self._set_used(self._used - image.size)

    def wait_for_room(self, timeout_s: float) -> bool:
        """True once the spool is not full; False if it still is after `timeout_s`."""
        with self._room:
            return self._room.wait_for(lambda: not self.full, timeout=timeout_s)

    def clear(self) -> None:
        """Remove every file: a predecessor's as the worker starts, what is left as it exits."""
        shutil.rmtree(self.root, ignore_errors=True)
        with self._room:
            self._set_used(0)

    def _set_used(self, used: int) -> None:
        self._used = max(0, used)
        SPOOL_BYTES.set(self._used)
        self._room.notify_all()
