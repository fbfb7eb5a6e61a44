"""POST /ask over the real vLLM engine (CPU build, SmolLM2) and a real index."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any, get_args

import httpx
import pytest

from api.protocol import FileType, Filters
from rag.ask import AskOptions
from rag.ask.prompt import SYSTEM_PROMPT
from rag.engine import EngineProcess, prefix_cache_counters
from rag.ingest import READ_TYPES
from tests.asking import sse_events
from tests.service import RunningService

pytestmark = pytest.mark.engine


def engine_cache_hits(engine_url: str) -> float:
    return prefix_cache_counters(httpx.get(f"{engine_url}/metrics").text)[0]


def test_ask_answers_with_citations_that_exist_in_the_index(
    service: RunningService, indexed: dict[str, Any]
) -> None:
    with service.client() as client:
        response = client.post(
            "/ask", json={"question": "What does the zeppelin fleet expansion depend on?"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"].strip()
    assert body["model"] == "SmolLM2-135M-Instruct"
    assert [c["n"] for c in body["citations"]] == list(range(1, len(body["citations"]) + 1))
    for citation in body["citations"]:
        assert (citation["source"], citation["page"]) in indexed["located"]
    cited = {(c["source"], c["page"]) for c in body["citations"]}
    assert ("reports/example-q1.pdf", 2) in cited
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["completion_tokens"] > 0
    assert body["timings"]["ttft_ms"] > 0


def test_streamed_ask_sends_citations_then_tokens_then_done(service: RunningService) -> None:
    with (
        service.client() as client,
        client.stream(
            "POST",
            "/ask",
            json={"question": "How should receipts be submitted?", "stream": True},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    names = [name for name, _ in events]
    assert names[0] == "citations"
    assert names[-1] == "done"
    assert set(names[1:-1]) == {"token"}
    assert len(names) > 3
    assert events[0][1]["citations"]
    assert events[-1][1]["usage"]["completion_tokens"] > 0


def test_prompts_share_a_byte_identical_system_prefix_that_the_engine_caches(
    service: RunningService, engine_url: str
) -> None:
    answerer = service.app.state.services.answerer
    first = service.call(answerer.answer(AskOptions("What is the travel budget?", index="docs")))
    before = engine_cache_hits(engine_url)
    second = service.call(answerer.answer(AskOptions("Where is the coffee machine?", index="docs")))
    assert first.messages[0] == second.messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert first.messages[1]["content"].startswith("Passages:\n\n")
    assert engine_cache_hits(engine_url) > before


def test_auto_top_k_fills_the_window_and_never_exceeds_it(service: RunningService) -> None:
    with service.client() as client:
        response = client.post(
            "/ask",
            json={
                "question": "Which items ship from warehouse 3?",
                "top_k": "auto",
                "max_tokens": 64,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    window = 8192 - 64
    assert body["usage"]["prompt_tokens"] <= window
    assert body["usage"]["prompt_tokens"] > 0.85 * window
    assert len(body["citations"]) > 15


@pytest.mark.parametrize(
    ("filters", "allowed"),
    [
        ({"path_prefix": "reports"}, lambda source: source.startswith("reports/")),
        ({"path_prefix": "catalogue/"}, lambda source: source.startswith("catalogue/")),
        ({"file_types": ["markdown", "html"]}, lambda source: source.endswith((".md", ".html"))),
    ],
)
def test_filtered_asks_only_cite_matching_files(
    service: RunningService, filters: dict[str, Any], allowed: Any
) -> None:
    with service.client() as client:
        response = client.post(
            "/ask",
            json={
                "question": "What does the report say?",
                "top_k": 20,
                "max_tokens": 8,
                "filters": filters,
            },
        )
    assert response.status_code == 200, response.text
    sources = [c["source"] for c in response.json()["citations"]]
    assert sources
    assert all(allowed(s) for s in sources), sources


def test_a_date_filter_excludes_files_modified_outside_the_range(service: RunningService) -> None:
    with service.client() as client:
        response = client.post(
            "/ask",
            json={
                "question": "travel budget",
                "max_tokens": 8,
                "filters": {"modified_before": "2001-01-01T00:00:00Z"},
            },
        )
    assert response.status_code == 200
    assert response.json()["citations"] == []


def test_matched_passages_that_do_not_fit_the_window_get_a_413_with_the_numbers(
    service: RunningService,
) -> None:
    for stream in (False, True):
        with service.client() as client:
            response = client.post(
                "/ask",
                json={
                    "question": "Which kettle?",
                    "index": "whole",
                    "max_tokens": 4096,
                    "stream": stream,
                },
            )
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["type"] == "no_passage_fits"
        assert "1 passages matched" in error["message"]
        assert "8192-token window" in error["message"]
        assert "4096 tokens reserved" in error["message"]


def test_a_filter_that_matches_nothing_says_so_and_how_path_prefix_matches(
    service: RunningService,
) -> None:
    with service.client() as client:
        response = client.post(
            "/ask", json={"question": "What is sold?", "filters": {"path_prefix": "catal"}}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["citations"] == []
    assert "path_prefix 'catal'" in body["notice"]
    assert "whole folder or file names" in body["notice"]


def test_a_client_that_disconnects_cancels_the_engine_request(
    service: RunningService, engine_url: str
) -> None:
    body = {
        "question": "Describe every item in the catalogue.",
        "stream": True,
        "max_tokens": 1500,
        "temperature": 1.0,
    }
    with service.client() as client, client.stream("POST", "/ask", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("event: token"):
                break  # leave after the first token
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{engine_url}/metrics").text
        running = [ln for ln in metrics.splitlines() if ln.startswith("vllm:num_requests_running")]
        if all(ln.endswith(" 0.0") for ln in running):
            return
        time.sleep(0.2)
    pytest.fail("the engine kept generating after the client left")


def engine_running_requests(engine_url: str) -> float:
    metrics = httpx.get(f"{engine_url}/metrics").text
    lines = [ln for ln in metrics.splitlines() if ln.startswith("vllm:num_requests_running")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


def test_a_json_ask_whose_client_disconnects_cancels_the_engine_request(
    service: RunningService, engine_url: str
) -> None:
    body = json.dumps(
        {
            "question": "Describe every item in the catalogue.",
            "max_tokens": 1500,
            "temperature": 1.0,
        }
    ).encode()
    request = (
        f"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + 120
        while engine_running_requests(engine_url) < 1:
            assert time.monotonic() < deadline, "the engine never started generating"
            time.sleep(0.1)
    left = time.monotonic()  # the client is gone
    while engine_running_requests(engine_url) > 0:
        assert time.monotonic() - left < 2.0, "the engine kept generating after the client left"
        time.sleep(0.1)


def test_metrics_expose_stage_latencies_and_the_prefix_cache_hit_ratio(
    service: RunningService,
) -> None:
    with service.client() as client:
        assert client.post("/ask", json={"question": "Who makes the kettle?"}).status_code == 200
        text = client.get("/metrics").text
    for name in (
        'rag_stage_seconds_bucket{le="0.01",stage="embed"}',
        'rag_stage_seconds_count{stage="search"}',
        'rag_stage_seconds_count{stage="prompt"}',
        "rag_ttft_seconds_count",
        "rag_prompt_tokens_count",
        "rag_passages_per_prompt_count",
        'rag_requests_total{route="/ask",status="200"}',
        "rag_engine_prefix_cache_hit_ratio",
    ):
        assert name in text
    ratio = next(ln for ln in text.splitlines() if ln.startswith("rag_engine_prefix_cache_hit_r"))
    assert 0.0 < float(ratio.split()[-1]) <= 1.0


def test_engine_outage_gives_503_and_readyz_reports_it_until_it_is_back(
    service: RunningService, engine: EngineProcess
) -> None:
    with service.client() as client:
        assert client.get("/readyz").status_code == 200
        engine.stop()
        try:
            down = client.post("/ask", json={"question": "What is the travel budget?"})
            assert down.status_code == 503
            assert down.headers["retry-after"]
            assert down.json()["error"]["type"] == "engine_unavailable"
            streamed = client.post("/ask", json={"question": "What is it?", "stream": True})
            assert streamed.status_code == 503  # not 200 and then an error event
            assert streamed.headers["retry-after"]
            assert streamed.json()["error"]["type"] == "engine_unavailable"
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["retry-after"]
            assert ready.json()["checks"]["engine"] != "ok"
            assert client.get("/healthz").status_code == 200
        finally:
            engine.start()
            engine.wait_ready(timeout=900)
        deadline = time.monotonic() + 10  # the service's supervisor probes every second
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        back = client.post("/ask", json={"question": "What is the travel budget?"})
        assert back.status_code == 200


def test_the_in_process_tokenizer_counts_exactly_what_the_engine_counts(
    engine: EngineProcess,
) -> None:
    from rag.ask import EngineTokenCounter, LocalTokenCounter, build_messages
    from rag.engine import EngineClient
    from rag.store import Hit

    passages = [
        Hit(
            "a",
            0.9,
            {
                "source": "q1.pdf",
                "page": 3,
                "text": "Net sales were $81,797 million.",
                "heading": [],
            },
        ),
        Hit(
            "b",
            0.8,
            {
                "source": "notes.md",
                "page": None,
                "text": "Ünïcode — “quotes” ✓",
                "heading": ["Notes", "Q3"],
            },
        ),
    ]

    async def counts() -> list[tuple[int, int]]:
        client = EngineClient(engine.url)
        local, remote = LocalTokenCounter(engine.config.model), EngineTokenCounter(client)
        try:
            pairs = []
            for hits in ([], passages[:1], passages):
                messages = build_messages(hits, "What were net sales?")
                pairs.append((await local.count_chat(messages), await remote.count_chat(messages)))
            text = "Revenue: $1,234.5 million (3%)\n\ttable"
            pairs.append((await local.count_text(text), await remote.count_text(text)))
            return pairs
        finally:
            await client.aclose()

    for local_count, engine_count in asyncio.run(counts()):
        assert local_count == engine_count


def test_a_filter_may_name_every_type_the_readers_read() -> None:
    assert set(get_args(FileType)) == READ_TYPES
    assert Filters(file_types=["docx", "eml", "image"]).file_types == ["docx", "eml", "image"]
