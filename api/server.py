"""How `rag-api` serves HTTP: uvicorn's h11 protocol with a deadline for request headers and a
cap on open connections.

uvicorn closes an idle connection only after a response (keep-alive); a connection that sends
nothing, or half a request's headers, stays open for ever, and so do a thousand of them. Here a
connection must send its request's headers within RAG_HEADER_TIMEOUT_S of its first byte (of the
connection, for the first request); otherwise it gets a 408 (nothing, if it sent nothing) and is
closed. Past RAG_MAX_CONNECTIONS open connections a request gets 503 with Retry-After, and a new
connection has a second to send its headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from rag.config import Settings

log = logging.getLogger("rag.api")

KEEP_ALIVE_S = 5  # uvicorn's default, stated: an idle connection after a response is closed
CROWDED_HEADER_TIMEOUT_S = 1.0  # for a connection opened past the cap
RETRY_AFTER_S = 1


def _raw_response(status: int, reason: str, kind: str, message: str, retry: bool) -> bytes:
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *([f"retry-after: {RETRY_AFTER_S}"] if retry else []),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


TOO_SLOW = _raw_response(
    408,
    "Request Timeout",
    "request_timeout",
    "the request's headers did not arrive in time (RAG_HEADER_TIMEOUT_S)",
    retry=False,
)
CROWDED_MESSAGE = "the service has too many open connections (RAG_MAX_CONNECTIONS); retry shortly"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the header deadline and the connection cap. The settings
    are class attributes: `guarded_protocol` makes the class uvicorn is given."""

    header_timeout_s: float = 10.0
    max_connections: int | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_deadline: asyncio.TimerHandle | None = None
        self.app = self._unless_crowded(self.app)

    def _crowded(self) -> bool:
        return self.max_connections is not None and len(self.connections) > self.max_connections

    def _unless_crowded(self, app: Any) -> Any:
        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and self._crowded():
                body = json.dumps({"error": {"type": "overloaded", "message": CROWDED_MESSAGE}})
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(RETRY_AFTER_S).encode()),
                    (b"connection", b"close"),
                ]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body.encode()})
                return
            await app(scope, receive, send)

        return guarded

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        timeout = CROWDED_HEADER_TIMEOUT_S if self._crowded() else self.header_timeout_s
        self._header_deadline = self.loop.call_later(
            min(timeout, self.header_timeout_s), self._headers_too_slow
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the app has it now
            self._disarm()
        elif self._header_deadline is None and not self.transport.is_closing():
            # The first bytes of a next request on a kept-alive connection.
            self._header_deadline = self.loop.call_later(
                self.header_timeout_s, self._headers_too_slow
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        pending, _ = self.conn.trailing_data
        if pending:  # part of a request came: say why it is dropped
            self.transport.write(TOO_SLOW)
        log.debug("closed a connection that sent no complete request headers in time")
        self.transport.close()


def guarded_protocol(header_timeout_s: float, max_connections: int | None) -> type[H11Protocol]:
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections},
    )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the service (`uvicorn.run(app, **server_options(settings))`)."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "http": guarded_protocol(settings.header_timeout_s, settings.max_connections),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_graceful_shutdown": 10,
    }
