"""Admission control's acceptance against the real CPU engine (rag/guard/admission.py).

A service with a small capacity, sent a burst beyond it; lanes and deadlines over HTTP; an
admitted ask's wait for the engine bounded by its deadline rather than the engine client's
read timeout; and a key's prompt tokens charged only once its ask is admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.ask import Answerer, AskOptions, Timings
from rag.embed import Embedder
from rag.guard import AdmissionController, OverloadedError, Principal, RateLimitedError, RateLimiter
from tests.asking import uncached_question
from tests.service import RunningService, index_corpus

SHORT = {"question": "What is the travel budget?", "top_k": 1, "max_tokens": 32}  # ~300 tokens
LONG = {"question": "What is the travel budget?", "top_k": 20, "max_tokens": 8}  # ~630 tokens


@pytest.fixture(scope="module")
def admitting(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[RunningService]:
    """The service over the real engine with a small capacity: one ask at a time, four waiting,
    asks reserving at most 450 tokens in the short lane."""
    base = tmp_path_factory.mktemp("admission")
    yield from _service(
        index_corpus(base, embedder),
        engine_url,
        engine_kv_tokens=4000,
        engine_max_seqs=1,
        admission_queue_size=4,
        admission_short_tokens=450,
        admission_aging_s=120,
    )


def _service(data_dir: Path, engine_url: str, **settings: Any) -> Iterator[RunningService]:
    """A running service over ``data_dir`` and the engine, asks allowed up to 120 s."""
    from api.app import create_app
    from rag.config import Settings

    base = {"request_timeout_s": 60, "max_request_timeout_s": 120, **settings}
    config = Settings(data_dir=data_dir, llm_url=engine_url, auth="off", **base)
    with RunningService(create_app(config)) as running:
        yield running


def _post(url: str, body: dict[str, Any]) -> tuple[httpx.Response, float, float]:
    """The response, when it was sent and how long it took (seconds, monotonic)."""
    sent = time.monotonic()
    response = httpx.post(f"{url}/ask", json=body, timeout=120)
    return response, sent, time.monotonic() - sent


def _metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


@contextlib.contextmanager
def engine_taken(service: RunningService) -> Iterator[None]:
    """The engine's one sequence is reserved until the block ends, as an ask the engine is
    working on would hold it (no talker's answer can end early and free it)."""
    admission = service.app.state.services.answerer.admission
    assert isinstance(admission, AdmissionController)
    held, release = threading.Event(), asyncio.Event()

    async def hold() -> None:
        async with admission.hold(1, admission.deadline(None)):
            held.set()
            await release.wait()

    running = asyncio.run_coroutine_threadsafe(hold(), service.loop)
    assert held.wait(60), "the reservation was not granted"
    try:
        yield
    finally:
        service.loop.call_soon_threadsafe(release.set)
        running.result(timeout=60)


def _wait_for_queue(client: httpx.Client, depth: int) -> str:
    """The /metrics text once ``depth`` asks wait for admission."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        lanes = (
            'rag_admission_queue_depth{lane="short"}',
            'rag_admission_queue_depth{lane="long"}',
        )
        if sum(_metric(text, lane) for lane in lanes) >= depth:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{depth} asks did not queue within a minute")


@pytest.mark.engine
def test_a_burst_beyond_capacity_is_answered_or_refused_at_once_never_left_hanging(
    admitting: RunningService,
) -> None:
    assert _post(admitting.url, SHORT)[0].status_code == 200  # warm: tokenizer, caches
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: _post(admitting.url, SHORT), range(12)))
    answered = [r for r, _, _ in results if r.status_code == 200]
    fastest_answer = min(took for r, _, took in results if r.status_code == 200)
    refused = [(r, took) for r, _, took in results if r.status_code == 503]
    assert len(answered) + len(refused) == 12, [r.status_code for r, _, _ in results]
    assert len(answered) >= 5  # one running and four waiting always fit
    assert refused, "twelve asks at once cannot all fit one running and four waiting"
    for response, took in refused:
        assert response.json()["error"]["type"] == "overloaded", response.text
        assert int(response.headers["retry-after"]) >= 1
        # At once: before any admitted ask is answered (retrieval on a busy box takes seconds).
        assert took < fastest_answer, f"a refusal took {took:.1f} s, an answer {fastest_answer:.1f}"
    with admitting.client() as client:
        metrics = client.get("/metrics").text
    assert _metric(metrics, 'rag_admission_rejections_total{reason="queue_full"}') >= 1
    assert _metric(metrics, "rag_admission_inflight_requests") == 0
    assert _metric(metrics, "rag_engine_capacity_tokens") == 4000
    assert _metric(metrics, "process_resident_memory_bytes") > 0


@pytest.mark.engine
def test_short_asks_submitted_behind_long_ones_start_first(admitting: RunningService) -> None:
    with admitting.client() as client, ThreadPoolExecutor(4) as pool:
        with engine_taken(admitting):
            asks = []
            for waiting, body in enumerate((LONG, LONG, SHORT, SHORT), start=1):
                asks.append(pool.submit(_post, admitting.url, body))
                depth = _wait_for_queue(client, waiting)  # queued before the next is sent
        results = [a.result() for a in asks]
    assert _metric(depth, 'rag_admission_queue_depth{lane="long"}') == 2
    assert _metric(depth, 'rag_admission_queue_depth{lane="short"}') == 2
    for response, _, _ in results:
        assert response.status_code == 200, response.text
    # One sequence at a time: they finish in the order they started.
    long_1, long_2, short_1, short_2 = (sent + took for _, sent, took in results)
    assert short_1 < short_2 < long_1 < long_2
    waited = [response.json()["timings"]["queue_ms"] for response, _, _ in results]
    assert min(waited[:2]) > max(waited[2:])  # the long ones, sent first, waited longer


@pytest.mark.engine
def test_deadlines_refuse_with_503_and_bad_or_impossible_asks_get_4xx(
    admitting: RunningService,
) -> None:
    with admitting.client() as client:
        with engine_taken(admitting):
            missed, _, took = _post(admitting.url, {**SHORT, "timeout_s": 1})
        too_long = client.post("/ask", json={**SHORT, "timeout_s": 121})
        over_schema = client.post("/ask", json={**SHORT, "timeout_s": 4000})
        too_large = client.post("/ask", json={**SHORT, "max_tokens": 3900})
        fine = client.post("/ask", json={**SHORT, "timeout_s": 90})
    assert missed.status_code == 503, missed.text
    assert missed.json()["error"]["type"] == "overloaded"
    # Refused at once when the pace of earlier asks says it cannot start in time, else when its
    # deadline passes in the queue (tests/test_admission.py pins each rule down on its own).
    assert "before its deadline" in missed.json()["error"]["message"] or (
        "deadline passed while it waited" in missed.json()["error"]["message"] and took >= 1
    ), missed.text
    assert int(missed.headers["retry-after"]) >= 1
    assert took < 10
    assert too_long.status_code == 422
    assert "at most 120" in too_long.json()["error"]["message"]
    assert over_schema.status_code == 422
    assert too_large.status_code == 413
    assert too_large.json()["error"]["type"] == "exceeds_engine_capacity"
    assert fine.status_code == 200
    assert fine.json()["timings"]["queue_ms"] >= 0


@pytest.fixture(scope="module")
def impatient(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[RunningService]:
    """The service with an engine read timeout (1 s) shorter than a long prompt's prefill."""
    base = tmp_path_factory.mktemp("impatient")
    yield from _service(index_corpus(base, embedder), engine_url, llm_timeout=1.0)


@pytest.mark.engine
def test_an_admitted_ask_waits_for_the_engine_until_its_deadline_not_the_read_timeout(
    impatient: RunningService,
) -> None:
    slow = {"top_k": 20, "max_tokens": 8}
    with impatient.client() as client:
        answered = client.post("/ask", json={**slow, "question": uncached_question()})
        t = time.monotonic()
        missed = client.post(
            "/ask", json={**slow, "question": uncached_question(), "timeout_s": 1.5}
        )
        took = time.monotonic() - t
    assert answered.status_code == 200, answered.text  # its first token came after 1 s
    assert answered.json()["timings"]["ttft_ms"] > 1000
    assert missed.status_code == 503, missed.text  # never a 504 from the read timeout
    assert missed.json()["error"]["type"] == "overloaded"
    assert "first token before the ask's deadline" in missed.json()["error"]["message"]
    assert took < 10


@pytest.mark.engine
def test_a_refused_ask_costs_its_key_no_prompt_tokens(admitting: RunningService) -> None:
    answerer: Answerer = admitting.app.state.services.answerer
    admission = answerer.admission
    assert isinstance(admission, AdmissionController)
    ask = AskOptions(str(SHORT["question"]), top_k=1, max_tokens=32, timeout_s=60)
    key = Principal(name="budgeted", all_indexes=True)

    async def main() -> tuple[list[str], int]:
        prompt_tokens = (await answerer.prepare(ask, Timings())).prompt_tokens
        # A minute's budget holds one such prompt and a half.
        limiter = RateLimiter(rps=0, tokens_per_minute=prompt_tokens * 3 // 2)
        charge = functools.partial(limiter.charge_tokens, key)
        outcomes = []
        full = admission.capacity.kv_tokens
        async with admission.hold(full, admission.deadline(None)):  # the engine is taken
            with pytest.raises(OverloadedError):
                await answerer.answer(AskOptions(**{**vars(ask), "timeout_s": 1}), charge=charge)
            outcomes.append("overloaded")
        await answerer.answer(ask, charge=charge)  # the whole budget is still there
        outcomes.append("answered")
        with pytest.raises(RateLimitedError):  # half a prompt is left
            await answerer.answer(ask, charge=charge)
        outcomes.append("rate_limited")
        return outcomes, admission.inflight_requests

    outcomes, inflight = admitting.call(main())
    assert outcomes == ["overloaded", "answered", "rate_limited"]
    assert inflight == 0  # the rate-limited ask gave its reservation back
