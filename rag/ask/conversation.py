"""Conversations: the earlier turns a client sends, cut to bounds, laid out for the prefix cache.

Nothing is kept between requests: the client sends the conversation so far (``/ask``'s
``history``, or a chat's messages), and each earlier turn's passages are rebuilt by running its
own (deterministic) retrieval and fit again, in order, exactly as that turn was built when it was
asked. The prompt of turn N is then

    system prompt
    user:      passages of turn 1 (numbered 1..a), question 1
    assistant: answer 1
    user:      the passages of turn 2 not quoted before (numbered a+1..b), question 2
    ...
    user:      the new turn's new passages (numbered on), its question

so it begins, byte for byte and token for token, with turn N-1's prompt and answer, and the
engine's prefix cache holds all of it but the new turn. A passage an earlier turn quoted is not
repeated: it keeps its number, which the new turn cites too. When the conversation does not fit
the window, the oldest turns' passages go first (their questions and answers stay, and numbers do
not shift), then the oldest turns themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from rag.ask.prompt import FittedPrompt, NoPassageFitsError, PromptTooLongError, user_content
from rag.ask.special_tokens import DEFAULT_NEUTRALISER, Neutraliser
from rag.engine import Message
from rag.store import Hit

# What the OpenAI-compatible route appends to an answer for chat UIs (rag/ask/chat.py): the
# engine never wrote it, so it is cut from earlier answers before they go back into a prompt.
SOURCES_MARK = "\n\nSources:\n"


@dataclass(frozen=True)
class Exchange:
    """An earlier turn as the client sends it: a question and the answer it got."""

    question: str
    answer: str

    @property
    def chars(self) -> int:
        return len(self.question) + len(self.answer)


@dataclass(frozen=True)
class HistoryLimits:
    """How much of a conversation is used: its last ``max_turns`` exchanges, and of those the
    newest that together hold at most ``max_chars`` characters. More is cut (oldest first),
    never refused."""

    max_turns: int = 20
    max_chars: int = 32_000


def exchanges_from(turns: Iterable[tuple[str, str]]) -> list[Exchange]:
    """(role, text) messages before the question as exchanges: each user message with the
    assistant message after it. Other roles play no part, a question left unanswered is kept with
    an empty answer, an answer without a question is dropped, and the sources list this service
    appends to answers for chat UIs is cut off."""
    exchanges: list[Exchange] = []
    pending: str | None = None
    for role, text in turns:
        if role == "user":
            if pending is not None:
                exchanges.append(Exchange(pending, ""))
            pending = text.strip()
        elif role == "assistant" and pending is not None:
            exchanges.append(Exchange(pending, text.split(SOURCES_MARK, 1)[0].strip()))
            pending = None
    if pending is not None:
        exchanges.append(Exchange(pending, ""))
    return [e for e in exchanges if e.question]


def cut_history(exchanges: Sequence[Exchange], limits: HistoryLimits) -> list[Exchange]:
    """The exchanges within ``limits``: the oldest go first; the newest alone over the character
    bound keeps its question's start and as much of its answer as is left."""
    kept = list(exchanges[-limits.max_turns :]) if limits.max_turns else []
    while kept and sum(e.chars for e in kept) > limits.max_chars:
        if len(kept) == 1:
            question = kept[0].question[: limits.max_chars]
            answer = kept[0].answer[: limits.max_chars - len(question)]
            return [Exchange(question, answer)]
        kept.pop(0)
    return kept


@dataclass(frozen=True)
class PromptTurn:
    """An earlier turn as the prompt holds it: the passages it quoted (numbered from ``first``;
    empty once dropped for room), its question and its answer."""

    question: str
    answer: str
    passages: tuple[Hit, ...]
    first: int


@dataclass
class Layout:
    """The earlier turns of a conversation, as the next turn's prompt lays them out."""

    turns: list[PromptTurn] = field(default_factory=list)
    next: int = 1  # the number of the next new passage: numbers never shift when turns shrink

    def messages(self, neutraliser: Neutraliser = DEFAULT_NEUTRALISER) -> list[Message]:
        """The turns after the system prompt: each its passages and question, then its answer
        (neutralised too: a client's history may spell what no passage may)."""
        messages: list[Message] = []
        for turn in self.turns:
            content = user_content(turn.passages, turn.question, neutraliser, turn.first)
            messages.append({"role": "user", "content": content})
            messages.append({"role": "assistant", "content": neutraliser(turn.answer)})
        return messages

    def quoted(self) -> dict[str, int]:
        """Each passage the turns still quote (by chunk id) and its number."""
        return {
            hit.id: n
            for turn in self.turns
            for n, hit in enumerate(turn.passages, start=turn.first)
        }

    def add(self, exchange: Exchange, fitted: FittedPrompt) -> None:
        """The turn ``fitted`` was built for, answered: laid out after the others."""
        self.turns.append(
            PromptTurn(exchange.question, exchange.answer, tuple(fitted.passages), fitted.first)
        )
        self.next = fitted.first + len(fitted.passages)

    def drop_passages(self) -> bool:
        """Drops the oldest turn's passages that are still laid out; False when none are."""
        for i, turn in enumerate(self.turns):
            if turn.passages:
                self.turns[i] = PromptTurn(turn.question, turn.answer, (), turn.first)
                return True
        return False

    def make_room(self) -> bool:
        """Drops the oldest passages, else the oldest turn; False when nothing is left."""
        if self.drop_passages():
            return True
        if self.turns:
            self.turns.pop(0)
            return True
        return False


# Retrieves a turn with its queries (fused when several; see rag/ask/rewrite.py) and fits it
# after the layout: the answerer's own single-turn path (its top_k, filters, window planning),
# so every turn is built alike.
Queries = tuple[str, ...]
FitTurn = Callable[[Queries, str, Layout], Awaitable[FittedPrompt]]


async def fit_conversation(
    exchanges: Sequence[Exchange],
    question: str,
    queries: Sequence[Queries],
    fit_turn: FitTurn,
    *,
    fill: bool,
) -> FittedPrompt:
    """The new turn fitted after the earlier ones, each rebuilt in order as it was built.
    ``queries``: what each turn (the earlier ones, then the new one) is retrieved with.
    ``fill``: the turn fills the window (top_k "auto"), so that not all its candidates fit is no
    reason to drop earlier passages."""
    if len(queries) != len(exchanges) + 1:
        raise ValueError("one query per turn, the new one included")
    layout = Layout()
    for exchange, turn_queries in zip(exchanges, queries, strict=False):
        try:
            fitted = await _fit_with_room(fit_turn, turn_queries, exchange.question, layout, fill)
        except (PromptTooLongError, NoPassageFitsError):
            continue  # a turn that does not fit even alone is left out, never an error
        layout.add(exchange, fitted)
    return await _fit_with_room(fit_turn, queries[-1], question, layout, fill)


async def _fit_with_room(
    fit_turn: FitTurn, queries: Queries, question: str, layout: Layout, fill: bool
) -> FittedPrompt:
    """The turn fitted after ``layout``, which makes room while the turn does not fit: the
    oldest passages go first, then, while not even the question (or one passage) fits, the
    oldest turns."""
    while True:
        try:
            fitted = await fit_turn(queries, question, layout)
        except (PromptTooLongError, NoPassageFitsError):
            if not layout.make_room():
                raise
            continue
        if fill or fitted.took_all or not layout.drop_passages():
            return fitted
