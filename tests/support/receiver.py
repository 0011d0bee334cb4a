"""A real HTTP webhook receiver on localhost whose answers tests script per path."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.polling import wait_until


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered_at: float = 0.0


@dataclass
class Script:
    """Answers for one path: `statuses` in order (the last repeats), optional delay."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str, script: Script | None = None) -> str:
        self.scripts[path] = script or Script()
        return self.base_url + path

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, timeout_s: float = 60) -> list[Received]:
        def answered() -> list[Received] | None:
            got = self.at(path)
            return got if len(got) >= count and all(r.answered_at for r in got[:count]) else None

        return wait_until(
            answered, timeout_s, 0.02, what=lambda: f"{path}: {len(self.at(path))} of {count} calls"
        )

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got = Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
                with receiver._lock:
                    receiver.received.append(got)
                    calls = sum(1 for r in receiver.received if r.path == self.path)
                script = receiver.scripts.get(self.path, Script())
                time.sleep(script.delay_s)
                status = script.statuses[min(calls, len(script.statuses)) - 1]
                self.send_response(status)
                for name, value in script.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                got.answered_at = time.time()

        return Handler
