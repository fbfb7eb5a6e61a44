"""A managed engine that dies is reported at once, restarted, and never left behind."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from rag.embed import Embedder
from tests.service import engine_processes, index_corpus, start_api

pytestmark = pytest.mark.engine
QUESTION = {"question": "What is the travel budget?", "max_tokens": 16}


def wait_for(url: str, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{path} did not answer 200 within {timeout:.0f} s")


def stream_until_it_ends(url: str, started: threading.Event, events: list[str]) -> None:
    body = {"question": "Describe the handbook.", "stream": True, "max_tokens": 2000}
    with httpx.stream("POST", f"{url}/ask", json={**body, "temperature": 1.0}, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
                started.set()


def test_a_killed_engine_is_reported_restarted_and_never_orphaned(
    tmp_path: Path, embedder: Embedder
) -> None:
    index_corpus(tmp_path, embedder, "docs")
    api, url = start_api(tmp_path, RAG_INDEX="docs")
    try:
        first = engine_processes(api)
        wait_for(url, "/readyz", timeout=900)
        started, events = threading.Event(), list[str]()
        reader = threading.Thread(target=stream_until_it_ends, args=(url, started, events))
        reader.start()
        assert started.wait(timeout=120)
        first[0].send_signal(signal.SIGKILL)  # the server only: its EngineCore is orphaned
        reader.join(timeout=60)
        assert events[-1] == "error"

        down = httpx.post(f"{url}/ask", json=QUESTION, timeout=30)
        assert down.status_code == 503
        assert int(down.headers["retry-after"]) > 0
        streamed = httpx.post(f"{url}/ask", json={**QUESTION, "stream": True}, timeout=30)
        assert streamed.status_code == 503
        assert streamed.headers["content-type"].startswith("application/json")
        ready = httpx.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.headers["retry-after"]
        assert ready.json()["checks"]["engine"] != "ok"
        _, orphans = psutil.wait_procs(first, timeout=30)
        assert orphans == []  # what was left of the group is killed

        wait_for(url, "/readyz", timeout=300)  # restarted by the same rag-api process
        back = httpx.post(f"{url}/ask", json=QUESTION, timeout=120)
        assert back.status_code == 200, back.text
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        assert "rag_engine_restarts_total 1.0" in metrics
        second = engine_processes(api)
        assert {p.pid for p in second}.isdisjoint(p.pid for p in first)

        api.send_signal(signal.SIGTERM)
        api.wait(timeout=60)
        _, left = psutil.wait_procs(second, timeout=60)
        assert left == []
    finally:
        if api.poll() is None:
            api.kill()
