"""Headers around every request: the Host a request names must be one this service answers to
(RAG_ALLOWED_HOSTS), and every response carries the browser security headers.

The Host check is what keeps a keyless service on localhost out of reach of DNS rebinding: a
page on another site whose name is made to resolve to 127.0.0.1 still sends its own name as
Host. A request without Host (HTTP/1.0) comes from no browser and passes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}

# An API response is data, never a page: nothing on it may load or frame anything. Pages (the
# playground, /docs) set their own policy.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _bracketed(host: str) -> str:
    """IPv6 literals are written in brackets in a Host header."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def default_allowed_hosts(bound_host: str) -> list[str]:
    """The loopback names, and the address the service is bound to when it is a specific one."""
    names = list(LOOPBACK_NAMES)
    bound = _bracketed(bound_host.strip().lower())
    if bound not in ANY_ADDRESS and bound not in names:
        names.append(bound)
    return names


def host_name(header: str) -> str:
    """The host of a Host header, without its port: `[::1]:8000` -> `[::1]`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class AllowedHosts:
    """400 `invalid_host` for a request whose Host is not in the list (``*`` allows any; a
    ``*.example.com`` entry allows that domain's names)."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        listed = [_bracketed(h.strip().lower()) for h in hosts if h.strip()]
        self.any = "*" in listed
        self.names = {h for h in listed if not h.startswith("*.")}
        self.domains = tuple(h[1:] for h in listed if h.startswith("*."))

    def allows(self, header: str) -> bool:
        name = host_name(header)
        return self.any or name in self.names or name.endswith(self.domains)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any:
            hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
            refused = [host for host in hosts if not self.allows(host)]
            if refused:  # every Host header must be one (a second one is no way round)
                await _refuse_host(send, refused[0])
                return
        await self.app(scope, receive, send)


async def _refuse_host(send: Send, host: str) -> None:
    message = (
        f"the Host {host[:100]!r} is not one this service answers to: add it to "
        "RAG_ALLOWED_HOSTS (comma-separated names; '*' for any)"
    )
    data = json.dumps({"error": {"type": "invalid_host", "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class SecurityHeaders:
    """nosniff, no referrer, no framing on every response, and a Content-Security-Policy that
    loads nothing on every response that does not set its own (pages do)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if b"content-security-policy" not in names:
                    headers.append(
                        (b"content-security-policy", API_CONTENT_SECURITY_POLICY.encode())
                    )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
