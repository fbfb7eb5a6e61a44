"""ASGI middleware: the request-body limit, JSON bodies whatever their content type, and the
request counter. Pure ASGI, so streamed responses and client disconnects pass through untouched.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_TYPE = b"application/json"


def _is_json(content_type: bytes) -> bool:
    main = content_type.split(b";", 1)[0].strip().lower()
    return main == JSON_TYPE or main.endswith(b"+json")


class BodyLimit:
    """413 for a body over ``max_bytes``: at once from Content-Length, else as soon as the bytes
    received pass the limit (nothing past it is read). A body is read as JSON whatever its
    content type says: `curl -d` sends a form type."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (RAG_MAX_REQUEST_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            body = {"error": {"type": "body_too_large", "message": self._too_large()}}
            await _send_json(send, 413, body)
            return
        if scope["method"] == "POST" and not _is_json(headers.get(b"content-type", JSON_TYPE)):
            rest = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"] = [*rest, (b"content-type", JSON_TYPE)]  # in place: see CountRequests
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class CountRequests:
    """``rag_requests_total`` by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            services = getattr(scope["app"].state, "services", None)
            route = scope.get("route")
            if services is not None and route is not None:
                services.metrics.requests.labels(route.path, str(status)).inc()
