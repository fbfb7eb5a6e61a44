"""POST /ask over the real vLLM engine (CPU build, SmolLM2) and a real index."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from rag.answer import AskOptions
from rag.config import Settings
from rag.embedding import Embedder
from rag.engine import EngineProcess
from rag.indexes import IndexSpec
from rag.llm import prefix_cache_counters
from rag.prompt import SYSTEM_PROMPT
from rag.store.edge import EdgeStore
from rag.sync import FolderSync
from tests.conftest import SEC_DIR
from tests.documents import write_corpus
from tests.service import RunningService

pytestmark = pytest.mark.engine

PRODUCTS = ["lantern", "kettle", "compass", "satchel", "telescope", "barometer", "sextant"]
COLOURS = ["amber", "cobalt", "crimson", "jade", "ivory", "slate", "umber"]


def write_catalogue(path: Path, entries: int = 90) -> None:
    """A long Markdown catalogue: far more text than an 8K-token window holds."""
    lines = ["# Product catalogue\n"]
    for k in range(entries):
        product, colour = PRODUCTS[k % len(PRODUCTS)], COLOURS[(k * 3) % len(COLOURS)]
        lines.append(
            f"## Item {k}: the {colour} {product}\n\n"
            f"The {colour} {product} (catalogue number C-{1000 + k}) weighs {200 + 7 * k} grams "
            f"and ships from warehouse {k % 5 + 1}. It was introduced in {1990 + k % 30} and "
            f"its supplier guarantees spare parts for {k % 9 + 2} years. Customers praise the "
            f"{product} for its {colour} finish, its sturdy hinges and its careful packaging; "
            f"returns are accepted within {14 + k % 3 * 7} days. Each {product} is inspected "
            f"twice before it leaves warehouse {k % 5 + 1}, and the inspection report is filed "
            f"under reference R-{5000 + k}.\n"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("ask")
    docs = base / "docs"
    write_corpus(docs)
    write_catalogue(docs / "catalogue" / "products.md")
    sec = SEC_DIR / "2023 Q3 AAPL.pdf"
    if sec.exists():
        (docs / "filings").mkdir()
        shutil.copy(sec, docs / "filings" / sec.name)
    store = EdgeStore(base / "data")
    try:
        FolderSync(store, embedder, IndexSpec(name="docs")).run([docs])
        located = {(p["source"], p["page"]) for _, p in store.scan("docs", ["source", "page"])}
    finally:
        store.close()
    return {"data_dir": base / "data", "located": located}


@pytest.fixture(scope="module")
def service(indexed: dict[str, Any], engine_url: str) -> Iterator[RunningService]:
    settings = Settings(
        data_dir=indexed["data_dir"], index="docs", llm_url=engine_url, llm_timeout=60
    )
    with RunningService(create_app(settings)) as running:
        yield running


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events, name = [], ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


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
    assert first.messages[1]["content"].startswith("Passages:\n\n[1] (")
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
    ("payload", "status", "fragment"),
    [
        ({"question": ""}, 422, "question"),
        ({"question": "   "}, 422, "blank"),
        ({"question": "x" * 4001}, 422, "question"),
        ({"question": "hi", "top_k": 0}, 422, "top_k"),
        ({"question": "hi", "top_k": 101}, 422, "top_k"),
        ({"question": "hi", "top_k": "many"}, 422, "top_k"),
        ({"question": "hi", "index": "nope"}, 422, "does not exist"),
        ({"question": "hi", "index": "../x"}, 422, "invalid index name"),
        ({"question": "hi", "colour": "blue"}, 422, "colour"),
        ({"question": "hi", "max_tokens": 8190}, 413, "window"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(
    service: RunningService, payload: dict[str, Any], status: int, fragment: str
) -> None:
    with service.client() as client:
        response = client.post("/ask", json=payload)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


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


def test_malformed_json_gets_a_422(service: RunningService) -> None:
    with service.client() as client:
        response = client.post(
            "/ask", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"


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
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["engine"] != "ok"
            assert client.get("/healthz").status_code == 200
        finally:
            engine.start()
            engine.wait_ready(timeout=900)
        assert client.get("/readyz").status_code == 200
        back = client.post("/ask", json={"question": "What is the travel budget?"})
        assert back.status_code == 200


def test_the_in_process_tokenizer_counts_exactly_what_the_engine_counts(
    engine: EngineProcess,
) -> None:
    from rag.llm import EngineClient
    from rag.prompt import build_messages
    from rag.store.base import Hit
    from rag.tokens import EngineTokenCounter, LocalTokenCounter

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
