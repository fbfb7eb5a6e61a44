"""What the MCP tests share: the official SDK's client, over streamable HTTP or through the
`rag-mcp` stdio bridge, and the JSON a tool result carries."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def connected(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    """An initialized session with the service's /mcp, sending ``key`` as a bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(300, connect=10)) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def bridge_parameters(
    url: str, key: str | None, args: list[str] | None = None
) -> StdioServerParameters:
    """`rag-mcp --url URL` (or ``args``) as a desktop client starts it: the key in RAG_API_KEY."""
    env = {k: v for k, v in os.environ.items() if k != "RAG_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if key:
        env["RAG_API_KEY"] = key
    command = str(Path(sys.executable).parent / "rag-mcp")
    return StdioServerParameters(command=command, args=args or ["--url", url], env=env)


def readme_client_config() -> dict[str, Any]:
    """The desktop client's server entry of the README's JSON block, as a user copies it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```json\n")[1:]]
    (config,) = [json.loads(b) for b in blocks if '"mcpServers"' in b]
    (server,) = config["mcpServers"].values()
    assert isinstance(server, dict)
    return server


@asynccontextmanager
async def bridged(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    """An initialized session with a `rag-mcp` bridge to the service, over its stdio."""
    async with (
        stdio_client(bridge_parameters(url, key)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def run(
    url: str,
    key: str | None,
    use: Callable[[ClientSession], Awaitable[T]],
    *,
    via: Callable[[str, str | None], Any] = connected,
) -> T:
    """``use`` a fresh session (of ``via``), from this thread."""

    async def session() -> T:
        async with via(url, key) as opened:
            return await use(opened)

    return asyncio.run(session())


def call(url: str, key: str | None, tool: str, **arguments: Any) -> CallToolResult:
    return run(url, key, lambda session: session.call_tool(tool, arguments))


def data(result: CallToolResult) -> dict[str, Any]:
    """A successful result's structured content, which its text content repeats as JSON."""
    assert not result.isError, result.content
    assert result.structuredContent is not None
    text = result.content[0]
    assert text.type == "text"
    assert json.loads(text.text) == result.structuredContent
    return result.structuredContent


def error(result: CallToolResult) -> str:
    """A refused call's message."""
    assert result.isError, result.structuredContent
    text = result.content[0]
    assert text.type == "text"
    return text.text
