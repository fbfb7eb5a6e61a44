"""Counting prompt tokens with the served model's own tokenizer.

Two ways, same counts: the engine's ``/tokenize`` (always available, one HTTP round trip per
count), or the served model's Hugging Face tokenizer and chat template loaded in-process (when
its folder is at hand, as for the managed engine, or named by ``RAG_LLM_TOKENIZER``). Never
another model's tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from rag.llm import EngineClient, Message


class TokenCounter(Protocol):
    async def count_chat(self, messages: list[Message]) -> int: ...

    async def count_text(self, text: str) -> int: ...


class EngineTokenCounter:
    """Counts through the engine's ``/tokenize`` (chat template applied by the engine)."""

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine

    async def count_chat(self, messages: list[Message]) -> int:
        return await self.engine.count_chat_tokens(messages)

    async def count_text(self, text: str) -> int:
        return await self.engine.count_tokens(text)


class LocalTokenCounter:
    """The served model's tokenizer and chat template, in-process (microseconds a count)."""

    def __init__(self, tokenizer: str | Path) -> None:
        from transformers import AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer))

    async def count_chat(self, messages: list[Message]) -> int:
        ids = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return len(ids)

    async def count_text(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
