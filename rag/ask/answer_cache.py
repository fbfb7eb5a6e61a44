"""The answer cache: an ask identical to an earlier one is answered from Redis, without the
engine (``timings.cached``; ``RAG_ANSWER_CACHE``, off by default, needs ``RAG_REDIS_URL``).

Identical means the same index at the same generation (rag/shared/generations.py: every sync,
upload and delete bumps it, so no answer outlives a change of its index), the same question,
earlier turns, filters and options, the same model and the same retrieval and prompt settings
(``salt``). Only greedy answers (temperature 0) that ended normally are kept, for ``ttl_s``.
A cached answer takes no prompt tokens from the key's budget (it costs the engine nothing) and
still counts as a request. While Redis is away every ask goes to the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from rag.ask.answer import (
    Answer,
    Answerer,
    AskEvent,
    AskOptions,
    Charge,
    Citation,
    CitationsEvent,
    DoneEvent,
    Timings,
    TokenEvent,
    Usage,
    final_answer,
)
from rag.ask.prompt import PassageOrder
from rag.shared import IndexGenerations, SharedState, SharedStateDown

log = logging.getLogger("rag.ask")

FINISHED = ("stop", "length")


def ask_key(options: AskOptions, generation: int, model: str, salt: str) -> str:
    """The cache key of an ask: a digest of everything its answer depends on."""
    flt = options.filter
    body = {
        "index": options.index,
        "generation": generation,
        "model": model,
        "salt": salt,
        "question": options.question,
        "history": [[e.question, e.answer] for e in options.history],
        "top_k": options.top_k,
        "max_tokens": options.max_tokens,
        "filter": [
            flt.path_prefix,
            list(flt.file_types),
            flt.modified_after,
            flt.modified_before,
            list(flt.roots),
        ],
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f"answer:{options.index}:{digest}"


def _encode(answer: Answer) -> str:
    return json.dumps(
        {
            "answer": answer.answer,
            "citations": [asdict(c) for c in answer.citations],
            "usage": asdict(answer.usage),
            "model": answer.model,
            "finish_reason": answer.finish_reason,
            "notice": answer.notice,
            "query": answer.query,
        }
    )


def _decode(raw: str, timings: Timings) -> Answer:
    data: dict[str, Any] = json.loads(raw)
    return Answer(
        answer=data["answer"],
        citations=[Citation(**c) for c in data["citations"]],
        usage=Usage(**data["usage"]),
        timings=timings,
        model=data["model"],
        finish_reason=data["finish_reason"],
        notice=data["notice"],
        query=data["query"],
    )


class AnswerCache:
    def __init__(
        self, shared: SharedState, generations: IndexGenerations, *, ttl_s: float, salt: str = ""
    ) -> None:
        self.shared = shared
        self.generations = generations
        self.ttl_s = ttl_s
        self.salt = salt

    @staticmethod
    def cacheable(options: AskOptions) -> bool:
        return options.temperature == 0

    async def key(self, options: AskOptions, model: str) -> str | None:
        """The ask's key at its index's current generation; None while Redis is away."""
        try:
            generation = await self.generations.current(options.index)
        except SharedStateDown:
            return None
        return self.shared.key(ask_key(options, generation, model, self.salt))

    async def get(self, key: str, timings: Timings) -> Answer | None:
        try:
            raw = await self.shared.acall(lambda c: c.get(key))
        except SharedStateDown:
            return None
        if raw is None:
            return None
        try:
            return _decode(str(raw), timings)
        except (ValueError, KeyError, TypeError):
            log.warning("answer cache: an unreadable entry was dropped")
            return None

    async def put(self, key: str, answer: Answer) -> None:
        if answer.citations and answer.finish_reason not in FINISHED:
            return  # cut short (an engine error, a client gone): not an answer to keep
        with contextlib.suppress(SharedStateDown):
            await self.shared.acall(lambda c: c.set(key, _encode(answer), ex=int(self.ttl_s)))


class CachedAnswers:
    """``Answerer.stream``/``answer`` through the answer cache."""

    def __init__(self, answerer: Answerer, cache: AnswerCache) -> None:
        self.answerer = answerer
        self.cache = cache

    async def stream(
        self,
        options: AskOptions,
        *,
        order: PassageOrder | None = None,
        charge: Charge | None = None,
    ) -> AsyncIterator[AskEvent]:
        started = time.perf_counter()
        key = None
        if self.cache.cacheable(options):
            model = (await self.answerer.engine.model_info()).id
            key = await self.cache.key(options, model)
        if key is not None:
            timings = Timings(cached=True)
            cached = await self.cache.get(key, timings)
            if cached is not None:
                timings.total_ms = timings.ttft_ms = (time.perf_counter() - started) * 1000
                yield CitationsEvent(cached.citations, cached.model, cached.notice)
                yield TokenEvent(cached.answer)
                yield DoneEvent(cached)
                return
        events = self.answerer.stream(options, order=order, charge=charge)
        async with contextlib.aclosing(events):  # type: ignore[type-var]  # leaving aborts it
            async for event in events:
                if isinstance(event, DoneEvent) and key is not None:
                    await self.cache.put(key, event.answer)
                yield event

    async def answer(
        self,
        options: AskOptions,
        *,
        order: PassageOrder | None = None,
        charge: Charge | None = None,
    ) -> Answer:
        return await final_answer(self.stream(options, order=order, charge=charge))


Answers = Answerer | CachedAnswers  # what the routes ask: the answerer, through the cache or not
