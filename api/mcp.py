"""The MCP server at `/mcp`: search, answers and documents as tools for agents, on the
streamable HTTP transport of the official SDK (FastMCP).

Same keys, index scopes, rate limits and admission as `/ask`. Every HTTP request to `/mcp` is
authenticated as a route's is, before any MCP message is read: 401 with `WWW-Authenticate`.
Each tool call then takes one request from the key's rate (as every route that does work), checks
that the key may read the index, and `ask` goes the way of `/ask` (its options, the engine check,
admission, the prompt-token charge). A refusal is a tool error (`isError`) that names the HTTP
error type, e.g. `permission_denied: key 'a' may not read index 'b'`.

Stateless: each POST is served on its own, in an MCP session that lives as long as it does. So
a call lasts as long as its HTTP stream: a client that goes away (or closes the stream to cancel)
cancels the call, and a cancelled `ask` aborts its engine request. Nothing is kept between calls,
and a restarted service serves its clients at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Iterator
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.session import ServerSession
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from api.auth import access_error_headers, admitted, authenticate, get_access, require_read
from api.deps import Services, get_services
from api.errors import error_body, retry_after
from api.mcp_protocol import (
    DocumentInfo,
    DocumentList,
    IndexInfo,
    IndexList,
    PassageInfo,
    ReadResult,
    SearchResult,
    Turn,
)
from api.protocol import MAX_QUESTION_CHARS, AskRequest, AskResponse, Filters, HistoryTurn
from api.routes import ask_options
from rag.ask import MAX_AROUND, AskOptions, answer_json, read_around, search_passages
from rag.guard import ANONYMOUS, AuthenticationError, Principal
from rag.indexes import check_index_name
from rag.ingest import readable_indexes, summarise

log = logging.getLogger("rag.api.mcp")
T = TypeVar("T")
PRINCIPAL = "rag.principal"  # the scope key the endpoint leaves the caller under
ToolContext = Context[ServerSession, Any, Request]

INSTRUCTIONS = """\
Search and read a company's own documents, and get answers cited from them.
Start with `search` to find passages (with their file, page and heading) and cite them yourself;
`read_passages` reads a document on around a passage; `ask` has the service's own model write a
cited answer in one step. `list_indexes` and `list_documents` show which collections and files
there are."""

SEARCH = """\
Find the passages of the documents that best match a query, best first: each with its file \
(source), page, heading path, relevance score and text, and a chunk_id. No answer is written, \
and it is fast: use it to gather evidence you will cite or reason over yourself, to check what \
the documents say, or to find where something is. Search again with other words when nothing \
fits; narrow with filters (a folder or file as path_prefix, file types, modification dates). \
Follow up with read_passages to read the text around a passage."""

ASK = """\
Have the service answer a question from the documents with its own language model: the answer \
marks its sources as [n], and each citation gives the passage's file, page, heading, text and \
chunk_id. Use it when a finished, grounded answer in one step is wanted; it is slower than \
search (a model writes the answer) and answers only from the passages it finds, so for research \
or a question in several parts, search (several times) and answer yourself. Make the question \
self-contained."""

LIST_INDEXES = """\
List the document collections (indexes) this key may read, with their number of passages; the \
one marked default is used when a call names no index. Call it when unsure which index to use."""

LIST_DOCUMENTS = """\
List the files of an index (path relative to the ingested folder, number of passages), or only \
those under a folder. Use it to see what a collection holds, or to find the exact source for a \
path_prefix filter or for read_passages."""

READ_PASSAGES = """\
Read a document in order around one of its passages: give the chunk_id of a search result or a \
citation (or a source and chunk_index; a source alone reads from its start) and get that passage \
with its neighbours before and after, in document order. Use it when a passage stops mid-thought, \
to read a whole section, or to read on: call again with chunk_index one past the last passage \
returned while more_after is true."""

Index = Annotated[
    str | None,
    Field(description="The index (list_indexes names them); default: the service's default."),
]
READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


class McpEndpoint:
    """`/mcp`: the caller authenticated (or 401), then the request handed to the MCP SDK."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            scope[PRINCIPAL] = authenticate(request)
        except AuthenticationError as exc:
            status, body = error_body(exc)
            response = JSONResponse(body, status, headers=access_error_headers(exc))
            await response(scope, receive, send)
            return
        sessions: StreamableHTTPSessionManager = request.app.state.mcp_sessions
        await sessions.handle_request(scope, receive, send)


class McpRoute(Route):
    """`/mcp` (POST; GET and DELETE answered by the transport), out of the OpenAPI document. It
    names itself in the scope, as FastAPI's routes do, for the request counter."""

    def __init__(self) -> None:
        methods = ["GET", "POST", "DELETE"]
        super().__init__("/mcp", McpEndpoint(), methods=methods, include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def mcp_sessions() -> StreamableHTTPSessionManager:
    """The MCP server's HTTP sessions; `lifespan` runs them (`run()`) while the service runs."""
    server = FastMCP(
        "rag-service",
        instructions=INSTRUCTIONS,
        stateless_http=True,
        # Hosts are not checked: the service answers wherever it is reached (a proxy, a
        # container name), as its other routes do; keys guard it.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        log_level="WARNING",  # FastMCP configures logging only where nothing has (rag-api has)
    )
    server.add_tool(search, description=SEARCH, annotations=READ_ONLY)
    server.add_tool(ask, description=ASK, annotations=READ_ONLY)
    server.add_tool(list_indexes, description=LIST_INDEXES, annotations=READ_ONLY)
    server.add_tool(list_documents, description=LIST_DOCUMENTS, annotations=READ_ONLY)
    server.add_tool(read_passages, description=READ_PASSAGES, annotations=READ_ONLY)
    server.streamable_http_app()  # builds the session manager
    return server.session_manager


def _caller(ctx: ToolContext) -> tuple[Request, Services, Principal]:
    """The call's HTTP request, the services, and its key, once within the key's request rate."""
    request = ctx.request_context.request
    assert request is not None, "the streamable HTTP transport passes the request"
    principal: Principal = request.scope[PRINCIPAL]
    admitted(request, principal)
    return request, get_services(request), principal


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A tool's errors as MCP tool errors: the HTTP error's type and message, and when to retry."""
    try:
        yield
    except ToolError:
        raise
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        raise ToolError(f"invalid_request: {where}") from exc
    except ValueError as exc:  # a bad index name, a call naming no passage
        raise ToolError(f"invalid_request: {exc}") from exc
    except Exception as exc:
        status, body = error_body(exc)
        if status == 500:
            log.exception("an MCP tool call failed")
        headers = access_error_headers(exc) or (retry_after(exc) if status == 503 else {})
        wait = headers.get("Retry-After")
        again = f" (retry after {wait} s)" if wait else ""
        raise ToolError(f"{body['error']['type']}: {body['error']['message']}{again}") from exc


def _options(
    services: Services,
    question: str,
    index: str | None,
    top_k: int | None,
    filters: Filters | None,
    history: list[Turn] | None = None,
) -> AskOptions:
    """/ask's options (its validation and defaults) for a tool call; ``history`` is the
    conversation the question continues (retrieved and laid out with it, as /ask's)."""
    turns = [HistoryTurn(role=t.role, content=t.content) for t in history or ()]
    body = AskRequest(question=question, index=index, top_k=top_k, filters=filters, history=turns)
    return ask_options(body, services)


async def _unless_cancelled(work: Awaitable[T]) -> T:
    """``work`` in a task of its own, cancelled once and waited for if the call is cancelled.
    The SDK's (anyio's) cancel scope cancels a call again at every await until it ends; the
    cleanup that aborts the engine request and frees the admission place must not be cut off."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({task})
        raise


async def search(
    query: Annotated[str, Field(description="What to look for, in words.", max_length=4000)],
    ctx: ToolContext,
    index: Index = None,
    top_k: Annotated[
        int | None, Field(ge=1, le=50, description="Passages to return (default RAG_TOP_K, 5).")
    ] = None,
    filters: Annotated[
        Filters | None, Field(description="Only passages of these files (all given must hold).")
    ] = None,
) -> SearchResult:
    with _refusals():
        _, services, caller = _caller(ctx)
        options = _options(services, query, index, top_k, filters)
        require_read(caller, options.index)
        retriever = services.answerer.retriever
        found = await search_passages(
            retriever, options.index, options.question, int(options.top_k), options.filter
        )
        passages = [PassageInfo.model_validate(p) for p in found]
        return SearchResult(index=options.index, query=options.question, passages=passages)


async def ask(
    question: Annotated[
        str,
        Field(
            description="The question (a follow-up of `history`).", max_length=MAX_QUESTION_CHARS
        ),
    ],
    ctx: ToolContext,
    index: Index = None,
    top_k: Annotated[
        int | None,
        Field(ge=1, le=100, description="Passages to answer from (default RAG_TOP_K, 5)."),
    ] = None,
    filters: Annotated[
        Filters | None, Field(description="Answer only from these files (all given must hold).")
    ] = None,
    history: Annotated[
        list[Turn] | None,
        Field(
            description="Earlier turns of the conversation, oldest first: each question (user) "
            "and the answer it got (assistant). A follow-up is retrieved with them; the oldest "
            "are cut past RAG_HISTORY_MAX_TURNS exchanges or RAG_HISTORY_MAX_CHARS characters.",
        ),
    ] = None,
) -> AskResponse:
    with _refusals():
        request, services, caller = _caller(ctx)
        options = _options(services, question, index, top_k, filters, history)
        require_read(caller, options.index)
        services.supervisor.check()  # a known-down engine: refused at once
        limiter = get_access(request).limiter
        charge = None if caller is ANONYMOUS else functools.partial(limiter.charge_tokens, caller)
        answer = await _unless_cancelled(services.asker().answer(options, charge=charge))
        services.metrics.observe_answer(answer)
        return AskResponse.model_validate(answer_json(answer))


async def list_indexes(ctx: ToolContext) -> IndexList:
    with _refusals():
        _, services, caller = _caller(ctx)
        found = await asyncio.to_thread(readable_indexes, services.store, caller.can_read)
        default = services.settings.index
        indexes = [
            IndexInfo.model_validate({**vars(e), "default": e.name == default}) for e in found
        ]
        return IndexList(indexes=indexes)


async def list_documents(
    ctx: ToolContext,
    index: Index = None,
    path_prefix: Annotated[
        str | None, Field(description="Only files in this folder (or this file).", max_length=1024)
    ] = None,
    limit: Annotated[int, Field(ge=1, le=1000, description="Most documents to list.")] = 100,
) -> DocumentList:
    with _refusals():
        _, services, caller = _caller(ctx)
        name = check_index_name(index or services.settings.index)
        require_read(caller, name)
        summary = await asyncio.to_thread(summarise, services.store, name)
        files = [f for f in summary.files if f.under(path_prefix or "")]
        listed = [DocumentInfo.model_validate(f) for f in files[:limit]]
        return DocumentList(
            index=name, documents=listed, total=len(files), truncated=len(files) > limit
        )


async def read_passages(
    ctx: ToolContext,
    chunk_id: Annotated[
        str | None, Field(description="A search result's or citation's chunk_id.", max_length=64)
    ] = None,
    source: Annotated[
        str | None, Field(description="Or a file (list_documents names them).", max_length=4096)
    ] = None,
    chunk_index: Annotated[
        int, Field(ge=0, description="With source: the passage's place, from 0.")
    ] = 0,
    before: Annotated[int, Field(ge=0, le=MAX_AROUND, description="Passages before it.")] = 2,
    after: Annotated[int, Field(ge=0, le=MAX_AROUND, description="Passages after it.")] = 2,
    index: Index = None,
) -> ReadResult:
    with _refusals():
        _, services, caller = _caller(ctx)
        name = check_index_name(index or services.settings.index)
        require_read(caller, name)
        if chunk_id is None and source is None:
            raise ValueError("name the passage to read around: a chunk_id, or a source")
        reading = await asyncio.to_thread(
            read_around,
            services.store,
            name,
            chunk_id=chunk_id,
            source=source,
            chunk_index=chunk_index,
            before=before,
            after=after,
        )
        return ReadResult(
            index=name,
            source=reading.source,
            n_chunks=reading.n_chunks,
            chunk_index=reading.anchor,
            more_before=reading.more_before,
            more_after=reading.more_after,
            passages=[PassageInfo.model_validate(p) for p in reading.passages],
        )
