"""The MCP server at /mcp and the `rag-mcp` stdio bridge, through the official SDK's client, on a
real service over a real index (the answers themselves, which need the engine: test_mcp_ask.py).

Keys as for /ask: none gets 401 before any MCP session starts, a key of another index is refused
in the tool's result, and a key over its rate is told when to come back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from mcp import ClientSession
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from api.app import create_app
from rag.config import Settings
from rag.embed import Embedder
from rag.guard import KeyStore
from tests.mcp_client import (
    bridge_parameters,
    bridged,
    call,
    data,
    error,
    readme_client_config,
    run,
)
from tests.service import RunningService, free_port, index_two_teams

TOOLS = {"search", "ask", "list_indexes", "list_documents", "read_passages"}
ZEPPELIN = "What does the zeppelin fleet expansion depend on?"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[RunningService, dict[str, str]]]:
    """Two teams' indexes, a key for each, one for all and a slow one; no engine where the
    service looks."""
    data_dir = index_two_teams(tmp_path_factory.mktemp("mcp"), embedder)
    keys = KeyStore(data_dir / "keys.json")
    issued = {
        "a": keys.create("team-a-agent", ["team-a"]),
        "b": keys.create("team-b-agent", ["team-b"]),
        "all": keys.create("librarian", all_indexes=True),
        "slow": keys.create("slow-agent", all_indexes=True, rps=0.05),
    }
    settings = Settings(
        data_dir=data_dir,
        index="team-a",
        llm_url=f"http://127.0.0.1:{free_port()}",
        llm_timeout=5,
    )
    with RunningService(create_app(settings)) as running:
        yield running, issued


def test_the_tools_are_listed_with_what_each_is_for(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    listed = run(service.url, keys["a"], lambda session: session.list_tools())
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == TOOLS
    assert tools["search"].inputSchema["required"] == ["query"]
    assert tools["ask"].inputSchema["required"] == ["question"]
    assert "history" in tools["ask"].inputSchema["properties"]
    assert "path_prefix" in str(tools["search"].inputSchema)  # the filters, as /ask takes them
    for tool in tools.values():
        assert tool.outputSchema is not None
        assert tool.annotations is not None
        assert tool.annotations.readOnlyHint
    # Each says when to use it rather than another.
    search, ask = tools["search"].description or "", tools["ask"].description or ""
    assert "No answer is written" in search
    assert "read_passages" in search
    assert "slower than search" in ask
    assert "chunk_id" in (tools["read_passages"].description or "")


def test_search_returns_passages_with_source_page_heading_score_and_text(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    found = data(call(service.url, keys["a"], "search", query=ZEPPELIN, top_k=3))
    assert found["index"] == "team-a"
    assert found["query"] == ZEPPELIN
    passages = found["passages"]
    assert 1 <= len(passages) <= 3
    best = passages[0]
    assert (best["source"], best["page"]) == ("reports/example-q1.pdf", 2)
    assert "zeppelin" in best["text"].lower()
    assert best["chunk_id"]
    assert best["chunk_index"] is not None
    scores = [p["score"] for p in passages]
    assert scores == sorted(scores, reverse=True)
    headed = data(call(service.url, keys["a"], "search", query="travel budget", top_k=1))
    assert headed["passages"][0]["source"] == "handbook.md"
    assert headed["passages"][0]["heading"][:2] == ["Handbook", "Travel"]


def test_search_filters_narrow_it_to_a_folder(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    found = data(
        call(
            service.url,
            keys["a"],
            "search",
            query="parking spaces",
            filters={"path_prefix": "reports", "file_types": ["pdf"]},
        )
    )
    assert found["passages"]
    assert all(p["source"].startswith("reports/") for p in found["passages"])


def test_without_a_key_the_mcp_endpoint_answers_401_before_any_session(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    with pytest.raises(BaseException) as raised:  # noqa: PT011 (the SDK's task groups wrap it)
        run(service.url, None, lambda session: session.list_tools())
    statuses = [
        e.response.status_code
        for e in _leaves(raised.value)
        if isinstance(e, httpx.HTTPStatusError)
    ]
    assert statuses == [401]
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "curl", "version": "1"},
        },
    }
    for headers in ({}, {"Authorization": "Bearer rag_0123456789ab_not-a-real-secret"}):
        response = httpx.post(
            f"{service.url}/mcp",
            json=initialize,
            headers={**headers, "Accept": "application/json, text/event-stream"},
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "unauthenticated"
        assert "mcp-session-id" not in response.headers
    metrics = httpx.get(f"{service.url}/metrics", headers={"X-API-Key": keys["a"]}).text
    assert 'rag_requests_total{route="/mcp",status="401"}' in metrics


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def test_a_key_of_another_index_is_refused_by_every_tool(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    calls = {
        "search": {"query": ZEPPELIN, "index": "team-b"},
        "ask": {"question": ZEPPELIN, "index": "team-b"},
        "list_documents": {"index": "team-b"},
        "read_passages": {"index": "team-b", "source": "handbook.md"},
    }
    for tool, arguments in calls.items():
        message = error(call(service.url, keys["a"], tool, **arguments))
        assert "permission_denied: key 'team-a-agent' may not read index 'team-b'" in message
    assert data(call(service.url, keys["b"], "search", query=ZEPPELIN, index="team-b"))["passages"]
    default = error(call(service.url, keys["b"], "search", query=ZEPPELIN))  # team-a's
    assert "permission_denied" in default


def test_list_indexes_shows_only_what_the_key_may_read(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    mine = data(call(service.url, keys["a"], "list_indexes"))["indexes"]
    assert [(i["name"], i["default"]) for i in mine] == [("team-a", True)]
    assert mine[0]["chunks"] > 0
    assert mine[0]["embed_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    theirs = data(call(service.url, keys["b"], "list_indexes"))["indexes"]
    assert [(i["name"], i["default"]) for i in theirs] == [("team-b", False)]


def test_list_documents_names_the_files_optionally_under_a_folder(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    listed = data(call(service.url, keys["a"], "list_documents"))
    sources = [d["source"] for d in listed["documents"]]
    assert sources == [
        "handbook.md",
        "notes.txt",
        "reports/example-q1.pdf",
        "reports/memo.pdf",
        "status.html",
    ]
    assert listed["total"] == 5
    assert not listed["truncated"]
    assert all(d["chunks"] >= 1 and d["root"] for d in listed["documents"])
    reports = data(call(service.url, keys["a"], "list_documents", path_prefix="reports", limit=1))
    assert [d["source"] for d in reports["documents"]] == ["reports/example-q1.pdf"]
    assert reports["total"] == 2
    assert reports["truncated"]


def test_read_passages_reads_a_document_on_from_a_search_hit(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    hit = data(call(service.url, keys["a"], "search", query="Submit receipts", top_k=1))
    first = hit["passages"][0]
    assert first["source"] == "handbook.md"
    around = data(call(service.url, keys["a"], "read_passages", chunk_id=first["chunk_id"]))
    assert around["source"] == "handbook.md"
    assert around["chunk_index"] == first["chunk_index"]
    indexes = [p["chunk_index"] for p in around["passages"]]
    assert first["chunk_index"] in indexes
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    assert all(p["score"] is None for p in around["passages"])
    # From the start of the document, one passage at a time, to its end.
    read, at, more = [], 0, True
    while more:
        page = data(
            call(
                service.url,
                keys["a"],
                "read_passages",
                source="handbook.md",
                chunk_index=at,
                before=0,
                after=0,
            )
        )
        read += page["passages"]
        at, more = at + 1, page["more_after"]
    assert [p["chunk_index"] for p in read] == list(range(read[0]["n_chunks"]))
    assert "travel budget" in " ".join(p["text"] for p in read)


def test_bad_arguments_are_refused_with_what_is_wrong(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    assert "top_k" in error(call(service.url, keys["a"], "search", query="x", top_k=0))
    blank = error(call(service.url, keys["a"], "search", query="   "))
    assert "invalid_request: question: Value error, question must not be blank" in blank
    unknown = error(call(service.url, keys["all"], "search", query="x", index="nope"))
    assert "unknown_index: index 'nope' does not exist" in unknown
    nothing = error(call(service.url, keys["a"], "read_passages"))
    assert "invalid_request: name the passage to read around" in nothing
    gone = error(call(service.url, keys["a"], "read_passages", chunk_id="not-an-id"))
    assert "not_found: 'not-an-id' is not a chunk id" in gone


def test_ask_is_refused_at_once_while_the_engine_is_down(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    message = error(call(service.url, keys["a"], "ask", question=ZEPPELIN))
    assert message.startswith("Error executing tool ask: engine_unavailable: ")
    assert "retry after" in message


def test_over_its_rate_a_key_is_told_when_to_come_back(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served

    async def twice(session: ClientSession) -> list[CallToolResult]:
        return [await session.call_tool("search", {"query": ZEPPELIN}) for _ in range(2)]

    first, second = run(service.url, keys["slow"], twice)
    assert not first.isError
    message = error(second)
    assert "rate_limited: key 'slow-agent' is over 0.05 requests per second" in message
    assert "retry after" in message


def test_the_stdio_bridge_lists_and_calls_the_services_tools(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served

    async def use(session: ClientSession) -> tuple[set[str], dict[str, object]]:
        tools = await session.list_tools()
        found = await session.call_tool("search", {"query": ZEPPELIN, "top_k": 2})
        return {t.name for t in tools.tools}, data(found)

    names, found = run(service.url, keys["a"], use, via=bridged)
    assert names == TOOLS
    direct = data(call(service.url, keys["a"], "search", query=ZEPPELIN, top_k=2))
    assert found == direct
    refused = run(
        service.url,
        keys["a"],
        lambda s: s.call_tool("search", {"query": ZEPPELIN, "index": "team-b"}),
        via=bridged,
    )
    assert "permission_denied" in error(refused)


def test_the_bridge_without_a_key_says_to_set_rag_api_key(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, _ = served

    async def use(session: ClientSession) -> str:
        with pytest.raises(Exception, match="RAG_API_KEY") as raised:
            await session.list_tools()
        searched = await session.call_tool("search", {"query": ZEPPELIN})
        return f"{raised.value} | {error(searched)}"

    said = run(service.url, None, use, via=bridged)
    assert "wants an API key (401)" in said
    assert said.count("set RAG_API_KEY") == 2


def test_the_bridge_says_when_the_service_is_not_there() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def use(session: ClientSession) -> str:
        return error(await session.call_tool("search", {"query": ZEPPELIN}))

    said = run(url, None, use, via=bridged)
    assert f"cannot reach the service at {url}/mcp" in said


def test_the_readme_desktop_configuration_starts_a_working_bridge(
    served: tuple[RunningService, dict[str, str]],
) -> None:
    service, keys = served
    server = readme_client_config()
    assert server["command"] == "rag-mcp"
    assert set(server["env"]) == {"RAG_API_KEY"}
    args = [service.url if a == "http://localhost:8000" else a for a in server["args"]]
    assert args != server["args"]  # the README's URL is the one replaced

    async def use() -> set[str]:
        parameters = bridge_parameters(service.url, keys["a"], args)
        async with stdio_client(parameters) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            return {tool.name for tool in (await s.list_tools()).tools}

    assert asyncio.run(use()) == TOOLS
