"""Refuse oversized request bodies before they are read or parsed."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


class BodySizeLimit:
    """Pure ASGI middleware: 413 on a Content-Length or a streamed body over the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, uploads: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        # Paths whose POST carries a file larger than any job (POST /loras): their own.
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.max_bytes
        if scope.get("method") == "POST":
            limit = self.uploads.get(scope["path"], limit)
        declared = headers.get(b"content-length")
        if declared is None and _bodiless(scope, headers):
            await self.app(scope, receive, send)
            return
        if declared is not None and declared.isdigit():
            # The server holds the body to its declared length: the header suffices.
            if int(declared) > limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # A streamed (chunked) body: read it here, up to the limit. An error raised
        # from inside the app's own body read would reach the client as a 400.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away mid-body: nobody to answer
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


def _bodiless(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """An HTTP/1.x request with neither Content-Length nor Transfer-Encoding has no
    body (RFC 9112, 6.3): a poll need not go through the buffering below."""
    return scope.get("http_version") in {"1.0", "1.1"} and b"transfer-encoding" not in headers


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the buffered body once, then the client's next messages."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped
