"""API replicas that share state through a real Redis server (RAG_REDIS_URL): one key's rate
limit enforced together, a revocation seen by every replica within a second, the engine's
capacity shared out by the live replica count, identical asks answered from the answer cache
until the index changes, and a Redis that goes away: per-replica limits, never a 5xx."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ingest_served import wait_job
from tests.redis_server import NO_REDIS, RedisServer
from tests.service import RunningService

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason=NO_REDIS)

RPS = 3  # the test key's own rate: a burst of 3, then 3 a second
QUESTION = "What does the kettle do when the water boils?"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def rag_keys(redis_url: str, data_dir: Path, *args: str) -> str:
    """The real `rag-keys` command against the shared key store."""
    env = {**os.environ, "RAG_REDIS_URL": redis_url, "RAG_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("rag-keys")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def replica(data: Path, engine_url: str, redis_url: str, **settings: Any) -> RunningService:
    from api.app import create_app
    from rag.config import Settings

    values: dict[str, Any] = {
        "data_dir": data,
        "index": "docs",
        "llm_url": engine_url,
        "llm_timeout": 60,
        "redis_url": redis_url,
        "answer_cache": True,
        **settings,
    }
    return RunningService(create_app(Settings(**values)))


@pytest.fixture(scope="module")
def pool(
    indexed: dict[str, Any],
    engine_url: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Two replicas on one Redis, each with its own copy of the index (replicas on one Qdrant
    server would share it; the embedded store opens in one place only), and two keys."""
    base = tmp_path_factory.mktemp("replicas")
    datas = []
    for name in ("a", "b"):
        shutil.copytree(indexed["data_dir"], base / name, ignore=shutil.ignore_patterns("*.lock"))
        datas.append(base / name)
    admin = rag_keys(redis_server.url, datas[0], "create", "ops", "--admin", "--all-indexes")
    user = rag_keys(
        redis_server.url, datas[0], "create", "team", "--index", "docs", "--rps", str(RPS)
    )
    with (
        replica(datas[0], engine_url, redis_server.url) as a,
        replica(datas[1], engine_url, redis_server.url) as b,
    ):
        yield {"a": a, "b": b, "admin": admin, "user": user, "datas": datas}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric(service: RunningService, key: str, name: str) -> float:
    with service.client() as client:
        response = client.get("/metrics", headers=bearer(key))
    assert response.status_code == 200, response.text
    text = response.text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not on /metrics")


def burst(pool: dict[str, Any], n: int) -> tuple[list[int], float]:
    """``n`` requests of the user key alternating between the replicas, as fast as they go; a
    cheap keyed route (an unknown job: 404 once the key is admitted, 429 when it is not)."""
    statuses = []
    clients = [pool["a"].client(), pool["b"].client()]
    started = time.monotonic()
    for i in range(n):
        response = clients[i % 2].get("/v1/jobs/nosuchjob", headers=bearer(pool["user"]))
        statuses.append(response.status_code)
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()
    return statuses, elapsed


def test_two_replicas_enforce_one_keys_rate_limit_together(pool: dict[str, Any]) -> None:
    time.sleep(1.5)  # the bucket full again after the fixture's own requests
    statuses, elapsed = burst(pool, 4 * RPS)
    admitted = statuses.count(404)
    assert set(statuses) == {404, 429}, statuses
    # The key's burst once, plus what refilled meanwhile; each replica alone would admit 2x.
    assert RPS <= admitted <= RPS + int(elapsed * RPS), (statuses, elapsed)
    assert admitted < 2 * RPS


def test_a_revocation_on_one_replica_is_refused_by_the_other_within_a_second(
    pool: dict[str, Any], redis_server: RedisServer
) -> None:
    data = pool["datas"][1]
    key = rag_keys(redis_server.url, data, "create", "leaver", "--index", "docs")
    with pool["a"].client() as a, pool["b"].client() as b:
        assert b.get("/v1/models", headers=bearer(key)).status_code == 200
        rag_keys(redis_server.url, data, "revoke", "leaver")
        revoked = time.monotonic()
        while b.get("/v1/models", headers=bearer(key)).status_code != 401:
            assert time.monotonic() - revoked < 1.0, "replica b still takes the revoked key"
            time.sleep(0.02)
        assert a.get("/v1/models", headers=bearer(key)).status_code == 401


def test_each_replica_admits_its_share_of_the_engine(
    pool: dict[str, Any], engine_url: str, redis_server: RedisServer, indexed: dict[str, Any]
) -> None:
    from rag.engine import kv_tokens_from_metrics

    engine_kv = kv_tokens_from_metrics(httpx.get(f"{engine_url}/metrics").text)
    assert engine_kv
    admin, a = pool["admin"], pool["a"]
    assert metric(a, admin, "rag_api_replicas") == 2
    assert metric(a, admin, "rag_engine_capacity_tokens") == engine_kv // 2
    base = pool["datas"][0].parent
    shutil.copytree(indexed["data_dir"], base / "c", ignore=shutil.ignore_patterns("*.lock"))
    with replica(base / "c", engine_url, redis_server.url):
        deadline = time.monotonic() + 5
        while metric(a, admin, "rag_api_replicas") != 3:
            assert time.monotonic() < deadline, "replica a did not see a third replica"
            time.sleep(0.2)
        assert metric(a, admin, "rag_engine_capacity_tokens") == engine_kv // 3
    deadline = time.monotonic() + 6  # a replica gone is forgotten after 3 s without a beat
    while metric(a, admin, "rag_api_replicas") != 2:
        assert time.monotonic() < deadline, "replica a still counts the stopped replica"
        time.sleep(0.2)
    assert metric(a, admin, "rag_engine_capacity_tokens") == engine_kv // 2


def ask(service: RunningService, key: str, **extra: Any) -> dict[str, Any]:
    body = {"question": QUESTION, "top_k": 3, "max_tokens": 16, **extra}
    with service.client() as client:
        response = client.post("/ask", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def streamed_done(service: RunningService, key: str) -> dict[str, Any]:
    import json

    body = {"question": QUESTION, "top_k": 3, "max_tokens": 16, "stream": True}
    with service.client() as client:
        response = client.post("/ask", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    events = [block for block in response.text.split("\n\n") if block.strip()]
    last = dict(line.split(": ", 1) for line in events[-1].splitlines())
    assert last["event"] == "done", events
    done: dict[str, Any] = json.loads(last["data"])
    return done


def test_an_identical_ask_is_answered_from_the_cache_until_the_index_changes(
    pool: dict[str, Any], tmp_path: Path
) -> None:
    admin, a, b = pool["admin"], pool["a"], pool["b"]
    first = ask(a, admin)
    assert first["timings"]["cached"] is False
    again = ask(b, admin)  # the other replica: the cache is shared
    assert again["timings"]["cached"] is True
    assert again["answer"] == first["answer"]
    assert again["citations"] == first["citations"]
    assert again["timings"]["total_ms"] < first["timings"]["total_ms"]
    assert streamed_done(b, admin)["timings"]["cached"] is True
    assert ask(b, admin, max_tokens=17)["timings"]["cached"] is False  # other options: missed
    assert ask(b, admin, temperature=0.5)["timings"]["cached"] is False  # sampled: never kept
    assert metric(b, admin, "rag_answer_cache_hits_total") >= 2

    note = tmp_path / "kettle-recall.md"
    note.write_text("# Recall\n\nThe kettle's lid is recalled for a loose hinge.\n")
    with httpx.Client(base_url=a.url, headers=bearer(admin), timeout=300) as client:
        with note.open("rb") as f:
            response = client.post("/v1/indexes/docs/documents", files=[("files", (note.name, f))])
        assert response.status_code == 202, response.text
        assert wait_job(client, response.headers["location"])["state"] == "succeeded"
    assert ask(b, admin)["timings"]["cached"] is False  # the upload on a bumped the generation


def test_redis_stopped_mid_run_degrades_to_per_replica_limits_without_a_5xx(
    pool: dict[str, Any], redis_server: RedisServer
) -> None:
    admin, a, b = pool["admin"], pool["a"], pool["b"]
    assert metric(a, admin, "rag_shared_state_up") == 1
    redis_server.stop()
    try:
        time.sleep(1.5)
        statuses, elapsed = burst(pool, 4 * RPS)
        assert all(s < 500 for s in statuses), statuses
        admitted = statuses.count(404)
        # Each replica its own bucket: the key's burst on each, no more.
        assert 2 * RPS <= admitted <= 2 * (RPS + int(elapsed * RPS)), (statuses, elapsed)
        answered = ask(b, admin)
        assert answered["timings"]["cached"] is False
        assert metric(a, admin, "rag_shared_state_up") == 0
        assert metric(a, admin, "rag_shared_state_outages_total") >= 1
    finally:
        redis_server.start()  # empty: no persistence
    deadline = time.monotonic() + 10
    while metric(a, admin, "rag_shared_state_up") != 1:  # back after its retry interval
        assert time.monotonic() < deadline, "replica a did not reconnect to Redis"
        time.sleep(0.3)
    # The keys survive Redis losing its data (put back from what the replicas saw last), and
    # the key's limit is shared again.
    time.sleep(1.5)
    statuses, elapsed = burst(pool, 4 * RPS)
    assert RPS <= statuses.count(404) <= RPS + int(elapsed * RPS), (statuses, elapsed)


def test_rate_limits_and_token_budget_in_redis_with_its_clock(redis_server: RedisServer) -> None:
    """The limiter itself: the token budget's debt is shared, a changed limit starts full."""
    from rag.guard import Principal, RateLimitedError, SharedRateLimiter
    from rag.guard.keys import Limits
    from rag.shared import SharedState

    one, two = SharedState(redis_server.url), SharedState(redis_server.url)
    first, second = SharedRateLimiter(one, 0, 600), SharedRateLimiter(two, 0, 600)
    caller = Principal("budget", ("docs",))
    first.charge_tokens(caller, 500)
    with pytest.raises(RateLimitedError) as refused:
        second.charge_tokens(caller, 200)  # 100 left of 600 a minute, 10 a second
    assert 9 <= refused.value.retry_after <= 11
    second.charge_tokens(caller, 90)
    bigger = Principal("budget", ("docs",), limits=Limits(tokens_per_minute=6000))
    first.charge_tokens(bigger, 5000)  # new limits: a full bucket
    one.sync.close()
    two.sync.close()
