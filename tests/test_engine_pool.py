"""The engine as a pool: two real CPU vLLM engines behind the real vllm-router (cache-aware
routing), and the service reading each replica's own /metrics (RAG_ENGINE_METRICS_URLS).

The router answers /metrics from one replica, so without the setting the service would learn
one replica's KV cache; with it, admission sizes itself to the sum, /metrics shows each
replica, and a replica that does not answer is left out without an error.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from rag.config import Settings
from rag.embed import Embedder
from rag.engine import (
    EngineClient,
    EnginePool,
    EngineProcess,
    kv_tokens_from_metrics,
    local_engine_config,
    prefix_cache_counters,
)
from rag.engine.pool import WATCH_INTERVAL_S
from rag.guard import learn_capacity
from tests.service import RunningService, free_port, index_corpus

pytestmark = pytest.mark.engine

ROUTER = Path(sys.executable).parent / "vllm-router"  # the dev extra's console script


def own_capacity(url: str) -> int:
    """The KV-cache tokens a replica reports on its own /metrics."""
    tokens = kv_tokens_from_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
    assert tokens is not None
    return tokens


class Router:
    """vllm-router (cache-aware) in front of ``workers``, on ``port`` or a free one."""

    def __init__(
        self, workers: list[str], log: Path, port: int | None = None, extra: Sequence[str] = ()
    ) -> None:
        if not ROUTER.exists():
            pytest.skip(f"needs vllm-router (the dev extra) at {ROUTER}")
        port = port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [str(ROUTER), "--host", "127.0.0.1", "--port", str(port)]
        command += ["--policy", "cache_aware"]
        # Its own metrics listen on a fixed port unless told: two routers at once would clash.
        command += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
        command += extra
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--worker-urls", *workers], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vllm-router did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        """Ready: serving through one replica at least (its /health is 503 while any is down)."""
        try:
            return httpx.get(f"{self.url}/readiness", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def second_engine(tmp_path_factory: pytest.TempPathFactory, engine_url: str) -> Iterator[str]:
    """One more CPU engine, started as the session's is, with half its KV cache (1 GiB)."""
    settings = Settings(engine_port=free_port(), engine_kv_cache_gib=1)
    log = tmp_path_factory.mktemp("second-engine") / "engine.log"
    process = EngineProcess(local_engine_config(settings), log)
    process.start()
    try:
        process.wait_ready(timeout=900)
        yield process.url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def router(
    engine_url: str, second_engine: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    running = Router([engine_url, second_engine], tmp_path_factory.mktemp("router") / "log")
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """The small corpus, indexed once; each service serves a copy of it (one store, one user)."""
    return index_corpus(tmp_path_factory.mktemp("pool"), embedder)


def serve(indexed: Path, folder: Path, llm_url: str, replicas: list[str]) -> RunningService:
    """The service asking through ``llm_url``, reading the ``replicas``' /metrics."""
    data_dir = shutil.copytree(indexed, folder / "data")
    settings = Settings(
        data_dir=data_dir, llm_url=llm_url, llm_timeout=60, engine_metrics_urls=replicas
    )
    return RunningService(create_app(settings))


@pytest.fixture(scope="module")
def pooled(
    indexed: Path,
    router: str,
    engine_url: str,
    second_engine: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningService]:
    """The service asking through the router, reading both replicas' /metrics."""
    folder, replicas = tmp_path_factory.mktemp("pooled"), [engine_url, f"{second_engine}/metrics"]
    with serve(indexed, folder, router, replicas) as running:
        yield running


def test_the_router_alone_reports_one_replicas_capacity(
    router: str, engine_url: str, second_engine: str
) -> None:
    """Why the setting exists: the router's /metrics is one replica's."""
    through_router = own_capacity(router)
    assert through_router in (own_capacity(engine_url), own_capacity(second_engine))
    listed = httpx.get(f"{router}/list_workers", timeout=10).json()["urls"]
    assert sorted(listed) == sorted([engine_url, second_engine])


def test_the_service_learns_the_sum_of_both_replicas_capacities(
    pooled: RunningService, engine_url: str, second_engine: str
) -> None:
    first, second = own_capacity(engine_url), own_capacity(second_engine)
    capacity = pooled.app.state.services.answerer.admission.capacity
    assert capacity.kv_tokens == first + second  # not the router's one replica
    assert capacity.source == "sum of 2 replicas' num_gpu_blocks × block_size"


def test_metrics_show_each_replicas_running_and_waiting_requests(
    pooled: RunningService, engine_url: str, second_engine: str
) -> None:
    replicas = (engine_url, second_engine)
    own = [prefix_cache_counters(httpx.get(f"{r}/metrics", timeout=10).text) for r in replicas]
    with pooled.client() as client:
        text = client.get("/metrics").text
    for replica in replicas:
        label = f'{{replica="{replica}"}}'
        assert f"rag_engine_replica_up{label} 1.0" in text
        assert f"rag_engine_replica_requests_running{label} 0.0" in text  # nothing asked now
        assert f"rag_engine_replica_requests_waiting{label} 0.0" in text
    # The prefix cache over the pool: both replicas' hits and queries, summed.
    hits, queries = (sum(pair) for pair in zip(*own, strict=True))
    assert _gauge(text, "rag_engine_prefix_cache_hits") == hits
    assert _gauge(text, "rag_engine_prefix_cache_queries") == queries
    assert _gauge(text, "rag_engine_prefix_cache_hit_ratio") == pytest.approx(
        hits / queries if queries else 0.0
    )


def test_an_ask_through_the_router_is_answered_and_counted_in_the_pools_cache(
    pooled: RunningService,
) -> None:
    def queried() -> float:
        return _gauge(client.get("/metrics").text, "rag_engine_prefix_cache_queries")

    with pooled.client() as client:
        before = queried()
        ask = {"question": "What is the travel budget?", "max_tokens": 8}
        response = client.post("/ask", json=ask)
        assert response.status_code == 200, response.text
        assert response.json()["answer"]
        # Whichever replica the router chose, the pool's prefix-cache counters move.
        _wait_for(lambda: queried() > before)


def test_a_replica_that_does_not_answer_is_left_out_without_an_error(
    indexed: Path, router: str, engine_url: str, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"

    async def learned() -> tuple[int | None, int]:
        pool, engine = EnginePool([engine_url, dead], timeout=2), EngineClient(router)
        try:
            reading = await pool.read()
            assert [r.up for r in reading.replicas] == [True, False]
            return reading.kv_tokens, (await learn_capacity(engine, pool=pool)).kv_tokens
        finally:
            await pool.aclose()
            await engine.aclose()

    assert asyncio.run(learned()) == (own_capacity(engine_url),) * 2
    served = serve(indexed, tmp_path, router, [engine_url, dead])
    with served as running, running.client() as client:
        capacity = running.app.state.services.answerer.admission.capacity
        assert capacity.kv_tokens == own_capacity(engine_url)
        assert f"not answering: {dead}" in capacity.source
        text = client.get("/metrics").text
        assert f'rag_engine_replica_up{{replica="{dead}"}} 0.0' in text
        assert f'rag_engine_replica_up{{replica="{engine_url}"}} 1.0' in text
        ask = {"question": "What is the travel budget?", "max_tokens": 8}
        assert client.post("/ask", json=ask).status_code == 200


def test_a_router_with_one_replica_down_still_serves(
    indexed: Path, engine_url: str, tmp_path: Path
) -> None:
    """vllm-router's /health is 503 while any replica is down; the service asks its /readiness
    then, and goes on serving through the replicas that are up."""
    dead = f"http://127.0.0.1:{free_port()}"
    checks = ["--health-check-interval-secs", "1", "--health-failure-threshold", "1"]
    front = Router([engine_url, dead], tmp_path / "half.log", extra=checks)
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{front.url}/health", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "the router never noticed the dead replica"
            time.sleep(0.5)
        with serve(indexed, tmp_path, front.url, [engine_url, dead]) as running:
            with running.client() as client:
                assert client.get("/readyz").json()["checks"]["engine"] == "ok"
                ask = {"question": "What is the travel budget?", "max_tokens": 8}
                for _ in range(3):  # the router's next worker each time, were it round-robin
                    assert client.post("/ask", json=ask).status_code == 200

            async def healthy() -> bool:
                engine = EngineClient(front.url)
                try:
                    return await engine.health()
                finally:
                    await engine.aclose()

            assert asyncio.run(healthy())
    finally:
        front.stop()


def test_a_replica_that_comes_and_goes_grows_and_shrinks_the_capacity(
    indexed: Path, router: str, engine_url: str, second_engine: str, tmp_path: Path
) -> None:
    """The second replica's /metrics is reached through a router of its own here, which this
    test starts and stops while the engines keep running for the other tests."""
    first, second = own_capacity(engine_url), own_capacity(second_engine)
    port = free_port()
    replica = f"http://127.0.0.1:{port}"
    served = serve(indexed, tmp_path, router, [engine_url, replica])
    with served as running, running.client() as client:
        admission = running.app.state.services.answerer.admission
        assert admission.capacity.kv_tokens == first
        front = Router([second_engine], tmp_path / "front.log", port=port)
        try:
            _wait_for(lambda: admission.capacity.kv_tokens == first + second)
            assert (
                f'rag_engine_replica_up{{replica="{replica}"}} 1.0' in client.get("/metrics").text
            )
        finally:
            front.stop()
        _wait_for(lambda: admission.capacity.kv_tokens == first)
        assert f'rag_engine_replica_up{{replica="{replica}"}} 0.0' in client.get("/metrics").text


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 3 * WATCH_INTERVAL_S + 30
    while not condition():
        assert time.monotonic() < deadline, "the pool's change was not picked up in time"
        time.sleep(0.5)


def _gauge(text: str, name: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{name} "))
    return float(line.split()[1])
