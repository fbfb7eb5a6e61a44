"""The MCP `ask` tool over the real vLLM engine (CPU build, SmolLM2) and a real index: an answer
with its citations, and a long answer whose client goes away aborted at the engine, directly and
through the `rag-mcp` bridge."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp import ClientSession

from api.app import create_app
from rag.config import Settings
from rag.embed import Embedder
from rag.guard import AdmissionController
from tests.asking import write_catalogue
from tests.mcp_client import bridged, call, connected, data
from tests.service import RunningService, index_corpus

pytestmark = pytest.mark.engine
LONG = {"question": "Describe every item in the catalogue, one by one, in detail.", "top_k": 20}


@pytest.fixture(scope="module")
def answering(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[RunningService]:
    """The service over the engine and the mixed corpus with a long catalogue; answers of up to
    1500 tokens, so that one takes long enough to leave in the middle of it."""
    base = tmp_path_factory.mktemp("mcp-ask")
    write_catalogue(base / "docs" / "catalogue" / "products.md")
    data_dir = index_corpus(base, embedder)
    settings = Settings(
        data_dir=data_dir, llm_url=engine_url, llm_timeout=120, max_output_tokens=1500
    )
    with RunningService(create_app(settings)) as running:
        yield running


def admission(service: RunningService) -> AdmissionController:
    controller = service.app.state.services.answerer.admission
    assert isinstance(controller, AdmissionController)
    return controller


def answers_given(service: RunningService) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith("rag_prompt_tokens_count "))
    return float(line.rsplit(" ", 1)[1])


def engine_running_requests(engine_url: str) -> float:
    metrics = httpx.get(f"{engine_url}/metrics").text
    lines = [ln for ln in metrics.splitlines() if ln.startswith("vllm:num_requests_running")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


def test_ask_answers_with_citations_from_the_index(answering: RunningService) -> None:
    question = "What does the zeppelin fleet expansion depend on?"
    answer = data(call(answering.url, None, "ask", question=question, history=[]))
    assert answer["answer"].strip()
    assert answer["model"] == "SmolLM2-135M-Instruct"
    citations = answer["citations"]
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1))
    assert ("reports/example-q1.pdf", 2) in {(c["source"], c["page"]) for c in citations}
    assert all(c["chunk_id"] and c["text"] for c in citations)
    assert answer["usage"]["prompt_tokens"] > 0
    # A citation's chunk_id reads on in its document.
    cited = next(c for c in citations if c["source"] == "reports/example-q1.pdf")
    around = data(call(answering.url, None, "read_passages", chunk_id=cited["chunk_id"]))
    assert cited["chunk_id"] in [p["chunk_id"] for p in around["passages"]]


def test_ask_continues_the_conversation_of_its_history(answering: RunningService) -> None:
    first = "What does the zeppelin fleet expansion depend on?"
    earlier = data(call(answering.url, None, "ask", question=first))
    history = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": earlier["answer"]},
    ]
    follow_up = "And what would stop it?"
    answer = data(call(answering.url, None, "ask", question=follow_up, history=history))
    assert answer["query"] != follow_up  # retrieved with a standalone form, as /ask does
    assert answer["timings"]["rewrite_ms"] > 0
    before = {c["n"] for c in earlier["citations"]}  # numbers continue across the turns
    assert all(c["n"] > max(before) for c in answer["citations"] if c["n"] not in before)


async def _leave_mid_answer(session: ClientSession, service: RunningService) -> None:
    """Start a long ask, and return (the caller then closes the connection) while the engine
    is working on it."""
    asked = asyncio.ensure_future(session.call_tool("ask", LONG))
    deadline = time.monotonic() + 120
    while admission(service).inflight_requests < 1:  # admitted: the engine has the request
        assert not asked.done(), asked.result()
        assert time.monotonic() < deadline, "the ask never reached the engine"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # generating
    assert not asked.done(), "the answer came too soon to leave in the middle of it"
    asked.cancel()


def _assert_engine_request_aborted(service: RunningService, engine_url: str, given: float) -> None:
    left = time.monotonic()  # the client is gone
    while admission(service).inflight_requests > 0:
        assert time.monotonic() - left < 3.0, "the ask kept its place after its client left"
        time.sleep(0.05)
    if not os.environ.get("RAG_TEST_ENGINE_URL"):  # the engine is ours alone: it is idle again
        while engine_running_requests(engine_url) > 0:
            assert time.monotonic() - left < 3.0, "the engine kept generating"
            time.sleep(0.1)
    assert answers_given(service) == given  # it was never answered


def test_a_long_ask_is_aborted_at_the_engine_when_its_client_goes_away(
    answering: RunningService, engine_url: str
) -> None:
    given = answers_given(answering)

    async def leave() -> None:
        async with connected(answering.url) as session:
            await _leave_mid_answer(session, answering)

    asyncio.run(leave())
    _assert_engine_request_aborted(answering, engine_url, given)


def test_a_bridge_stopped_mid_answer_aborts_the_engine_request(
    answering: RunningService, engine_url: str
) -> None:
    given = answers_given(answering)

    async def leave(via: Any) -> None:
        async with via(answering.url) as session:
            await _leave_mid_answer(session, answering)
        # Leaving the stdio client ends the bridge process (stdin closed, then terminated).

    asyncio.run(leave(bridged))
    _assert_engine_request_aborted(answering, engine_url, given)
