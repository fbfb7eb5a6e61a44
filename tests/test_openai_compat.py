"""Teams already on OpenAI's API point their client at the service: the official `openai`
client lists the indexes as models and gets cited answers, whole and streamed, from the real
service over the real engine and a real index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from api.app import create_app
from rag.ask.answer import Answer, Citation, Timings, Usage
from rag.ask.chat import sources_list
from rag.config import Settings
from rag.embed import Embedder
from rag.guard import KeyStore
from tests.service import RunningService, index_corpus

pytestmark = pytest.mark.engine

QUESTION = "What does the zeppelin fleet expansion depend on?"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]
SHORT = 16  # answer tokens: the tests are about shapes, not prose


def client_of(running: RunningService, key: str = "no-key-needed") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{running.url}/v1", api_key=key, max_retries=0, timeout=300)


def extension(obj: Any, name: str) -> Any:
    """A field OpenAI's types do not declare (the client keeps it in ``model_extra``)."""
    return (obj.model_extra or {}).get(name)


def test_models_are_the_indexes_of_the_store_then_the_engines_own(
    service: RunningService,
) -> None:
    models = client_of(service).models.list()
    engine = service.call(service.app.state.services.engine.model_info()).id
    assert [m.id for m in models.data] == ["rag:docs", "rag:whole", engine]
    assert all(m.owned_by == "rag-service" and m.created > 0 for m in models.data)


def test_a_completion_has_content_citations_and_usage(service: RunningService) -> None:
    done = client_of(service).chat.completions.create(
        model="rag:docs", messages=ASK, max_tokens=SHORT
    )
    assert done.object == "chat.completion"
    assert done.model == "rag:docs"
    choice = done.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    citations = extension(done, "citations")
    assert citations
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1))
    assert any("zeppelin" in c["text"].lower() for c in citations)
    assert done.usage is not None
    assert done.usage.prompt_tokens > 0
    assert 0 < done.usage.completion_tokens <= SHORT
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_a_stream_has_citations_first_text_then_a_finish_and_usage_last(
    service: RunningService,
) -> None:
    stream = client_of(service).chat.completions.create(
        model="rag:docs",
        messages=ASK,
        max_tokens=SHORT,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first, last = chunks[0], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert extension(first, "citations"), "the first chunk carries the citations"
    assert all(extension(c, "citations") is None for c in chunks[1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    assert not any(finishes[:-1])
    assert last.choices == []
    assert last.usage is not None
    assert 0 < last.usage.completion_tokens <= SHORT
    assert all(c.usage is None for c in chunks[:-1])


def test_a_stream_without_include_usage_has_no_usage_chunk(service: RunningService) -> None:
    stream = client_of(service).chat.completions.create(
        model="rag:docs", messages=ASK, max_tokens=4, stream=True
    )
    chunks = list(stream)
    assert chunks[-1].choices
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.usage is None for c in chunks)


def test_max_completion_tokens_bounds_the_answer_and_wins_over_max_tokens(
    service: RunningService,
) -> None:
    done = client_of(service).chat.completions.create(
        model="rag:docs", messages=ASK, max_completion_tokens=3, max_tokens=64, temperature=0.7
    )
    assert done.usage is not None
    assert 0 < done.usage.completion_tokens <= 3  # a greedy answer runs past 60 tokens
    finish = done.choices[0].finish_reason
    assert finish == ("length" if done.usage.completion_tokens == 3 else "stop")


def test_the_last_user_message_is_the_question(service: RunningService) -> None:
    """A client's system message is no question and retrieves nothing; the last user message,
    in parts or not, is what is asked (earlier turns are its history: test_conversation.py)."""
    client = client_of(service)
    alone = client.chat.completions.create(model="rag:docs", messages=ASK, max_tokens=1)
    chat: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Answer in French. Where is the coffee machine?"},
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
    ]
    after = client.chat.completions.create(model="rag:docs", messages=chat, max_tokens=1)
    cited = [[c["chunk_id"] for c in extension(d, "citations")] for d in (alone, after)]
    assert cited[0] == cited[1]


def test_with_sources_a_streamed_content_ends_with_its_passages(service: RunningService) -> None:
    stream = client_of(service).chat.completions.create(
        model="rag:docs", messages=ASK, max_tokens=SHORT, stream=True, extra_body={"sources": True}
    )
    chunks = list(stream)
    citations = {c["n"]: c for c in extension(chunks[0], "citations")}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    answer, _, listed = text.partition("\n\nSources:\n")
    assert answer.strip()
    lines = listed.splitlines()
    assert lines
    for line in lines:
        n = int(line.removeprefix("- [").partition("]")[0])
        assert line.startswith(f"- [{n}] {citations[n]['source']}")


def citation(n: int, source: str, page: int | None, heading: list[str]) -> Citation:
    return Citation(n, source, page, f"id-{n}", 0.5, "text", 0, 4, heading)


def test_sources_lists_the_passages_the_marks_cite_or_all_of_them_without_marks() -> None:
    citations = [
        citation(1, "handbook.md", None, ["Handbook", "Travel"]),
        citation(2, "reports/q1.pdf", 3, []),
        citation(3, "notes.txt", None, []),
    ]
    cited = Answer("Flights are booked early [3][1]. See [9].", citations, Usage(), Timings(), "m")
    assert sources_list(cited) == (
        "\n\nSources:\n- [1] handbook.md (Handbook > Travel)\n- [3] notes.txt"
    )
    unmarked = Answer("Flights are booked early.", citations, Usage(), Timings(), "m")
    assert sources_list(unmarked) == (
        "\n\nSources:\n- [1] handbook.md (Handbook > Travel)\n- [2] reports/q1.pdf, page 3"
        "\n- [3] notes.txt"
    )
    assert sources_list(Answer("Nothing to answer from.", [], Usage(), Timings(), "m")) == ""


def test_a_model_that_is_no_index_is_a_404(service: RunningService) -> None:
    client = client_of(service)
    refusals = [("rag:nowhere", "'nowhere'"), ("gpt-4o", "/v1/models"), ("rag:../x", "/v1/models")]
    for model, said in refusals:
        with pytest.raises(openai.NotFoundError) as refused:
            client.chat.completions.create(model=model, messages=ASK, max_tokens=SHORT)
        error = refused.value.body  # the envelope's "error", as the client reads OpenAI's
        assert isinstance(error, dict)
        assert error["type"] == "unknown_index"
        assert said in error["message"]


@pytest.mark.parametrize(
    ("messages", "extra"),
    [
        ([{"role": "system", "content": "You are terse."}], {}),  # nothing asked
        ([{"role": "user", "content": "  \n "}], {}),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], {}),
        (ASK, {"n": 2}),
        (ASK, {"max_tokens": 0}),
        (ASK, {"temperature": 3}),
    ],
)
def test_a_bad_request_is_a_422_in_the_error_envelope(
    service: RunningService, messages: list[ChatCompletionMessageParam], extra: dict[str, Any]
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client_of(service).chat.completions.create(
            model="rag:docs", messages=messages, extra_body=extra
        )
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["type"] == "invalid_request"


def test_more_answer_tokens_than_half_the_window_is_a_422(service: RunningService) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="half the engine"):
        client_of(service).chat.completions.create(model="rag:docs", messages=ASK, max_tokens=5000)


@pytest.fixture(scope="module")
def scoped(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, engine_url: str
) -> Iterator[tuple[RunningService, str]]:
    """Indexes "team-a" and "team-b", a key that reads team-a only, and the service."""
    base: Path = tmp_path_factory.mktemp("openai-keys")
    index_corpus(base, embedder, "team-a")
    data = index_corpus(base, embedder, "team-b")
    key = KeyStore(data / "keys.json").create("team-a-chat", ["team-a"])
    settings = Settings(data_dir=data, index="team-a", llm_url=engine_url, llm_timeout=60)
    with RunningService(create_app(settings)) as running:
        yield running, key


def test_a_key_sees_and_asks_only_the_models_of_its_indexes(
    scoped: tuple[RunningService, str],
) -> None:
    running, key = scoped
    client = client_of(running, key)
    assert [m.id for m in client.models.list().data][:-1] == ["rag:team-a"]  # then the engine
    done = client.chat.completions.create(model="rag:team-a", messages=ASK, max_tokens=4)
    assert extension(done, "citations")
    with pytest.raises(openai.PermissionDeniedError, match="team-b"):
        client.chat.completions.create(model="rag:team-b", messages=ASK, max_tokens=4)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="rag:team-b", messages=ASK, stream=True)


def test_without_a_valid_key_the_client_gets_a_401(scoped: tuple[RunningService, str]) -> None:
    running, _ = scoped
    with pytest.raises(openai.AuthenticationError):
        client_of(running, "rag_0123456789ab_not-a-real-secret").models.list()
    with pytest.raises(openai.AuthenticationError):
        client_of(running).chat.completions.create(model="rag:team-a", messages=ASK)


def test_the_document_bounds_the_chat_answer_length_by_the_engines_window(
    service: RunningService,
) -> None:
    client_of(service).chat.completions.create(model="rag:docs", messages=ASK, max_tokens=1)
    with service.client() as http:
        document = http.get("/openapi.json").json()
    request = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    for name in ("max_tokens", "max_completion_tokens"):
        assert {"type": "integer", "maximum": 4096, "minimum": 1} in request[name]["anyOf"]
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "text/event-stream" in chat["200"]["content"]
    assert {"401", "403", "404", "422", "429", "503"} <= set(chat)
