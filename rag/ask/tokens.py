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

from rag.ask.special_tokens import KNOWN_ADDED_TOKENS
from rag.engine import EngineClient, Message


class TokenCounter(Protocol):
    async def count_chat(self, messages: list[Message]) -> int: ...

    async def count_text(self, text: str) -> int: ...

    async def count_texts(self, texts: Sequence[str]) -> list[int]: ...

    def special_tokens(self) -> frozenset[str]:
        """The tokenizer's special and added tokens, which quoted text must not spell."""
        ...


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

    def special_tokens(self) -> frozenset[str]:
        """The engine lists none (vLLM serves no such route): the served models' known ones."""
        return KNOWN_ADDED_TOKENS


class LocalTokenCounter:
    """The served model's tokenizer and chat template, in-process, off the event loop."""

    def __init__(self, tokenizer: str | Path, *, chat_template: str | None = None) -> None:
        """``chat_template`` replaces the tokenizer's own (as the engine's ``--chat-template``)."""
        from transformers import AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer))
        if chat_template is not None:
            self._tokenizer.chat_template = chat_template
        self._backend: Any = self._tokenizer.backend_tokenizer

    def special_tokens(self) -> frozenset[str]:
        """Every added token of the tokenizer (special or not: Qwen3's ``<think>`` is not
        special, yet one token) and its named special tokens."""
        added = {t.content for t in self._backend.get_added_tokens_decoder().values()}
        return frozenset(added | {str(t) for t in self._tokenizer.all_special_tokens})

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
