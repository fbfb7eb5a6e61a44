"""Runs inside the managed vLLM server: every route but ``/health`` needs the service's key.

The engine is started with this folder on its ``PYTHONPATH`` and ``--middleware
engine_key.RequireEngineKey``; the key comes in ``VLLM_API_KEY`` (the environment, not the
command line another user's ``ps`` shows). vLLM's own key check (``--api-key``, the same
variable) guards only ``/v1/...``: ``/tokenize``, ``/metrics``, ``/invocations`` (which answers
chat completions) and the admin routes would stay open to any local user. So this check guards
everything but the liveness probe, in constant time, before the request reaches vLLM.

The standard library only: it is imported by the engine's interpreter, not the service's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

KEY_ENV = "VLLM_API_KEY"
OPEN_PATHS = frozenset({"/health"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REFUSAL = json.dumps(
    {
        "error": {
            "type": "unauthenticated",
            "message": "this engine serves its rag service only: send its key as "
            "'Authorization: Bearer <key>'",
        }
    }
).encode()


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class RequireEngineKey:
    def __init__(self, app: ASGIApp) -> None:
        key = os.environ.get(KEY_ENV, "")
        if not key:
            raise RuntimeError(f"{KEY_ENV} is not set: the engine would take requests unkeyed")
        self.app = app
        self._digest = _digest(key.encode())

    def _allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name.lower() == b"authorization":
                scheme, _, presented = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    return hmac.compare_digest(_digest(presented.strip()), self._digest)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self._allowed(scope["headers"]):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(REFUSAL)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": REFUSAL})
