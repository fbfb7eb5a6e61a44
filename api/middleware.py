"""ASGI middleware: the request-body limit and the request counter. Pure ASGI, so streamed
responses and client disconnects pass through untouched.
"""

from __future__ import annotations

import json
import re

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_TYPE = b"application/json"
# Uploads (api/ingest_routes.py) are multipart bodies with their own, larger limit.
UPLOAD_PATH = re.compile(r"/v1/indexes/[^/]+/documents")
MULTIPART = b"multipart/form-data"
# Conversations: chat UIs resend the whole conversation, and their tool definitions, with every
# question; /ask's `history` is the same conversation.
CHAT_PATHS = frozenset({"/ask", "/v1/chat/completions", "/v1/completions"})


class BodyLimit:
    """413 for a body over ``max_bytes``: at once from Content-Length, else as soon as the bytes
    received pass the limit (nothing past it is read). A multipart upload of documents may be
    ``upload_max_bytes`` (RAG_MAX_FILE_MB), an ask or a chat completion (a conversation)
    ``chat_max_bytes`` (RAG_CHAT_MAX_REQUEST_BYTES)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, upload_max_bytes: int = 0, chat_max_bytes: int = 0
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes
        self.chat_max_bytes = chat_max_bytes or max_bytes

    def _limit(self, scope: Scope, content_type: bytes) -> tuple[int, str]:
        """The limit of this request's body, and the setting that sets it."""
        if scope["method"] != "POST":
            return self.max_bytes, "RAG_MAX_REQUEST_BYTES"
        if scope["path"] in CHAT_PATHS:
            return self.chat_max_bytes, "RAG_CHAT_MAX_REQUEST_BYTES"
        multipart = content_type.split(b";", 1)[0].strip().lower() == MULTIPART
        if multipart and UPLOAD_PATH.fullmatch(scope["path"]) is not None:
            return max(self.max_bytes, self.upload_max_bytes), "RAG_MAX_FILE_MB"
        return self.max_bytes, "RAG_MAX_REQUEST_BYTES"

    @staticmethod
    def _too_large(limit: int, setting: str) -> str:
        return f"the request body is larger than {limit} bytes ({setting})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit, setting = self._limit(scope, headers.get(b"content-type", JSON_TYPE))
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > limit:
            body = {"error": {"type": "body_too_large", "message": self._too_large(limit, setting)}}
            await _send_json(send, 413, body)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, self._too_large(limit, setting))
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


IN_BAND_STATUS = "rag_in_band_status"


def note_in_band_error(request: Request, status: int) -> None:
    """A stream that has sent its 200 ended with an error event of this status: it is counted
    with that status (503 for `overloaded`), not as a success."""
    setattr(request.state, IN_BAND_STATUS, status)


class CountRequests:
    """``rag_requests_total`` (``rag_probe_requests_total`` for the probes) by route template
    and status: the response's, or that of the error event a stream ended with."""

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
                in_band = scope.get("state", {}).get(IN_BAND_STATUS)
                services.metrics.count_request(route.path, in_band or status)
