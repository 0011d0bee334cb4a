"""Webhook receivers on 127.0.0.1 that hold a delivery: one trickles, one never answers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server:
    """A ThreadingHTTPServer on a free loopback port whose POSTs `answer` handles."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]):
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.webhook_ids: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(answer))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def calls(self) -> int:
        with self._lock:
            return len(self.webhook_ids)

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> type:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.webhook_ids.append(self.headers.get("webhook-id", ""))
                answer(self)

        return Handler


class TrickleReceiver(_Server):
    """Answers 200 with `Content-Length: 1000000`, then one byte every `interval_s`
    (well inside any per-read timeout) until the client hangs up."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        super().__init__(self._trickle)

    def _trickle(self, request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Length", "1000000")
        request.end_headers()
        request.close_connection = True
        try:
            while not self.stopping.wait(self.interval_s):
                request.wfile.write(b"x")
                request.wfile.flush()
        except OSError:
            pass  # the client hung up: what a deadline does


class SilentReceiver(_Server):
    """Never answers until `release()`: then it hangs up on every call it held and
    answers 200 to every call after."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self._held = 0
        super().__init__(self._hold_or_answer)

    def held(self) -> int:
        """Calls held unanswered so far."""
        with self._lock:
            return self._held

    def release(self) -> None:
        self.released.set()

    def _hold_or_answer(self, request: BaseHTTPRequestHandler) -> None:
        request.close_connection = True
        if self.released.is_set():
            request.send_response(200)
            request.send_header("Content-Length", "2")
            request.end_headers()
            request.wfile.write(b"ok")
            return
        with self._lock:
            self._held += 1
        self.released.wait()
        # Hang up without a word: the delivery that waited fails.

    def stop(self) -> None:
        self.released.set()
        super().stop()
