"""Chats the engine answers itself, without retrieval: its own model, and chat UIs' helper tasks.

Chat UIs use a model of their connection as their *task model*: the chat's title, its tags and
follow-up suggestions are asked of it in prompts of their own (Open WebUI's start with
``### Task:``). Answered from the index, such a prompt retrieves passages about nothing and the
reply is junk (tags ``tag1, tag2``). So the engine's own model is offered beside the ``rag:``
models, and these requests (to it, or recognisably tasks sent to a ``rag:`` model) go to the
engine as they are: the caller's messages, a system message included since no document is
quoted, bounded to the window (the oldest turns dropped first, then the middle of the last
message cut). Same admission, deadline, rate limits and accounting as every ask.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.ask.answer import (
    Answer,
    Answerer,
    AskEvent,
    AskOptions,
    Charge,
    DoneEvent,
    OutputTooLongError,
    Timings,
    Usage,
    final_answer,
    max_output_bound,
)
from rag.ask.chat import OWNER, Turn
from rag.ask.prompt import FittedPrompt, PromptTooLongError
from rag.engine import Message
from rag.errors import RagError

# Open WebUI's task prompts (title, tags, follow-ups, search queries, autocompletion...) all
# begin with this line.
TASK_PREFIX = "### Task:"
# Where the middle of a message too long for the window was cut.
CUT_MARK = "\n[…]\n"
# Roles passed to the engine, and what they become there (a developer message is a system one).
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
CUT_ATTEMPTS = 6


def is_task(turns: Sequence[Turn]) -> bool:
    """A chat UI's helper request (Open WebUI's title, tags, follow-ups...): the last user
    message is a task prompt, ``### Task:`` first."""
    last = next((t for t in reversed(turns) if t.role == "user"), None)
    return last is not None and last.text().lstrip().startswith(TASK_PREFIX)


def engine_messages(turns: Sequence[Turn]) -> list[Message]:
    """The chat as the engine takes it: system, user and assistant turns with text (a developer
    message is a system one); tool results and empty turns are left out."""
    kept = ((ROLES.get(t.role), t.text()) for t in turns)
    return [{"role": role, "content": text} for role, text in kept if role and text.strip()]


@dataclass(frozen=True)
class DirectOptions:
    """A chat for the engine: its messages, the answer's length and sampling, its deadline."""

    messages: list[Message]
    max_tokens: int = 512
    temperature: float = 0.0
    timeout_s: float | None = None

    def ask_options(self) -> AskOptions:
        """What admission and the engine read of an ask (no index, no passages)."""
        last = next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")
        return AskOptions(
            question=last,
            top_k=1,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            timeout_s=self.timeout_s,
        )


@dataclass
class DirectChat:
    """The engine's own model, through ``answerer``'s engine, token counter and admission."""

    answerer: Answerer
    created: int = field(default_factory=lambda: int(time.time()))

    async def model_id(self) -> str | None:
        """The served model's name; None while the engine cannot say."""
        engine = self.answerer.engine
        info = engine.known_model_info
        if info is None:
            try:
                info = await engine.model_info()
            except RagError:
                return None
        return info.id

    async def model_card(self) -> dict[str, Any] | None:
        """Its entry of ``GET /v1/models`` (created: when the service started)."""
        served = await self.model_id()
        if served is None:
            return None
        return {"id": served, "object": "model", "created": self.created, "owned_by": OWNER}

    async def serves(self, model: str) -> bool:
        return model == await self.model_id()

    async def fit(self, messages: list[Message], max_tokens: int) -> FittedPrompt:
        """The newest turns that fit the window beside ``max_tokens``, the leading system
        messages always; when the last turn alone is too long, the middle of its text is cut."""
        budget = self.answerer.budget
        engine_window = (await self.answerer.engine.model_info()).max_model_len
        if max_tokens > max_output_bound(engine_window):
            raise OutputTooLongError(
                f"max_tokens: at most {max_output_bound(engine_window)} (half the engine's "
                f"{engine_window}-token window; the rest holds the chat)"
            )
        window = await budget.max_model_len()
        room = window - max_tokens
        neutralised = [{**m, "content": budget.neutraliser(m["content"])} for m in messages]
        lead = 0
        while lead < len(neutralised) - 1 and neutralised[lead]["role"] == "system":
            lead += 1
        system, turns = neutralised[:lead], neutralised[lead:]

        async def count(dropped: int) -> int:
            return await budget.counter.count_chat(system + turns[dropped:])

        used = await count(0)
        if used > room and len(turns) > 1:  # the fewest oldest turns dropped for the rest to fit
            low, high = 1, len(turns) - 1
            while low < high:
                middle = (low + high) // 2
                if await count(middle) <= room:
                    high = middle
                else:
                    low = middle + 1
            turns = turns[low:]
            used = await budget.counter.count_chat(system + turns)
        if used > room:
            turns[-1], used = await self._cut(system, turns[-1], room, window, max_tokens)
        return FittedPrompt(system + turns, [], used, window)

    async def _cut(
        self, system: list[Message], last: Message, room: int, window: int, max_tokens: int
    ) -> tuple[Message, int]:
        """``last`` with the middle of its text cut so that the chat fits ``room`` tokens."""
        counter = self.answerer.budget.counter
        empty = {**last, "content": CUT_MARK}
        base = await counter.count_chat([*system, empty])
        if base >= room:
            raise PromptTooLongError(
                f"the chat's system messages need {base} prompt tokens; the {window}-token "
                f"window has {max_tokens} reserved for the answer"
            )
        whole = last["content"]
        text, keep = whole, len(whole)
        for _ in range(CUT_ATTEMPTS):
            used = await counter.count_chat([*system, {**last, "content": text}])
            if used <= room:
                return {**last, "content": text}, used
            # Characters scaled by the tokens over, with a margin: the next count decides.
            keep = int(keep * (room - base) / max(used - base, 1) * 0.9)
            text = whole[: (keep + 1) // 2] + CUT_MARK + whole[len(whole) - keep // 2 :]
        raise PromptTooLongError(f"the chat's last message does not fit the {window}-token window")

    async def stream(
        self, options: DirectOptions, *, charge: Charge | None = None
    ) -> AsyncIterator[AskEvent]:
        """As ``Answerer.stream``, with no passages: an empty citations event once the engine
        has accepted the request, the text, then ``done``."""
        started = time.perf_counter()
        answerer = self.answerer
        ask = options.ask_options()
        admission = answerer.admission
        deadline = admission.deadline(ask.timeout_s) if admission else None  # 422 first
        timings = Timings()
        fitted = await self.fit(options.messages, options.max_tokens)
        timings.prompt_ms = (time.perf_counter() - started) * 1000
        model = (await answerer.engine.model_info()).id
        answer = Answer("", [], Usage(), timings, model, messages=fitted.messages)
        generated = answerer.generate(
            fitted, answer, ask, deadline=deadline, started=started, charge=charge
        )
        async with contextlib.aclosing(generated):  # leaving early aborts the engine request
            async for event in generated:
                yield event
        timings.total_ms = (time.perf_counter() - started) * 1000
        yield DoneEvent(answer)

    async def answer(self, options: DirectOptions, *, charge: Charge | None = None) -> Answer:
        return await final_answer(self.stream(options, charge=charge))
