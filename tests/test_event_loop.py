"""A long-context `top_k: "auto"` ask never holds the event loop: /healthz answers at once.

The service plans for a 262,144-token window (``RAG_LLM_MAX_MODEL_LEN``, as on the H200) over a
large index, counting with the served tokenizer in-process; the CPU engine's own window is 8K,
so it refuses the fitted prompt (a 4xx), but only after the service retrieved and fitted it.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.embed import Embedder
from rag.store import EdgeStore
from tests.service import index_passages, start_api
from tests.test_prompt_counts import served_folder

pytestmark = pytest.mark.engine
WINDOW = 262_144
# 1,500 passages of ~200 LLM tokens: more than the window holds. Each is embedded by the real
# MiniLM from its first line only, which keeps the index cheap to build on two cores.
PASSAGES = 1_500
WORDS = """revenue margin quarter segment tariff warehouse shipment invoice audit ledger forecast
pension lease hedge dividend backlog inventory currency rebate royalty""".split()  # noqa: SIM905


def passage(k: int) -> tuple[str, str]:
    """The first line (what is embedded) and the whole text of passage ``k``."""
    head = f"Note {k}: the {WORDS[k % 20]} of region {k % 17} in quarter {k % 4 + 1}."
    body = " ".join(WORDS[(k * 7 + j) % len(WORDS)] for j in range(150))
    return head, f"{head}\n{body}; total {k * 13} units, reviewed on day {k % 28 + 1}."


@pytest.fixture(scope="module")
def large_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    data = tmp_path_factory.mktemp("event-loop") / "data"  # rag-api's RAG_DATA_DIR
    store = EdgeStore(data)
    try:
        heads, texts = zip(*(passage(k) for k in range(PASSAGES)), strict=True)
        passages = [(f"ledger-{k // 100:02d}.md", text, k) for k, text in enumerate(texts)]
        index_passages(store, "default", embedder, passages, embedded=heads)
    finally:
        store.close()
    return data


@pytest.fixture(scope="module")
def long_window_service(
    large_index: Path, engine_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`rag-api` in its own process (as deployed: no test thread shares its interpreter)."""
    folder = served_folder(engine_url)
    if folder is None:
        pytest.skip("the engine's tokenizer folder is not on this machine")
    api, url = start_api(
        tmp_path_factory.mktemp("event-loop-api"),
        RAG_DATA_DIR=str(large_index),
        RAG_LLM_URL=engine_url,
        RAG_LLM_TOKENIZER=str(folder),
        RAG_LLM_MAX_MODEL_LEN=str(WINDOW),
        RAG_AUTH="off",
        RAG_RATE_LIMIT_TOKENS_PER_MINUTE="0",
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert api.poll() is None, "rag-api exited"
            assert time.monotonic() < deadline, "rag-api did not start"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        api.terminate()
        api.wait(timeout=60)


def test_healthz_is_answered_at_once_while_an_auto_ask_fits_a_long_window(
    long_window_service: str,
) -> None:
    asked: dict[str, Any] = {}

    def ask() -> None:
        with httpx.Client(base_url=long_window_service, timeout=300) as client:
            response = client.post(
                "/ask", json={"question": "Which region had the tariff audit?", "top_k": "auto"}
            )
        asked["status"], asked["body"] = response.status_code, response.json()

    latencies: list[float] = []
    with httpx.Client(base_url=long_window_service, timeout=60) as client:
        # Opened before timing: the index's shard, the engine's model info, one small ask.
        warm = client.post("/ask", json={"question": "Which note?", "top_k": 1, "max_tokens": 1})
        assert warm.status_code == 200, warm.text
        asker = threading.Thread(target=ask)
        asker.start()
        while asker.is_alive():
            t = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append((time.perf_counter() - t) * 1000)
            time.sleep(0.002)
        asker.join()
    # The CPU engine's window is 8K: it refuses the ~260K-token prompt the service fitted.
    assert 400 <= asked["status"] < 500, asked["body"]
    assert asked["body"]["error"]["type"] != "prompt_too_long"
    assert len(latencies) > 20  # the ask took long enough to be watched
    # Typically under 10 ms. A 2-core machine shared with the engine delays some (the client's
    # own scheduling: 8 of 224 at 10-21 ms and one up to ~100 ms seen in CI), never by what
    # holding the loop costs at this size (fitting on the loop: ~500 ms, a full garbage
    # collection: ~300 ms).
    assert statistics.median(latencies) < 10, sorted(latencies)[-5:]
    slow = [ms for ms in latencies if ms >= 50]
    assert len(slow) <= len(latencies) // 50, sorted(latencies)[-5:]
    assert max(latencies) < 200, sorted(latencies)[-5:]
