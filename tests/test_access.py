"""A service several teams share: keys scoped to indexes, per-key rates, no key in any log, and
the same question always citing the same passages. Real engine, real index, real service."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from rag.config import Settings
from rag.embed import Embedder
from rag.guard import KeyStore
from tests.asking import readme_curl_asks, run_curl_line
from tests.service import RunningService, index_two_teams

pytestmark = pytest.mark.engine
QUESTION = {"question": "What does the zeppelin fleet expansion depend on?", "max_tokens": 4}


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[tuple[RunningService, dict[str, str]]]:
    """Two teams' indexes, a key for each, an admin key with a tight rate, and the service."""
    data = index_two_teams(tmp_path_factory.mktemp("shared"), embedder)
    keys = KeyStore(data / "keys.json")
    issued = {
        "a": keys.create("team-a-tool", ["team-a"]),
        "b": keys.create("team-b-tool", ["team-b"]),
        "slow": keys.create("batch-job", all_indexes=True, rps=0.05),
    }
    settings = Settings(data_dir=data, index="team-a", llm_url=engine_url, llm_timeout=60)
    with RunningService(create_app(settings)) as running:
        yield running, issued


def ask(running: RunningService, key: str | None, **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with running.client() as client:
        return client.post("/ask", json={**QUESTION, **body}, headers=headers)


def test_no_key_gets_401_once_keys_exist(shared: tuple[RunningService, dict[str, str]]) -> None:
    running, _ = shared
    response = ask(running, None)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthenticated"
    assert ask(running, "rag_0123456789ab_not-a-real-secret").status_code == 401


def test_a_key_reads_its_own_index_and_gets_403_on_another(
    shared: tuple[RunningService, dict[str, str]],
) -> None:
    running, keys = shared
    assert ask(running, keys["a"], index="team-a").status_code == 200
    denied = ask(running, keys["a"], index="team-b")
    assert denied.status_code == 403
    assert "team-b" in denied.json()["error"]["message"]
    with running.client() as client:
        sent = client.post(
            "/ask", json={**QUESTION, "index": "team-b"}, headers={"X-API-Key": keys["b"]}
        )
    assert sent.status_code == 200


def test_over_its_rate_a_key_gets_429_with_retry_after(
    shared: tuple[RunningService, dict[str, str]],
) -> None:
    running, keys = shared
    assert ask(running, keys["slow"], index="team-b").status_code == 200
    over = ask(running, keys["slow"], index="team-b")
    assert over.status_code == 429
    assert int(over.headers["retry-after"]) >= 1
    assert ask(running, keys["b"], index="team-b").status_code == 200  # other keys go on


def test_no_key_material_reaches_the_logs(
    shared: tuple[RunningService, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    running, keys = shared
    caplog.set_level(logging.DEBUG)
    for key in keys.values():
        ask(running, key, index="team-a")
        ask(running, key[:-3] + "xyz", index="team-a")
    with running.client() as client:
        client.get("/metrics", headers={"Authorization": f"Bearer {keys['a']}"})
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert caplog.records
    for key in keys.values():
        assert key not in logged
        assert key.split("_", 2)[2][:12] not in logged


QUESTIONS = [
    "What does the zeppelin fleet expansion depend on?",
    "How should receipts be submitted?",
    "Where is the coffee machine?",
    "Which items ship from warehouse 3?",
    "What is the travel budget?",
    "Who makes the kettle?",
    "How long are returns accepted for the amber lantern?",
    "What is the catalogue number of the jade compass?",
    "Which report covers revenue growth?",
    "How many engineers were hired?",
    "What did the ingestion service do overnight?",
    "How are laptops protected?",
    "When was the cobalt satchel introduced?",
    "What does the parking memo say?",
    "Which warehouse ships the slate barometer?",
    "How heavy is the crimson sextant?",
    "What is inspected twice?",
    "Where are lost devices reported?",
    "How many offices opened?",
    "Which supplier guarantees spare parts?",
]


def test_the_same_question_cites_the_same_passages_every_time(service: RunningService) -> None:
    """20 questions asked 3 times each in hybrid mode: identical citation lists."""

    def citations(question: str) -> list[tuple[str, str]]:
        with service.client() as client:
            body = {"question": question, "top_k": 8, "max_tokens": 1}
            response = client.post("/ask", json=body)
        assert response.status_code == 200, response.text
        return [(c["chunk_id"], c["source"]) for c in response.json()["citations"]]

    for question in QUESTIONS:
        first = citations(question)
        assert first
        assert citations(question) == first
        assert citations(question) == first


def test_the_keys_file_holds_no_key(shared: tuple[RunningService, dict[str, str]]) -> None:
    running, keys = shared
    text = Path(running.app.state.settings.data_dir / "keys.json").read_text()
    for key in keys.values():
        assert key.split("_", 2)[2] not in text


def test_the_readme_curl_lines_work_with_a_real_key(
    shared: tuple[RunningService, dict[str, str]],
) -> None:
    running, keys = shared
    lines = [line for line in readme_curl_asks() if "RAG_API_KEY" in line]
    assert len(lines) >= 2
    for key, expected in ((keys["a"], "200"), ("", "401")):
        for line in lines:
            body, status = run_curl_line(line, running.port, key)
            assert status == expected, body[-300:]
