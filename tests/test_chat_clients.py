"""The clients teams point at the service get answers, streams and reachable citations: the
`openai` client (chat and text completions, the engine's own model), LangChain's `ChatOpenAI`
(the sources list in the content) and LlamaIndex's `OpenAILike` in chat and completion modes
(the `citations` extension on the raw response), over the real service and engine."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from tests.service import RunningService

pytestmark = pytest.mark.engine

QUESTION = "What does the zeppelin fleet expansion depend on?"
SHORT = 16
SOURCES = "\n\nSources:\n"


def base_url(running: RunningService) -> str:
    return f"{running.url}/v1"


def client_of(running: RunningService) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url(running), api_key="none", max_retries=0, timeout=300)


def extension(obj: Any, name: str) -> Any:
    return (obj.model_extra or {}).get(name)


def engine_model(running: RunningService) -> str:
    return str(running.call(running.app.state.services.engine.model_info()).id)


def test_a_model_is_retrieved_by_its_id_and_an_unknown_one_is_a_404(
    service: RunningService,
) -> None:
    client = client_of(service)
    assert client.models.retrieve("rag:docs").id == "rag:docs"
    assert client.models.retrieve(engine_model(service)).owned_by == "rag-service"
    for missing in ("rag:nowhere", "gpt-4o"):
        with pytest.raises(openai.NotFoundError) as refused:
            client.models.retrieve(missing)
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["type"] == "unknown_index"


def test_chat_content_ends_with_its_sources_by_default_and_not_when_asked_not_to(
    service: RunningService,
) -> None:
    client = client_of(service)
    ask: Any = [{"role": "user", "content": QUESTION}]
    listed = client.chat.completions.create(model="rag:docs", messages=ask, max_tokens=SHORT)
    plain = client.chat.completions.create(
        model="rag:docs", messages=ask, max_tokens=SHORT, extra_body={"sources": False}
    )
    assert SOURCES in (listed.choices[0].message.content or "")
    assert SOURCES not in (plain.choices[0].message.content or "")
    assert extension(plain, "citations")


def test_a_text_completion_answers_the_prompt_with_citations(service: RunningService) -> None:
    done = client_of(service).completions.create(
        model="rag:docs", prompt=QUESTION, max_tokens=SHORT
    )
    assert done.object == "text_completion"
    assert done.choices[0].text.strip()
    assert done.choices[0].finish_reason in ("stop", "length")
    assert any("zeppelin" in c["text"].lower() for c in extension(done, "citations"))
    assert done.usage is not None
    assert 0 < done.usage.completion_tokens <= SHORT


def test_a_streamed_text_completion_has_citations_first_and_usage_last(
    service: RunningService,
) -> None:
    chunks = list(
        client_of(service).completions.create(
            model="rag:docs",
            prompt=QUESTION,
            max_tokens=SHORT,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert extension(chunks[0], "citations")
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert SOURCES in text
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None


def test_the_engines_own_model_answers_without_retrieval(service: RunningService) -> None:
    messages: Any = [
        {"role": "system", "content": "You reply in one word."},
        {"role": "user", "content": "Say hello."},
    ]
    done = client_of(service).chat.completions.create(
        model=engine_model(service), messages=messages, max_tokens=SHORT
    )
    assert (done.choices[0].message.content or "").strip()
    assert extension(done, "citations") == []
    assert SOURCES not in (done.choices[0].message.content or "")


def test_langchain_chat_openai_shows_the_sources_in_its_content(service: RunningService) -> None:
    llm = ChatOpenAI(
        base_url=base_url(service),
        api_key="none",
        model="rag:docs",
        max_tokens=SHORT,
        max_retries=0,
    )
    reply = llm.invoke(QUESTION)
    assert isinstance(reply.content, str)
    answer, _, listed = reply.content.partition(SOURCES)
    assert answer.strip()
    assert listed.startswith("- [")
    streamed = "".join(str(chunk.content) for chunk in llm.stream(QUESTION))
    assert SOURCES in streamed


def test_llamaindex_openai_like_chat_exposes_the_citations_on_its_raw_response(
    service: RunningService,
) -> None:
    llm = OpenAILike(
        api_base=base_url(service),
        api_key="none",
        model="rag:docs",
        is_chat_model=True,
        max_tokens=SHORT,
        max_retries=0,
    )
    reply = llm.chat([ChatMessage(role="user", content=QUESTION)])
    assert SOURCES in (reply.message.content or "")
    assert extension(reply.raw, "citations")
    streamed = list(llm.stream_chat([ChatMessage(role="user", content=QUESTION)]))
    assert extension(streamed[0].raw, "citations")
    assert SOURCES in (streamed[-1].message.content or "")


def test_llamaindex_openai_like_completion_mode_calls_v1_completions(
    service: RunningService,
) -> None:
    llm = OpenAILike(
        api_base=base_url(service),
        api_key="none",
        model="rag:docs",
        is_chat_model=False,
        max_tokens=SHORT,
        max_retries=0,
    )
    done = llm.complete(QUESTION)
    assert SOURCES in done.text
    assert extension(done.raw, "citations")
    streamed = list(llm.stream_complete(QUESTION))
    assert extension(streamed[0].raw, "citations")
    assert SOURCES in streamed[-1].text
