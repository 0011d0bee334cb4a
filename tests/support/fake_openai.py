"""A local HTTP server speaking OpenAI's chat completions protocol (OpenAI is out of reach)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    """Answers POST /v1/chat/completions; records every request it got.

    It translates one known Korean prompt, and otherwise prefixes the prompt
    with "optimized:". Set `fail_with` to an HTTP status to make it fail;
    `max_in_flight` is the most requests it held at once.
    `hold_until_in_flight = N` holds every answer until N requests are in flight
    together (for at most `hold_timeout_s`): a test of concurrency then waits for
    the overlap itself rather than hoping a delay was long enough.
    """

    TRANSLATIONS = {"창가에 앉은 고양이": "a cat sitting on a windowsill"}

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        self.max_in_flight = 0
        self.hold_until_in_flight = 0
        self.hold_timeout_s = 60.0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._overlap = threading.Condition(self._lock)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()

    def answer(self, body: dict[str, Any]) -> str:
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if "translate" in system and user in self.TRANSLATIONS:
            return self.TRANSLATIONS[user]
        return f"optimized: {user}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                with fake._overlap:
                    fake._in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
                    fake._overlap.notify_all()
                    # Latched on the most ever in flight: the first request released
                    # lowers the count before the others wake, and they must not
                    # then wait out the whole timeout.
                    fake._overlap.wait_for(
                        lambda: fake.max_in_flight >= fake.hold_until_in_flight,
                        timeout=fake.hold_timeout_s,
                    )
                try:
                    self._answer(body)
                finally:
                    with fake._lock:
                        fake._in_flight -= 1

            def _answer(self, body: dict[str, Any]) -> None:
                if fake.fail_with is not None:
                    self._send(fake.fail_with, {"error": {"message": "boom", "type": "server"}})
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": fake.answer(body)},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
