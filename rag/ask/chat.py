"""OpenAI's chat-completions shape over ``Answerer``: a chat in, a completion or its chunks out.

Each request is one question: the text of the last ``user`` message; the ``user`` and
``assistant`` messages before it are its conversation (``AskOptions.history``: the question is
retrieved with them and laid out after them, see rag/ask/conversation.py). ``system``,
``developer`` and ``tool`` messages are ignored, for retrieval and for the prompt alike: the
answer comes from the passages under the service's own fixed system prompt (its prefix is
cached by the engine, and a caller's system message cannot loosen its rules).

A model is an index: ``rag:<index>``. Citations travel in the extension field ``citations``
(the same objects as ``/ask``'s) of a completion and of the first chunk of a stream, as the
``[n]`` marks the model writes into the content and, when asked for (``sources``), as a list of
the cited passages at the end of the content, for chat UIs that show nothing else.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Protocol

from rag.ask.answer import Answer, AskEvent, AskOptions, Citation, CitationsEvent, DoneEvent
from rag.ask.conversation import SOURCES_MARK, exchanges_from
from rag.errors import IndexNotFoundError, RagError
from rag.indexes import IndexMeta, check_index_name
from rag.store import VectorStore

MODEL_PREFIX = "rag:"
OWNER = "rag-service"


class Turn(Protocol):
    """One message of the chat, as far as answering needs it."""

    @property
    def role(self) -> str: ...

    def text(self) -> str: ...


def model_id(index: str) -> str:
    return f"{MODEL_PREFIX}{index}"


def index_of(model: str) -> str:
    """The index a model names; IndexNotFoundError (404) for anything but ``rag:<index>``."""
    name = model.removeprefix(MODEL_PREFIX)
    try:
        if name == model:
            raise ValueError(model)
        return check_index_name(name)
    except ValueError:
        raise IndexNotFoundError(
            f"model {model!r} does not exist: models are 'rag:<index>' (GET /v1/models lists them)"
        ) from None


def model_card(meta: IndexMeta) -> dict[str, Any]:
    """An entry of ``GET /v1/models``: created is when the index was."""
    return {
        "id": model_id(meta.name),
        "object": "model",
        "created": _unix(meta.created_at),
        "owned_by": OWNER,
    }


def _unix(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return 0


def question_of(turns: Sequence[Turn]) -> str:
    """The last user message's text (the protocol guarantees there is one, with text)."""
    for turn in reversed(turns):
        if turn.role == "user":
            return turn.text().strip()
    raise ValueError("the chat has no user message")


class QuestionTooLongError(RagError):
    """The question (the last user message) is longer than the service answers from the index;
    earlier turns may be of any length."""


def check_question(question: str, max_chars: int) -> str:
    """``question`` when it is at most ``max_chars`` long; QuestionTooLongError (413) if not."""
    if len(question) > max_chars:
        raise QuestionTooLongError(
            f"the question (the last user message) is {len(question)} characters long: at most "
            f"{max_chars} are answered from the index"
        )
    return question


def chat_options(turns: Sequence[Turn], *, model: str, defaults: AskOptions) -> AskOptions:
    """/ask's options for the chat: its last user message, asked of the index ``model`` names,
    with the user and assistant messages before it as its history."""
    last = max((i for i, turn in enumerate(turns) if turn.role == "user"), default=0)
    history = exchanges_from((turn.role, turn.text()) for turn in turns[:last])
    return replace(
        defaults, question=question_of(turns), index=index_of(model), history=tuple(history)
    )


def index_model_card(store: VectorStore, model: str) -> dict[str, Any]:
    """``GET /v1/models/{model}`` of a ``rag:<index>`` model; IndexNotFoundError (404) when it
    names no index of the store."""
    meta = store.get_meta(index_of(model))
    if meta is None:
        raise IndexNotFoundError(f"model {model!r} does not exist (GET /v1/models lists them)")
    return model_card(meta)


def model_cards(store: VectorStore, readable: Callable[[str], bool]) -> list[dict[str, Any]]:
    """``GET /v1/models``: one model per index of the store that ``readable`` lets through."""
    metas = (store.get_meta(name) for name in sorted(store.list_indexes()) if readable(name))
    return [model_card(meta) for meta in metas if meta is not None]


@dataclass(frozen=True)
class Completion:
    """One completion's objects: its id, creation time and model are on each of them.

    ``include_usage``: a stream ends with OpenAI's usage chunk. ``sources``: the content ends
    with a list of the passages its ``[n]`` marks cite, for clients that show only the content.
    """

    OBJECT: ClassVar[str] = "chat.completion"
    CHUNK: ClassVar[str] = "chat.completion.chunk"

    model: str
    include_usage: bool = False
    sources: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, answer: Answer) -> dict[str, Any]:
        """The ``chat.completion`` object of a non-streamed answer."""
        return {
            **self._head(self.OBJECT),
            "choices": [self._choice(self.content(answer), _finish(answer))],
            "usage": usage(answer),
            "citations": _citations(answer.citations),
        }

    def content(self, answer: Answer) -> str:
        return answer.answer + (sources_list(answer) if self.sources else "")

    def _choice(self, content: str, finish: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": content}
        return {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}

    def chunks(self, event: AskEvent) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects one answer event becomes."""
        if isinstance(event, CitationsEvent):
            first = self._chunk({"role": "assistant", "content": ""})
            return [{**first, "citations": _citations(event.citations)}]
        if not isinstance(event, DoneEvent):
            return [self._chunk({"content": event.text})]
        listed = sources_list(event.answer) if self.sources else ""
        last = [self._chunk({"content": listed})] if listed else []
        last.append(self._chunk({}, _finish(event.answer)))
        if self.include_usage:  # OpenAI's usage chunk: no choices, after the finish_reason
            last.append({**self._head(self.CHUNK), "choices": []})
            last[-1]["usage"] = usage(event.answer)
        return last

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = {**self._head(self.CHUNK), "choices": [self._delta_choice(delta, finish)]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _delta_choice(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}


_MARK = re.compile(r"\[(\d{1,3})\]")


def sources_list(answer: Answer) -> str:
    """``Sources:`` and a line per passage the answer's ``[n]`` marks cite; every passage of
    the prompt when it has no mark (small models seldom write them); empty without passages."""
    marks = {int(n) for n in _MARK.findall(answer.answer)}
    cited = [c for c in answer.citations if c.n in marks] or answer.citations
    return SOURCES_MARK + "\n".join(map(_source_line, cited)) if cited else ""


def _source_line(citation: Citation) -> str:
    where = citation.source + (f", page {citation.page}" if citation.page is not None else "")
    where += f", {citation.location}" if citation.location else ""
    where += " (OCR)" if citation.ocr else ""
    heading = " > ".join(citation.heading)
    return f"- [{citation.n}] {where}" + (f" ({heading})" if heading else "")


def usage(answer: Answer) -> dict[str, int]:
    u = answer.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def _finish(answer: Answer) -> str:
    """The engine's reason; a canned answer (nothing to answer from) stopped on its own."""
    return answer.finish_reason or "stop"


def _citations(citations: Sequence[Citation]) -> list[dict[str, Any]]:
    return [asdict(c) for c in citations]
