"""API keys, index scopes and per-key rate limits: the key file, `rag-keys`, and HTTP behaviour.

The HTTP checks use a small app with the real dependencies of api/auth.py; the /ask wiring is
tested with the service itself.
"""

from __future__ import annotations

import json
import logging
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.auth import (
    Access,
    AdmittedDep,
    AuthMode,
    MetricsAccessDep,
    install_access_errors,
    require_read,
    require_write,
)
from ingest.keys_cli import main as keys_main
from rag.guard import RateLimitedError, RateLimiter
from rag.guard.keys import ANONYMOUS, KeyStore, KeyStoreError, Limits, Principal


class ManualClock:
    """Time that moves only when the test says so (rate limits are about time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "data" / "keys.json")


# The key file


def test_created_key_verifies_and_carries_its_scope_and_limits(keys: KeyStore) -> None:
    key = keys.create("search-ui", ["handbook", "reports"], rps=2, tokens_per_minute=5000)
    principal = keys.verify(key)
    assert principal == Principal(
        "search-ui", ("handbook", "reports"), False, False, Limits(2, 5000)
    )
    assert principal.can_read("handbook")
    assert not principal.can_read("payroll")


def test_key_file_holds_only_a_salted_hash_and_is_private(keys: KeyStore) -> None:
    key = keys.create("a", all_indexes=True)
    other = keys.create("b", all_indexes=True)
    text = keys.path.read_text()
    secret, other_secret = key.split("_", 2)[2], other.split("_", 2)[2]
    assert secret not in text
    assert other_secret not in text
    records = json.loads(text)["keys"]
    assert records[0]["salt"] != records[1]["salt"]
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600


def test_wrong_malformed_and_revoked_keys_do_not_verify(keys: KeyStore) -> None:
    key = keys.create("ci", ["docs"])
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert keys.verify(forged) is None
    assert keys.verify("rag_nothex_secret") is None
    assert keys.verify("") is None
    assert keys.verify(key) is not None
    keys.revoke("ci")
    assert keys.verify(key) is None


def test_a_revoke_by_another_process_takes_effect_without_a_restart(keys: KeyStore) -> None:
    key = keys.create("tool", ["docs"])
    assert keys.verify(key) is not None  # the service has read the file
    KeyStore(keys.path).revoke("tool")  # rag-keys, elsewhere
    assert keys.verify(key) is None
    assert not keys.has_keys()


def test_key_names_are_unique_and_scopes_valid(keys: KeyStore) -> None:
    keys.create("ui", ["docs"])
    with pytest.raises(KeyStoreError, match="exists"):
        keys.create("ui", ["docs"])
    with pytest.raises(KeyStoreError, match="not both"):
        keys.create("x", ["docs"], all_indexes=True)
    with pytest.raises(KeyStoreError, match="at least one"):
        keys.create("y")
    with pytest.raises(KeyStoreError, match="invalid index name"):
        keys.create("z", ["../etc"])
    with pytest.raises(KeyStoreError, match="no key named"):
        keys.revoke("nobody")


def test_concurrent_creates_all_land_in_the_file(keys: KeyStore) -> None:
    created: list[str] = []

    def create(i: int) -> None:
        created.append(KeyStore(keys.path).create(f"k{i}", ["d"]))  # one store per "process"

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.name for r in keys.list()) == [f"k{i}" for i in range(8)]
    assert all(keys.verify(k) is not None for k in created)


# rag-keys


def test_rag_keys_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"RAG_DATA_DIR": str(tmp_path / "data")}
    made = runner.invoke(keys_main, ["create", "ui", "--index", "handbook", "--rps", "3"], env=env)
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert KeyStore(tmp_path / "data" / "keys.json").verify(key) is not None
    listed = runner.invoke(keys_main, ["list", "--json"], env=env)
    assert json.loads(listed.stdout)["indexes"] == ["handbook"]
    assert key.split("_", 2)[2] not in listed.output
    again = runner.invoke(keys_main, ["create", "ui", "--all-indexes"], env=env)
    assert again.exit_code == 2
    assert "exists" in again.output
    assert "Traceback" not in again.output
    assert runner.invoke(keys_main, ["revoke", "ui"], env=env).exit_code == 0
    assert runner.invoke(keys_main, ["list"], env=env).stdout == ""


# Rate limits


def test_requests_over_the_rate_are_refused_with_retry_after() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rps=2, tokens_per_minute=0, clock=clock)
    limiter.check_request(ANONYMOUS)
    limiter.check_request(ANONYMOUS)
    with pytest.raises(RateLimitedError) as refused:
        limiter.check_request(ANONYMOUS)
    assert refused.value.retry_after == pytest.approx(0.5)
    assert refused.value.retry_after_header == "1"
    clock.now += 0.5
    limiter.check_request(ANONYMOUS)


def test_a_keys_own_limits_override_the_defaults_and_keys_do_not_share_buckets() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rps=1, tokens_per_minute=0, clock=clock)
    fast = Principal("fast", all_indexes=True, limits=Limits(rps=5))
    slow = Principal("slow", all_indexes=True)
    for _ in range(5):
        limiter.check_request(fast)
    limiter.check_request(slow)
    with pytest.raises(RateLimitedError):
        limiter.check_request(slow)
    with pytest.raises(RateLimitedError):
        limiter.check_request(fast)


def test_prompt_tokens_per_minute_are_charged_and_refused_before_the_engine() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rps=0, tokens_per_minute=6000, clock=clock)
    key = Principal("tool", all_indexes=True)
    limiter.check_request(key)
    limiter.charge_tokens(key, 5000)
    with pytest.raises(RateLimitedError) as refused:
        limiter.charge_tokens(key, 2000)  # 1000 left: wait for 1000 more at 100/s
    assert refused.value.retry_after == pytest.approx(10)
    clock.now += 10
    limiter.charge_tokens(key, 2000)
    with pytest.raises(RateLimitedError, match="prompt tokens per minute"):
        limiter.check_request(key)  # spent: refused before any work


def test_a_prompt_larger_than_a_minutes_budget_waits_for_a_full_bucket_then_runs() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rps=0, tokens_per_minute=600, clock=clock)
    key = Principal("long-context", all_indexes=True)
    limiter.charge_tokens(key, 100)
    with pytest.raises(RateLimitedError) as refused:
        limiter.charge_tokens(key, 3000)
    assert refused.value.retry_after == pytest.approx(10)
    clock.now += 10
    limiter.charge_tokens(key, 3000)  # admitted, leaving the key in debt for 4 minutes
    clock.now += 239
    with pytest.raises(RateLimitedError):
        limiter.check_request(key)
    clock.now += 2
    limiter.check_request(key)


def test_the_limiter_admits_exactly_its_burst_across_threads() -> None:
    limiter = RateLimiter(rps=50, tokens_per_minute=0, clock=lambda: 0.0)
    admitted: list[int] = []

    def call() -> None:
        for _ in range(20):
            try:
                limiter.check_request(ANONYMOUS)
                admitted.append(1)
            except RateLimitedError:
                pass

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 50


# HTTP


def app_with(
    keys: KeyStore, mode: AuthMode = "auto", *, metrics_public: bool = False
) -> TestClient:
    app = FastAPI()
    app.state.access = Access(keys, RateLimiter(3, 0), mode, metrics_public)
    install_access_errors(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics(_: MetricsAccessDep) -> dict[str, str]:
        return {"metrics": "here"}

    @app.post("/ask")
    async def ask(body: dict[str, str], principal: AdmittedDep) -> dict[str, str]:
        require_read(principal, body["index"])
        return {"caller": principal.name}

    @app.post("/sync")
    async def sync(body: dict[str, str], principal: AdmittedDep) -> dict[str, str]:
        require_write(principal, body["index"])
        return {"caller": principal.name}

    return TestClient(app)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_keys_in_auto_mode_anyone_may_ask(keys: KeyStore) -> None:
    client = app_with(keys)
    answered = client.post("/ask", json={"index": "docs"})
    assert answered.json() == {"caller": "anonymous"}


def test_once_a_key_exists_a_missing_or_invalid_key_gets_401(keys: KeyStore) -> None:
    key = keys.create("ui", ["docs"])
    client = app_with(keys)
    for headers in ({}, bearer(key[:-1] + "x"), {"Authorization": "Basic abc"}):
        refused = client.post("/ask", json={"index": "docs"}, headers=headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert refused.json()["error"]["type"] == "unauthenticated"
    assert client.post("/ask", json={"index": "docs"}, headers=bearer(key)).status_code == 200
    by_header = client.post("/ask", json={"index": "docs"}, headers={"X-API-Key": key})
    assert by_header.json() == {"caller": "ui"}


def test_required_mode_refuses_even_with_no_key_file(keys: KeyStore) -> None:
    client = app_with(keys, mode="required")
    assert client.post("/ask", json={"index": "docs"}).status_code == 401


def test_a_key_for_one_index_gets_403_on_another(keys: KeyStore) -> None:
    key = keys.create("ui", ["docs"])
    refused = app_with(keys).post("/ask", json={"index": "payroll"}, headers=bearer(key))
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "type": "permission_denied",
        "message": "key 'ui' may not read index 'payroll'",
    }


def test_over_the_rate_gets_429_with_retry_after(keys: KeyStore) -> None:
    key = keys.create("ui", ["docs"], rps=1)
    client = app_with(keys)
    assert client.post("/ask", json={"index": "docs"}, headers=bearer(key)).status_code == 200
    refused = client.post("/ask", json={"index": "docs"}, headers=bearer(key))
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limited"


def test_healthz_never_needs_a_key_and_metrics_only_unless_public(keys: KeyStore) -> None:
    key = keys.create("scraper", ["docs"])
    client = app_with(keys)
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(key)).status_code == 200
    assert app_with(keys, metrics_public=True).get("/metrics").status_code == 200


def test_a_revoked_key_is_refused_by_the_running_service(keys: KeyStore) -> None:
    key = keys.create("ui", ["docs"])
    keys.create("other", ["docs"])
    client = app_with(keys)
    assert client.post("/ask", json={"index": "docs"}, headers=bearer(key)).status_code == 200
    KeyStore(keys.path).revoke("ui")
    assert client.post("/ask", json={"index": "docs"}, headers=bearer(key)).status_code == 401


def test_off_mode_ignores_keys(keys: KeyStore) -> None:
    keys.create("ui", ["docs"])
    client = app_with(keys, mode="off")
    assert client.post("/ask", json={"index": "payroll"}).json() == {"caller": "anonymous"}


def test_no_key_material_reaches_any_log(keys: KeyStore, caplog: pytest.LogCaptureFixture) -> None:
    key = keys.create("ui", ["docs"], rps=1)
    caplog.set_level(logging.DEBUG)
    client = app_with(keys)
    for headers in (bearer(key), {"X-API-Key": key}, bearer(key[:-2] + "zz"), bearer(key)):
        client.post("/ask", json={"index": "docs"}, headers=headers)
        client.post("/ask", json={"index": "payroll"}, headers=headers)
    client.get("/metrics", headers=bearer(key))
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    secret = key.split("_", 2)[2]
    assert caplog.records  # the HTTP client logs each request: the check has material
    assert secret[:16] not in logged
    assert key not in logged
