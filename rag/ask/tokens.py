"""Counting prompt tokens with the served model's own tokenizer.

Two ways, same counts: the engine's ``/tokenize`` (always available, one HTTP round trip per
count), or the served model's Hugging Face tokenizer and chat template loaded in-process (when
its folder is at hand, as for the managed engine, or named by ``RAG_LLM_TOKENIZER``). Never
another model's tokenizer. In-process counting runs in a worker thread, never on the event loop;
many texts are counted in one batch (the Rust tokenizer spreads it over the cores).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from rag.engine import EngineClient, Message


class TokenCounter(Protocol):
    async def count_chat(self, messages: list[Message]) -> int: ...

    async def count_text(self, text: str) -> int: ...

    async def count_texts(self, texts: Sequence[str]) -> list[int]: ...


class EngineTokenCounter:
    """Counts through the engine's ``/tokenize`` (chat template applied by the engine)."""

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine

    async def count_chat(self, messages: list[Message]) -> int:
        return await self.engine.count_chat_tokens(messages)

    async def count_text(self, text: str) -> int:
        return await self.engine.count_tokens(text)

    async def count_texts(self, texts: Sequence[str]) -> list[int]:
        return list(await asyncio.gather(*(self.engine.count_tokens(t) for t in texts)))


class LocalTokenCounter:
    """The served model's tokenizer and chat template, in-process, off the event loop."""

    def __init__(self, tokenizer: str | Path, *, chat_template: str | None = None) -> None:
        """``chat_template`` replaces the tokenizer's own (as the engine's ``--chat-template``)."""
        from transformers import AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer))
        if chat_template is not None:
            self._tokenizer.chat_template = chat_template
        self._backend: Any = self._tokenizer.backend_tokenizer

    def count_chat_now(self, messages: list[Message]) -> int:
        """Blocking: the whole chat prompt's tokens, template applied (call from a thread)."""
        ids = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return len(ids)

    def count_texts_now(self, texts: Sequence[str]) -> list[int]:
        """Blocking: each text's tokens, no special tokens added, in one batch (from a thread)."""
        if not texts:
            return []
        encoded = self._backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encoded]

    async def count_chat(self, messages: list[Message]) -> int:
        return await asyncio.to_thread(self.count_chat_now, messages)

    async def count_text(self, text: str) -> int:
        return (await self.count_texts([text]))[0]

    async def count_texts(self, texts: Sequence[str]) -> list[int]:
        return await asyncio.to_thread(self.count_texts_now, texts)
