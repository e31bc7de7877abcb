"""Request limits of the HTTP service: the default bounds and the ASGI middleware that caps the request body."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException

MAX_IMAGES = 256
MAX_IMAGE_BYTES = 16 * 1024 * 1024
#: Whole request body; base64 JSON is 4/3 of the image bytes, so this fits about 48 MiB of images.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Seconds a request may spend decoding and scoring before it is answered 503.
REQUEST_TIMEOUT_S = 120.0
#: Database ids and sequence numbers are 64-bit; a larger number in a URL is refused (422) before any query.
MAX_ID = 2**63 - 1


class BodyTooLarge(HTTPException):
    """Raised from inside ``receive`` so that form and JSON parsing stop reading at the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the {limit}-byte limit (see --max-body-bytes)")


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` by Content-Length, and stop chunked ones at the limit.

    Counting in ``receive`` (not only trusting the header) is what bounds memory for chunked uploads.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await _send_json(send, 413, BodyTooLarge(self.max_bytes).detail)
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if not started:
                await _send_json(send, 413, e.detail)


async def _send_json(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
