"""Open WebUI 0.12.4's own requests (../shared/data/open-webui, captured in front of the service)
replayed against the real service and engine: every request answered, the chats' sources shown
in their content, its title, tags and follow-up tasks answered by the engine without the index,
and a chat with a 40,000-character earlier turn still answered."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, require_shared
from tests.service import RunningService

pytestmark = [pytest.mark.engine, pytest.mark.shared_data]

SHORT = 16  # answer tokens: Open WebUI asks up to 1000; the replay is about shapes
SOURCES = "\n\nSources:\n"


def captured() -> list[dict[str, Any]]:
    path = require_shared(SHARED_DATA / "open-webui" / "requests-0.12.4.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def replayed(body: dict[str, Any]) -> dict[str, Any]:
    """The request as sent, asked of the test index, with a short answer."""
    return {**copy.deepcopy(body), "model": "rag:docs", "max_tokens": SHORT}


def is_task(body: dict[str, Any]) -> bool:
    return str(body["messages"][-1]["content"]).startswith("### Task:")


def content_of(http: Any, body: dict[str, Any]) -> tuple[str, list[Any]]:
    """The reply's content and citations, read from JSON or from the event stream."""
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    if not body.get("stream"):
        done = response.json()
        return done["choices"][0]["message"]["content"], done["citations"]
    text, citations = "", None
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            citations = chunk["citations"] if citations is None else citations
            text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    return text, citations or []


def test_every_captured_request_is_answered_chats_with_sources_tasks_without(
    service: RunningService,
) -> None:
    requests = captured()
    with service.client() as http:
        for request in requests:
            if request["method"] == "GET":
                listed = http.get(request["path"])
                assert listed.status_code == 200
                assert "rag:docs" in [m["id"] for m in listed.json()["data"]]
                continue
            body = replayed(request["body"])
            text, citations = content_of(http, body)
            assert text.strip()
            if is_task(body):
                assert citations == [], "a task is not answered from the index"
                assert SOURCES not in text
            else:
                assert citations
                assert SOURCES in text
    chats = [r["body"] for r in requests if r["method"] == "POST" and r["body"].get("tools")]
    assert chats
    assert all(len(json.dumps(c["tools"])) > 25_000 for c in chats)  # tool definitions


@pytest.fixture(scope="module")
def patient(
    indexed: dict[str, Any], engine_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """The service with time for a whole window's prefill: ~8K tokens take the CPU engine
    30-40 s, past the default 30 s to the first token (a 503 there says the deadline holds,
    not that the long turn was refused)."""
    from api.app import create_app
    from rag.config import Settings

    data_dir = tmp_path_factory.mktemp("patient") / "data"  # the embedded store: one opener
    shutil.copytree(indexed["data_dir"], data_dir, ignore=shutil.ignore_patterns("*.lock"))
    settings = Settings(
        data_dir=data_dir,
        index="docs",
        llm_url=engine_url,
        llm_timeout=300,
        request_timeout_s=240,
    )
    with RunningService(create_app(settings)) as running:
        yield running


def test_a_chat_with_a_40000_character_earlier_turn_is_answered(
    patient: RunningService,
) -> None:
    chat = next(r["body"] for r in captured() if len(r["body"].get("messages", [])) >= 5)
    body = replayed(chat)
    long = "The quarterly figures, restated line by line. " * 870  # ~40,000 characters
    body["messages"][0]["content"] = long
    assert len(long) >= 40_000
    assert len(json.dumps(body).encode()) > 65_536  # past the general body limit
    with patient.client() as http:
        text, citations = content_of(http, body)
        assert citations
        assert SOURCES in text
        # Its tags task carries that turn in its chat history: the engine's window bounds it.
        tags = next(r["body"] for r in captured() if "tags" in str(r["body"].get("messages")))
        task = replayed(tags)
        prompt = task["messages"][-1]["content"]
        task["messages"][-1]["content"] = prompt.replace(
            "<chat_history>\n", f"<chat_history>\nUSER: {long}\n"
        )
        text, citations = content_of(http, task)
        assert text.strip()
        assert citations == []
