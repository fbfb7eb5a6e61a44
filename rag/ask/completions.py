"""OpenAI's (legacy) text-completions shape over the same answers: the prompt is the question.

Completion-style clients (LlamaIndex's ``OpenAILike`` by default, LangChain's ``OpenAI``) call
``/v1/completions``; the answer is the one a chat completion with the prompt as its only user
message gets, as a ``text_completion`` object or its chunks, with the same ``citations``
extension and ``sources`` list.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rag.ask.chat import Completion


@dataclass(frozen=True)
class TextCompletion(Completion):
    """A ``text_completion`` and its chunks: ``choices[0].text`` where a chat has a message."""

    OBJECT: ClassVar[str] = "text_completion"
    CHUNK: ClassVar[str] = "text_completion"  # OpenAI names its chunks as the whole object

    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")

    def _choice(self, content: str, finish: str) -> dict[str, Any]:
        return {"index": 0, "text": content, "finish_reason": finish, "logprobs": None}

    def _delta_choice(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        text = delta.get("content", "")
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
