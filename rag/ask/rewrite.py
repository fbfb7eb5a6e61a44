"""A follow-up's standalone query: written by the engine, or made without it when that fails.

"And how did that compare with the year before?" retrieves nothing of the company it is about.
So a turn with earlier turns before it is retrieved with a standalone form of its question: the
engine rewrites it from the recent turns, under a fixed prompt of its own (a short generation at
temperature 0 with its own deadline; a turn without history is never rewritten). The rewrite is
searched together with the engine-free fallback query (the recent user questions before the new
one), their rankings fused, so a weak rewrite cannot lose the conversation's subject. When the
rewrite fails, is late or is no usable query (empty, too long, the question repeated, or none
of the question's own terms kept: an answer rather than a query), the fallback alone is searched.

Outcomes are remembered by what the rewrite was shown (the late and failed ones too), so the
same conversation always retrieves the same passages on a replica, and an earlier turn rebuilt
for a later request (rag/ask/conversation.py) is retrieved as it was when it was asked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rag.ask.conversation import Exchange
from rag.ask.special_tokens import DEFAULT_NEUTRALISER, Neutraliser
from rag.engine import EngineClient, Message

log = logging.getLogger("rag.rewrite")

REWRITE_PROMPT = (
    "You turn the last question of a conversation into one standalone search query. Resolve "
    "every pronoun and reference (it, that, they, the year before, the same company) from the "
    "conversation, keep names, figures, dates and periods, add nothing else. Reply with the "
    "query alone on one line, no quotes, no explanation."
)
MAX_QUERY_CHARS = 400  # a longer reply is no query
CONTEXT_QUESTIONS = 2  # earlier user questions in the fallback query
REWRITE_ANSWER_CHARS = 600  # of each earlier answer, in the rewrite's prompt


@dataclass(frozen=True)
class Standalone:
    """What a turn is retrieved with: ``queries`` (their rankings fused when more than one),
    and how the first came about."""

    queries: tuple[str, ...]
    how: Literal["question", "rewrite", "fallback"]

    @property
    def query(self) -> str:
        return self.queries[0]


def context_query(earlier: Sequence[Exchange], question: str) -> str:
    """The question after the recent user questions: what a follow-up means without an engine
    (their words weigh in the dense and the sparse query alike)."""
    recent = [e.question for e in earlier[-CONTEXT_QUESTIONS:]]
    return "\n".join([*recent, question])


def clean_rewrite(text: str) -> str | None:
    """The query line of a rewrite, or None when it is no usable query."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    query = lines[0]
    for prefix in ("standalone query:", "search query:", "query:"):
        if query.lower().startswith(prefix):
            query = query[len(prefix) :].strip()
    query = query.strip("\"'` ")
    if not query or len(query) > MAX_QUERY_CHARS:
        return None
    return query


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in text.casefold()).split()


def _same(query: str, question: str) -> bool:
    return _words(query) == _words(question)


# Words that carry no subject of a question: a rewrite may drop or rephrase them all.
_FUNCTION_WORDS = (
    "a about after again all also an and any are as at be been before being but by can could "
    "did do does doing for from had has have how i if in into is it its me more most my no not "
    "of on or our so some such than that the their them then there these they this those to "
    "too us very was we were what when where which while who whom why will with would you your "
    "tell say said anything something well"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
STEM = 5  # characters compared: "compare" keeps "compared", "buybacks" "buyback"


def keeps_the_question(query: str, question: str) -> bool:
    """Whether ``query`` is a rewrite of ``question``: it keeps at least one of the question's
    own terms (a rewrite resolves references around them). A reply that shares none, such as an
    answer ("The answer is 1.7 billion."), is no rewrite; a question of function words only
    ("And then?") has no terms to keep."""
    terms = {w[:STEM] for w in _words(question) if w not in FUNCTION_WORDS and len(w) > 2}
    return not terms or bool(terms & {w[:STEM] for w in _words(query)})


class QueryRewriter:
    """Standalone queries for follow-ups, written by the engine, remembered by conversation."""

    def __init__(
        self,
        engine: EngineClient,
        *,
        timeout_s: float = 5.0,
        max_tokens: int = 48,
        recent_turns: int = 3,
        cache_size: int = 4096,
        neutraliser: Neutraliser = DEFAULT_NEUTRALISER,
    ) -> None:
        """``timeout_s``: the rewrite's own deadline (0: never rewrite, always the fallback);
        ``recent_turns``: the earlier exchanges its prompt shows."""
        self.engine = engine
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.recent_turns = recent_turns
        self.neutraliser = neutraliser
        self.cache_size = cache_size
        self._outcomes: OrderedDict[str, str | None] = OrderedDict()
        self._pending: dict[str, asyncio.Future[str | None]] = {}

    async def standalones(self, exchanges: Sequence[Exchange], question: str) -> list[Standalone]:
        """Each turn's standalone query: the earlier ones' (as they were asked), then the new
        one's; rewritten concurrently, each under the deadline."""
        questions = [*(e.question for e in exchanges), question]
        return list(
            await asyncio.gather(
                *(self.standalone(exchanges[:k], q) for k, q in enumerate(questions))
            )
        )

    async def standalone(self, earlier: Sequence[Exchange], question: str) -> Standalone:
        if not earlier:
            return Standalone((question,), "question")
        context = context_query(earlier, question)
        rewritten = await self._outcome(self.messages(earlier, question))
        if rewritten is None or _same(rewritten, question):  # an echo resolves nothing
            return Standalone((context,), "fallback")
        if not keeps_the_question(rewritten, question):  # an answer, or another question
            return Standalone((context,), "fallback")
        return Standalone((rewritten, context), "rewrite")

    def messages(self, earlier: Sequence[Exchange], question: str) -> list[Message]:
        """The rewrite's own prompt: its fixed instructions, the recent turns, the question."""
        text = self.neutraliser
        lines = []
        for e in earlier[-self.recent_turns :]:
            lines.append(f"User: {text(e.question)}")
            if e.answer:
                answer = " ".join(e.answer.split())
                cut = "…" if len(answer) > REWRITE_ANSWER_CHARS else ""
                lines.append(f"Assistant: {text(answer[:REWRITE_ANSWER_CHARS])}{cut}")
        lines.append(f"Last question: {text(question)}")
        return [
            {"role": "system", "content": REWRITE_PROMPT},
            {"role": "user", "content": "\n".join(lines) + "\nStandalone query:"},
        ]

    async def _outcome(self, messages: list[Message]) -> str | None:
        """The remembered outcome for this prompt, or the engine's (one request for concurrent
        asks of the same conversation; a caller that goes away leaves it to finish)."""
        key = hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()
        if key in self._outcomes:
            self._outcomes.move_to_end(key)
            return self._outcomes[key]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._rewrite(messages))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._remember(key, done))
        return await asyncio.shield(pending)

    def _remember(self, key: str, done: asyncio.Future[str | None]) -> None:
        self._pending.pop(key, None)
        if done.cancelled() or done.exception() is not None or not self.cache_size:
            return
        self._outcomes[key] = done.result()
        while len(self._outcomes) > self.cache_size:
            self._outcomes.popitem(last=False)

    async def _rewrite(self, messages: list[Message]) -> str | None:
        if self.timeout_s <= 0:
            return None
        started = time.perf_counter()
        try:
            done = await asyncio.wait_for(
                self.engine.chat(messages, max_tokens=self.max_tokens, temperature=0.0),
                self.timeout_s,
            )
        except Exception as exc:  # late, refused or down: the fallback needs no engine
            log.info("query rewrite not used (%s): the fallback query", type(exc).__name__)
            return None
        query = clean_rewrite(done.text)
        log.debug("rewrote in %.0f ms: %r", (time.perf_counter() - started) * 1000, query)
        return query
