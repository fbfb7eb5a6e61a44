"""Conversations over the real vLLM engine (CPU build, SmolLM2), the real MiniLM embedder and an
index of two companies' filings: a follow-up is retrieved with its conversation, its prompt
begins with the earlier turn's prompt and answer (on the token ids), and the engine reuses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.ask import Answer, AskOptions, Exchange
from rag.embed import Embedder
from rag.engine import prefix_cache_counters
from rag.store import EdgeStore
from tests.service import RunningService, index_passages

pytestmark = pytest.mark.engine

INDEX = "firms"
FIRST = "What were Apple's net sales in the third quarter of fiscal 2022?"
FOLLOW_UP = "And how did that compare with the year before?"
PASSAGES = [
    (
        "apple/2022-q3.md",
        "Apple Inc. quarterly report, third quarter of fiscal 2022. Apple's total net sales were "
        "$82,959 million for the three months ended June 25, 2022.",
    ),
    (
        "apple/2022-q3-segments.md",
        "Apple Inc. net sales by category, third quarter of fiscal 2022: iPhone $40,665 million, "
        "Mac $7,382 million, iPad $7,224 million, Services $19,604 million.",
    ),
    (
        "apple/2021-q3.md",
        "Apple Inc. quarterly report, third quarter of fiscal 2021. Apple's total net sales were "
        "$81,434 million for the three months ended June 26, 2021.",
    ),
    (
        "apple/2022-q3-mdna.md",
        "Apple Inc. management's discussion: iPhone net sales grew during the third quarter of "
        "fiscal 2022 and Services net sales reached a new record.",
    ),
    (
        "nvidia/2023-q2.md",
        "NVIDIA Corporation: revenue for the second quarter of fiscal 2023 was $6,704 million, "
        "up 3% compared with the year before.",
    ),
    (
        "nvidia/2023-q2-data-center.md",
        "NVIDIA Corporation: Data Center revenue grew 61% compared with the year before, and "
        "Gaming revenue fell 33%.",
    ),
    (
        "nvidia/2022-q2.md",
        "NVIDIA Corporation: revenue for the second quarter a year earlier was $6,507 million.",
    ),
    (
        "nvidia/2023-q2-outlook.md",
        "NVIDIA Corporation outlook: revenue is expected to be $5,900 million next quarter, "
        "lower than the year before.",
    ),
]
ASK = {"index": INDEX, "top_k": 3, "max_tokens": 32}


def index_firms(data: Path, embedder: Embedder) -> Path:
    store = EdgeStore(data)
    try:
        passages = [(source, text, 0) for source, text in PASSAGES]
        index_passages(store, INDEX, embedder, passages)
    finally:
        store.close()
    return data


@pytest.fixture(scope="module")
def firms_data(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    return index_firms(tmp_path_factory.mktemp("conversation") / "data", embedder)


def serve(data: Path, engine_url: str, **settings: Any) -> RunningService:
    from api.app import create_app
    from rag.config import Settings

    app = create_app(
        Settings(data_dir=data, index=INDEX, llm_url=engine_url, llm_timeout=60, **settings)
    )
    return RunningService(app)


@pytest.fixture(scope="module")
def firms(firms_data: Path, engine_url: str) -> Iterator[RunningService]:
    with serve(firms_data, engine_url) as running:
        yield running


def ask(service: RunningService, question: str, history: list[dict[str, str]]) -> dict[str, Any]:
    with service.client() as client:
        response = client.post("/ask", json={**ASK, "question": question, "history": history})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def companies(body: dict[str, Any]) -> list[str]:
    return [c["source"].split("/")[0] for c in body["citations"]]


def first_turn(service: RunningService) -> tuple[dict[str, Any], list[dict[str, str]]]:
    first = ask(service, FIRST, [])
    history = [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": first["answer"]},
    ]
    return first, history


def test_a_follow_up_retrieves_the_first_turns_company(firms: RunningService) -> None:
    alone = ask(firms, FOLLOW_UP, [])
    assert "nvidia" in companies(alone)  # the follow-up by itself is about someone else
    assert alone["query"] == FOLLOW_UP
    assert alone["timings"]["rewrite_ms"] == 0
    first, history = first_turn(firms)
    assert companies(first).count("apple") >= 2
    follow = ask(firms, FOLLOW_UP, history)
    assert companies(follow).count("apple") >= 2, follow["citations"]
    assert companies(follow).count("apple") > companies(alone).count("apple")
    assert follow["query"] != FOLLOW_UP
    assert follow["timings"]["rewrite_ms"] > 0
    # numbers continue: a passage new to turn 2 is 4 or more, one turn 1 quoted keeps its number
    turn_one = {c["chunk_id"]: c["n"] for c in first["citations"]}
    for citation in follow["citations"]:
        assert citation["n"] == turn_one.get(citation["chunk_id"], citation["n"])
        if citation["chunk_id"] not in turn_one:
            assert citation["n"] >= 4


def tokenize(engine_url: str, **body: Any) -> list[int]:
    """The engine's own token ids of a chat (``messages``) or a text (``prompt``)."""
    model = httpx.get(f"{engine_url}/v1/models", timeout=60).json()["data"][0]["id"]
    response = httpx.post(f"{engine_url}/tokenize", json={"model": model, **body}, timeout=60)
    response.raise_for_status()
    tokens: list[int] = response.json()["tokens"]
    return tokens


def test_turn_two_begins_with_turn_one_and_reuses_its_cache(
    firms: RunningService, engine_url: str
) -> None:
    answerer = firms.app.state.services.answerer
    asked = AskOptions(FIRST, top_k=3, index=INDEX, max_tokens=32)
    first: Answer = firms.call(answerer.answer(asked))
    history = (Exchange(FIRST, first.answer),)
    options = AskOptions(FOLLOW_UP, top_k=3, index=INDEX, max_tokens=32, history=history)
    hits_before, queries_before = prefix_cache_counters(httpx.get(f"{engine_url}/metrics").text)
    second: Answer = firms.call(answerer.answer(options))
    hits_after, queries_after = prefix_cache_counters(httpx.get(f"{engine_url}/metrics").text)

    assert second.messages[: len(first.messages)] == first.messages
    assert second.messages[len(first.messages)] == {"role": "assistant", "content": first.answer}
    ids_first = tokenize(engine_url, messages=first.messages, add_generation_prompt=True)
    ids_second = tokenize(engine_url, messages=second.messages, add_generation_prompt=True)
    answer = tokenize(engine_url, prompt=first.answer, add_special_tokens=False)
    assert ids_second[: len(ids_first) + len(answer)] == ids_first + answer
    assert second.usage.prompt_tokens == len(ids_second)
    # the engine served turn 1's prompt from its cache: all of its full blocks (128 tokens each
    # on the CPU engine) were hits
    assert queries_after > queries_before
    assert hits_after - hits_before >= (len(ids_first) // 128) * 128 > 0


def test_the_same_conversation_retrieves_the_same_passages(firms: RunningService) -> None:
    _, history = first_turn(firms)
    runs = [ask(firms, FOLLOW_UP, history) for _ in range(3)]
    assert len({str([c["chunk_id"] for c in r["citations"]]) for r in runs}) == 1
    assert len({r["query"] for r in runs}) == 1


def test_a_late_rewrite_falls_back_to_the_recent_questions(
    tmp_path: Path, embedder: Embedder, engine_url: str
) -> None:
    # its own copy of the index: the module's service holds the embedded store's lock
    data = index_firms(tmp_path / "data", embedder)
    with serve(data, engine_url, rewrite_timeout_s=0.001) as late:
        _, history = first_turn(late)
        follow = ask(late, FOLLOW_UP, history)
    assert follow["query"] == f"{FIRST}\n{FOLLOW_UP}"
    assert companies(follow).count("apple") >= 2, follow["citations"]


def test_history_over_the_limits_is_cut_not_refused(firms: RunningService) -> None:
    history = []
    for k in range(30):
        history += [
            {"role": "user", "content": f"Question {k}?"},
            {"role": "assistant", "content": f"Answer {k}."},
        ]
    history[0]["content"] = "Tell me everything. " * 2000  # a 40,000-character earlier turn
    history[-2]["content"] = "Tell me more. " * 3000  # and the newest: longer than the window
    follow = ask(firms, FOLLOW_UP, history)
    assert follow["answer"]
    assert follow["usage"]["prompt_tokens"] < 8192


def test_a_chat_completion_retrieves_with_its_earlier_messages(firms: RunningService) -> None:
    first, history = first_turn(firms)
    messages = [{"role": "system", "content": "Be brief."}, *history]
    messages.append({"role": "user", "content": FOLLOW_UP})
    body = {"model": f"rag:{INDEX}", "messages": messages, "max_tokens": 32, "top_k": 3}
    with firms.client() as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    cited = [c["source"].split("/")[0] for c in response.json()["citations"]]
    assert cited.count("apple") >= 2, cited
