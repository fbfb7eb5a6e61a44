"""Answering a question: retrieve, fit the prompt, ask the engine, return cited passages.

The engine is always called in streaming mode, so time-to-first-token is measured for whole
answers too; a streaming caller gets the events as they happen: ``citations`` first (the
passages in the prompt, numbered as the model sees them), then ``token`` deltas, then ``done``.
A question with earlier turns (``AskOptions.history``) is a follow-up: retrieved with its
standalone query (rag/ask/rewrite.py) and laid out after the rebuilt earlier turns
(rag/ask/conversation.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from rag.ask.conversation import (
    Exchange,
    HistoryLimits,
    Layout,
    Queries,
    cut_history,
    fit_conversation,
)
from rag.ask.prompt import FittedPrompt, PassageOrder, PromptBudget
from rag.ask.retrieval import Retriever
from rag.ask.rewrite import QueryRewriter
from rag.engine import Delta, EngineClient
from rag.errors import IndexNotFoundError, RagError
from rag.guard import AdmissionController, before
from rag.ingest import document_path
from rag.store import Hit, SearchFilter

NO_PASSAGES = "No passage in the index matches the question, so there is nothing to answer from."
NO_FILTERED_PASSAGES = "No passage matches the filters, so there is nothing to answer from."
# top_k "auto": one candidate per this many tokens of the window at first (passages of the
# default 200-token chunks take ~250), twice as many while every candidate fits, up to the cap.
AUTO_TOKENS_PER_CANDIDATE = 200
AUTO_MAX_CANDIDATES = 50_000


class OutputTooLongError(RagError):
    """More answer tokens asked for than half the engine's window (the rest is the prompt's)."""


def max_output_bound(max_model_len: int) -> int:
    """The most answer tokens an ask may reserve: half the window, the other half for passages."""
    return max_model_len // 2


@dataclass(frozen=True)
class AskOptions:
    question: str
    top_k: int | Literal["auto"] = 5
    index: str = "default"
    filter: SearchFilter = SearchFilter()
    max_tokens: int = 512
    temperature: float = 0.0
    timeout_s: float | None = None  # to the first token, waiting included; None: the default
    history: tuple[Exchange, ...] = ()  # the earlier turns (cut to the answerer's limits)


@dataclass(frozen=True)
class Citation:
    n: int
    source: str
    page: int | None
    chunk_id: str
    score: float
    text: str
    char_start: int
    char_end: int
    heading: list[str]
    member: str | None = None  # the path inside an archive or mail; ``source`` ends with it
    location: str | None = None  # "slide 3", "sheet Budget, rows 2–40", "footnotes"
    ocr: bool = False  # text recognised from a scan or an image

    @classmethod
    def from_hit(cls, n: int, hit: Hit) -> Citation:
        p = hit.payload
        return cls(
            n=n,
            source=document_path(p),
            page=p.get("page"),
            chunk_id=hit.id,
            score=round(hit.score, 6),
            text=str(p.get("text", "")),
            char_start=int(p.get("char_start", 0)),
            char_end=int(p.get("char_end", 0)),
            heading=list(p.get("heading") or []),
            member=p.get("member") or None,
            location=p.get("location") or None,
            ocr=bool(p.get("ocr")),
        )


@dataclass
class Timings:
    embed_ms: float = 0.0
    search_ms: float = 0.0
    rerank_ms: float = 0.0
    rewrite_ms: float = 0.0  # a follow-up's standalone queries (rag/ask/rewrite.py)
    prompt_ms: float = 0.0  # fitting, and rebuilding a conversation's earlier turns
    queue_ms: float = 0.0  # waiting for admission (rag/guard/admission.py)
    ttft_ms: float | None = None
    total_ms: float = 0.0
    cached: bool = False  # answered from the answer cache (rag/ask/answer_cache.py)

    def rounded(self) -> dict[str, float | bool | None]:
        return {
            k: v if v is None or isinstance(v, bool) else round(v, 2)
            for k, v in asdict(self).items()
        }


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Answer:
    answer: str
    citations: list[Citation]
    usage: Usage
    timings: Timings
    model: str
    finish_reason: str | None = None
    notice: str | None = None  # why there is nothing to answer from, when that is the case
    query: str = ""  # what the passages were retrieved with: the question, or its standalone form
    messages: list[dict[str, str]] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class CitationsEvent:
    citations: list[Citation]
    model: str
    notice: str | None = None


def filter_notice(flt: SearchFilter) -> str:
    """Says which filter left nothing, and how ``path_prefix`` matches (whole names only)."""
    parts = []
    if flt.path_prefix:
        parts.append(
            f"path_prefix {flt.path_prefix!r} (it matches whole folder or file names relative "
            "to the ingested folder, e.g. 'reports' or 'reports/q1.pdf', not the start of a name)"
        )
    if flt.file_types:
        parts.append(f"file_types {list(flt.file_types)}")
    if flt.modified_after is not None or flt.modified_before is not None:
        parts.append("the modified_after/modified_before range")
    return "no passage of the index matches the filters: " + "; ".join(parts)


@dataclass(frozen=True)
class TokenEvent:
    text: str


@dataclass(frozen=True)
class DoneEvent:
    answer: Answer


AskEvent = CitationsEvent | TokenEvent | DoneEvent


# Told the prompt's tokens once the ask is admitted, before the engine is asked: an ask refused
# (503) or left with no passage costs the key nothing; raising refuses it before the first byte.
Charge = Callable[[int], None]
# An admitted ask's deadline bounds its wait for the engine (a 503), the engine client's read
# timeout only past it: the read timeout is stretched to the deadline plus this much.
DEADLINE_GRACE_S = 2.0


class Answerer:
    def __init__(
        self,
        retriever: Retriever,
        budget: PromptBudget,
        engine: EngineClient,
        *,
        passage_order: PassageOrder = "canonical",
        admission: AdmissionController | None = None,
        rewriter: QueryRewriter | None = None,
        history_limits: HistoryLimits | None = None,
    ) -> None:
        self.retriever = retriever
        self.budget = budget
        self.engine = engine
        self.passage_order = passage_order
        self.admission = admission  # None: every ask goes to the engine at once, no deadline
        self.rewriter = rewriter or QueryRewriter(engine, neutraliser=budget.neutraliser)
        self.history_limits = history_limits or HistoryLimits()

    async def prepare(
        self,
        options: AskOptions,
        timings: Timings,
        order: PassageOrder | None = None,
    ) -> FittedPrompt:
        """Retrieve and fit the prompt without asking the engine for an answer."""
        store = self.retriever.store
        window = (await self.engine.model_info()).max_model_len
        if options.max_tokens > max_output_bound(window):
            raise OutputTooLongError(
                f"max_tokens: at most {max_output_bound(window)} (half the engine's "
                f"{window}-token window; the rest holds the question and the passages)"
            )
        if await asyncio.to_thread(store.get_meta, options.index) is None:
            raise IndexNotFoundError(f"index {options.index!r} does not exist")
        history = cut_history(options.history, self.history_limits)
        if not history:
            query = (options.question,)
            return await self._fit_turn(options, query, options.question, Layout(), timings, order)
        started = time.perf_counter()
        standalones = await self.rewriter.standalones(history, options.question)
        timings.rewrite_ms = (time.perf_counter() - started) * 1000

        async def fit_turn(queries: Queries, question: str, layout: Layout) -> FittedPrompt:
            return await self._fit_turn(options, queries, question, layout, timings, order)

        started = time.perf_counter()
        fitted = await fit_conversation(
            history,
            options.question,
            [s.queries for s in standalones],
            fit_turn,
            fill=options.top_k == "auto",
        )
        spent = (time.perf_counter() - started) * 1000  # the new turn's retrieval, the rest
        timings.prompt_ms = spent - timings.embed_ms - timings.search_ms - timings.rerank_ms
        return fitted

    async def _fit_turn(
        self,
        options: AskOptions,
        queries: Queries,
        question: str,
        layout: Layout,
        timings: Timings,
        order: PassageOrder | None,
    ) -> FittedPrompt:
        """One turn retrieved with ``queries`` and fitted after the earlier turns: the passages
        they quote already are cited with their numbers there, not repeated."""
        auto = options.top_k == "auto"
        if auto:  # enough candidates to fill the window planned for; more while all fit
            limit = max(10, await self.budget.max_model_len() // AUTO_TOKENS_PER_CANDIDATE)
        else:
            limit = int(options.top_k)
        quoted = layout.quoted()
        prior = layout.messages(self.budget.neutraliser) if layout.turns else []
        while True:
            found = await self.retriever.aretrieve_all(
                options.index, queries, limit, options.filter
            )
            timings.embed_ms, timings.search_ms = found.embed_ms, found.search_ms
            timings.rerank_ms = found.rerank_ms
            fresh = [hit for hit in found.hits if hit.id not in quoted]
            t = time.perf_counter()
            fitted = await self.budget.fit(
                question,
                fresh,
                limit=None if auto else limit,
                max_output_tokens=options.max_tokens,
                order=order or self.passage_order,
                prior=prior,
                first=layout.next,
            )
            timings.prompt_ms = (time.perf_counter() - t) * 1000
            if not (auto and fitted.took_all and len(found.hits) == limit < AUTO_MAX_CANDIDATES):
                break
            limit = min(2 * limit, AUTO_MAX_CANDIDATES)
        reused = tuple((quoted[hit.id], hit) for hit in found.hits if hit.id in quoted)
        return replace(fitted, reused=reused, query=queries[0])

    async def stream(
        self,
        options: AskOptions,
        *,
        order: PassageOrder | None = None,
        charge: Charge | None = None,
    ) -> AsyncIterator[AskEvent]:
        started = time.perf_counter()
        admission = self.admission
        long_context = options.top_k == "auto"
        deadline = (  # 422 first
            admission.deadline(options.timeout_s, long_context=long_context) if admission else None
        )
        timings = Timings()
        fitted = await self.prepare(options, timings, order)
        model = (await self.engine.model_info()).id
        citations = [Citation.from_hit(n, h) for n, h in fitted.numbered()]
        answer = Answer("", citations, Usage(), timings, model, messages=fitted.messages)
        answer.query = fitted.query or options.question
        if not citations:
            filtered = not options.filter.is_empty()
            answer.notice = filter_notice(options.filter) if filtered else None
            answer.answer = NO_FILTERED_PASSAGES if filtered else NO_PASSAGES
            yield CitationsEvent(citations, model, answer.notice)
            yield TokenEvent(answer.answer)
        else:
            generated = self.generate(
                fitted, answer, options, deadline=deadline, started=started, charge=charge
            )
            async with contextlib.aclosing(generated):  # leaving early aborts the engine request
                async for event in generated:
                    yield event
        timings.total_ms = (time.perf_counter() - started) * 1000
        yield DoneEvent(answer)

    async def generate(
        self,
        fitted: FittedPrompt,
        answer: Answer,
        options: AskOptions,
        *,
        deadline: float | None,
        started: float,
        charge: Charge | None = None,
    ) -> AsyncGenerator[AskEvent, None]:
        """The engine's answer to a fitted prompt, under admission: the citations event once the
        engine has accepted the request (refusals come before it), then the text. Fills in
        ``answer`` (text, usage, finish reason) and its timings; closing it aborts the request."""
        parts: list[str] = []
        timings = answer.timings
        deltas = self._deltas(fitted, options, deadline, timings, charge)
        async with contextlib.aclosing(deltas):  # leaving early aborts the engine request
            await anext(deltas)  # the engine accepted the request: refusals come before a byte
            yield CitationsEvent(answer.citations, answer.model)
            async for delta in deltas:
                if delta.text:
                    if timings.ttft_ms is None:
                        timings.ttft_ms = (time.perf_counter() - started) * 1000
                    parts.append(delta.text)
                    yield TokenEvent(delta.text)
                if delta.prompt_tokens is not None:
                    answer.usage = Usage(delta.prompt_tokens, delta.completion_tokens or 0)
                    answer.finish_reason = delta.finish_reason
        answer.answer = "".join(parts)

    async def _deltas(
        self,
        fitted: FittedPrompt,
        options: AskOptions,
        deadline: float | None,
        timings: Timings,
        charge: Charge | None,
    ) -> AsyncGenerator[Delta, None]:
        """The engine's deltas, under an admission reservation when there is a controller; the
        engine's acceptance and the first text then come by the deadline or the ask is refused."""
        admission = self.admission
        read_timeout = None
        async with contextlib.AsyncExitStack() as held:
            if admission is not None and deadline is not None:
                reserve = fitted.prompt_tokens + options.max_tokens
                ticket = await held.enter_async_context(admission.hold(reserve, deadline))
                timings.queue_ms = ticket.waited_s * 1000
                read_timeout = deadline - asyncio.get_running_loop().time() + DEADLINE_GRACE_S
            if charge is not None:
                charge(fitted.prompt_tokens)
            deltas = self.engine.stream_chat(
                fitted.messages,
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                read_timeout=read_timeout,
            )
            await held.enter_async_context(contextlib.aclosing(deltas))  # aborts on leaving
            waiting = True  # for the first text, which the deadline bounds
            while True:
                try:
                    pending = anext(deltas)
                    delta = await (before(deadline, pending, admission) if waiting else pending)
                except StopAsyncIteration:
                    return
                waiting = waiting and not delta.text
                yield delta

    async def answer(
        self,
        options: AskOptions,
        *,
        order: PassageOrder | None = None,
        charge: Charge | None = None,
    ) -> Answer:
        return await final_answer(self.stream(options, order=order, charge=charge))


async def final_answer(events: AsyncIterator[AskEvent]) -> Answer:
    """The answer a stream of events ends with (the stream is closed)."""
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, DoneEvent):
                return event.answer
    raise RuntimeError("the answer stream ended without a done event")


def answer_json(answer: Answer) -> dict[str, Any]:
    return {
        "answer": answer.answer,
        "citations": [asdict(c) for c in answer.citations],
        "usage": asdict(answer.usage),
        "timings": answer.timings.rounded(),
        "model": answer.model,
        "finish_reason": answer.finish_reason,
        "notice": answer.notice,
        "query": answer.query,
    }
