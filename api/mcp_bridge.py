"""`rag-mcp`: the service's MCP tools for clients that speak only stdio (desktop apps). A stdio
MCP server whose tool listing and calls are forwarded to a running service's `/mcp`, with the
key from RAG_API_KEY.

Each forwarded request is an exchange of its own with the service (which keeps no MCP sessions),
so a call the desktop client cancels, or a bridge that is stopped, closes its HTTP stream, and
the service stops the work: an `ask`'s engine request is aborted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from mcp import ClientSession, McpError, types
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

log = logging.getLogger("rag.mcp")
CONNECT_TIMEOUT_S = 10.0
# An ask on a busy CPU engine may take minutes, and the stream is silent until it is answered.
READ_TIMEOUT_S = 600.0


class BridgeError(Exception):
    """The service could not be reached, or refused the bridge itself (its key)."""


def mcp_url(url: str) -> str:
    """The service's MCP endpoint: ``http://host:8000`` and ``http://host:8000/mcp`` alike."""
    url = url.rstrip("/")
    return url if url.endswith("/mcp") else f"{url}/mcp"


def _leaf(exc: BaseException) -> BaseException:
    """The error inside the task groups' wrappings."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class Bridge:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = mcp_url(url)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @asynccontextmanager
    async def remote(self) -> AsyncIterator[tuple[ClientSession, types.InitializeResult]]:
        """An initialized MCP session with the service, for one request, and what it said."""
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        try:
            async with (
                httpx.AsyncClient(headers=self.headers, timeout=timeout) as http,
                streamable_http_client(self.url, http_client=http) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                yield session, await session.initialize()
        except Exception as exc:
            raise self._explained(_leaf(exc)) from exc

    def _explained(self, exc: BaseException) -> BaseException:
        if isinstance(exc, httpx.HTTPStatusError):
            status = exc.response.status_code
            if status == 401:
                return BridgeError(
                    f"the service at {self.url} wants an API key (401): set RAG_API_KEY to a "
                    "key of the service (`rag-keys create NAME --index INDEX`)"
                )
            return BridgeError(f"the service at {self.url} answered HTTP {status}")
        if isinstance(exc, httpx.TransportError):
            return BridgeError(f"cannot reach the service at {self.url} ({exc!r}): is it running?")
        return exc

    async def instructions(self) -> str | None:
        """The service's instructions for models, or None (and a warning) when it is not there."""
        try:
            async with self.remote() as (_, opened):
                return opened.instructions
        except (BridgeError, McpError) as exc:
            log.warning("%s; the bridge runs on and forwards requests once it is back", exc)
            return None


def bridge_server(bridge: Bridge, instructions: str | None = None) -> Server[Any, Any]:
    """A stdio-side MCP server that forwards tool listings and calls to the service."""
    server: Server[Any, Any] = Server("rag-service", instructions=instructions)

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        try:
            async with bridge.remote() as (session, _):
                return (await session.list_tools()).tools
        except BridgeError as exc:
            raise McpError(types.ErrorData(code=types.INTERNAL_ERROR, message=str(exc))) from exc

    # The service validates the arguments and the results (and says what is wrong).
    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        async with bridge.remote() as (session, _):
            return await session.call_tool(name, arguments)

    return server


async def serve(url: str, api_key: str | None) -> None:
    """Serve the bridge on this process's stdin and stdout until the client closes them."""
    bridge = Bridge(url, api_key)
    server = bridge_server(bridge, await bridge.instructions())
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
