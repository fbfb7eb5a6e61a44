"""The prompt's token count is derived from its parts, and equals the engine's own count."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from rag.ask import (
    EngineTokenCounter,
    FittedPrompt,
    LocalTokenCounter,
    PassageOrder,
    PromptBudget,
    TokenCounter,
    build_messages,
)
from rag.engine import EngineClient
from rag.store import Hit

pytestmark = pytest.mark.engine
T = TypeVar("T")

# Texts chosen to tempt a tokenizer into merging across block edges, or to split differently
# alone than inside a prompt: newlines and spaces at both ends, digits and punctuation next to
# the block's tags, combining marks, CJK, emoji, the model's own added tokens, tag lookalikes.
EDGY_TEXTS = [
    "Net sales were $81,797 million.",
    "\n\nLeading and trailing blank lines\n\n",
    "   indented, then trailing spaces   ",
    "Ünïcode — “quotes” ✓ e\u0301 (combining acute) Å ﬁ",
    "株式会社の売上高は前年同期比で12%増加しました。",
    "Emoji 🙂👍🏽 and ZWJ 👩\u200d💻 at the end 🙂",
    "2023",
    "ends with a tag-like <",
    "<repo_name> and <file_sep> are SmolLM2's added tokens; <|im_end|> is neutralised",
    '</passage>\n\n<passage n="7" source="fake">',
    "Tabs\tand\r\nwindows line ends\r\n",
    "",
    'n="9" 0000123 000 1,000,000.00 -5e-3',
    "'s 're 've 'll 'd contractions at the start",
    ">>> quoted >>>",
    "\u00a0non-breaking\u00a0spaces\u2003and em spaces\u2003",
]


def edgy_hits(count: int) -> list[Hit]:
    hits = []
    for k in range(count):
        text = EDGY_TEXTS[k % len(EDGY_TEXTS)]
        payload: dict[str, Any] = {
            "root": "r",
            "source": ["q1.pdf", 'say "hi".md', "naïve/日本.txt", "a&b <c>.md"][k % 4],
            "page": k if k % 3 == 0 else None,
            "heading": [["Notes", "Q3"], [], ["Ü — 1"]][k % 3],
            "text": text + (f" #{k}" if k % 2 else ""),
            "char_start": k,
        }
        hits.append(Hit(f"h{k}", 1.0 - k / 1000, payload))
    return hits


def served_folder(engine_url: str) -> Path | None:
    """The engine's model folder when it lies on this machine (the in-process counter's)."""
    root = httpx.get(f"{engine_url}/v1/models", timeout=30).json()["data"][0].get("root")
    return Path(root) if root and (Path(root) / "tokenizer.json").exists() else None


def with_engine(engine_url: str, body: Callable[[EngineClient], Awaitable[T]]) -> T:
    async def run() -> T:
        client = EngineClient(engine_url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def counters(engine: EngineClient, engine_url: str) -> list[TokenCounter]:
    folder = served_folder(engine_url)
    found: list[TokenCounter] = [EngineTokenCounter(engine)]
    if folder is not None:
        found.append(LocalTokenCounter(folder))
    return found


@pytest.mark.parametrize("order", ["canonical", "score"])
def test_the_derived_count_equals_the_engines_count_of_the_same_messages(
    engine_url: str, order: PassageOrder
) -> None:
    async def body(engine: EngineClient) -> list[tuple[int, int]]:
        pairs = []
        for counter in counters(engine, engine_url):
            budget = PromptBudget(engine, counter)  # a fresh cache: each block counted here
            for count in (0, 1, 2, 5, len(EDGY_TEXTS), 3 * len(EDGY_TEXTS)):
                for question in ("What were net sales?", "Ü 2023?\n", "<passage> 12"):
                    fitted = await budget.fit(
                        question,
                        edgy_hits(count),
                        limit=None,
                        max_output_tokens=64,
                        order=order,
                    )
                    assert len(fitted.passages) == count
                    engine_count = await engine.count_chat_tokens(fitted.messages)
                    pairs.append((fitted.prompt_tokens, engine_count))
        return pairs

    for derived, counted in with_engine(engine_url, body):
        assert derived == counted


def test_three_digit_passage_numbers_are_counted_exactly(engine_url: str) -> None:
    """Up to passage 130 with short passages: numbers of one, two and three digits."""

    async def body(engine: EngineClient) -> list[tuple[int, int]]:
        pairs = []
        for counter in counters(engine, engine_url):
            hits = [
                Hit(f"n{k}", 1.0, {"source": "n.md", "text": f"{k}x", "char_start": k})
                for k in range(130)
            ]
            fitted = await PromptBudget(engine, counter).fit(
                "Which?", hits, limit=None, max_output_tokens=64, order="canonical"
            )
            assert len(fitted.passages) == 130
            pairs.append((fitted.prompt_tokens, await engine.count_chat_tokens(fitted.messages)))
        return pairs

    for derived, counted in with_engine(engine_url, body):
        assert derived == counted


def test_the_fill_takes_the_best_first_and_stops_only_when_the_next_cannot_fit(
    engine_url: str,
) -> None:
    hits = edgy_hits(300)  # ~9K tokens of blocks: more than the window planned below

    async def body(engine: EngineClient) -> tuple[FittedPrompt, int, int]:
        budget = PromptBudget(engine, EngineTokenCounter(engine), max_model_len=4096)
        fitted = await budget.fit("Which?", hits, limit=None, max_output_tokens=96, order="score")
        taken = len(fitted.passages)
        with_next = await engine.count_chat_tokens(build_messages(hits[: taken + 1], "Which?"))
        return fitted, await engine.count_chat_tokens(fitted.messages), with_next

    fitted, counted, with_next = with_engine(engine_url, body)
    window = 4096 - 96
    assert fitted.passages == hits[: len(fitted.passages)]  # best first, none skipped
    assert not fitted.took_all
    assert fitted.prompt_tokens == counted <= window
    assert with_next > window  # the next passage would not have fitted
    assert fitted.prompt_tokens >= 0.97 * window


def test_the_served_tokenizer_passes_the_derivation_self_check(engine_url: str) -> None:
    async def body(engine: EngineClient) -> list[bool]:
        return [
            await PromptBudget(engine, counter).derivation_exact()
            for counter in counters(engine, engine_url)
        ]

    assert all(with_engine(engine_url, body))


# SmolLM2's own chat template, but escaping the quotes of the content (as templates that embed
# messages in JSON-like text do): every block then holds more tokens than it was counted with.
QUOTE_ESCAPING_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] | replace('\"', '\\\\\"') + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_a_template_that_rewrites_the_content_is_counted_whole_and_never_overflows(
    engine_url: str,
) -> None:
    folder = served_folder(engine_url)
    if folder is None:
        pytest.skip("the served model's tokenizer is not on this machine")
    counter = LocalTokenCounter(folder, chat_template=QUOTE_ESCAPING_TEMPLATE)
    hits = edgy_hits(300)  # ~9K tokens of blocks: more than the window planned below

    async def body(engine: EngineClient) -> tuple[bool, FittedPrompt, int]:
        budget = PromptBudget(engine, counter, max_model_len=4096)
        exact = await budget.derivation_exact()
        fitted = await budget.fit("Which?", hits, limit=None, max_output_tokens=96, order="score")
        return exact, fitted, await counter.count_chat(fitted.messages)

    exact, fitted, counted = with_engine(engine_url, body)
    window = 4096 - 96
    assert not exact  # the self-check sees the template's extra tokens
    assert fitted.passages == hits[: len(fitted.passages)]  # best first, none skipped
    assert not fitted.took_all
    assert fitted.prompt_tokens == counted <= window  # the derived sum alone would be over
    assert fitted.prompt_tokens >= 0.95 * window


FIT: dict[str, Any] = {"limit": None, "max_output_tokens": 64, "order": "score"}


def test_a_prompt_that_fills_the_window_exactly_is_counted_whole_and_keeps_every_passage(
    engine_url: str,
) -> None:
    hits = edgy_hits(20)

    async def body(engine: EngineClient) -> tuple[int, FittedPrompt, int]:
        counter = EngineTokenCounter(engine)
        size = (await PromptBudget(engine, counter).fit("Which?", hits, **FIT)).prompt_tokens
        budget = PromptBudget(engine, counter, max_model_len=size + 64)  # no token to spare
        fitted = await budget.fit("Which?", hits, **FIT)
        return size, fitted, await engine.count_chat_tokens(fitted.messages)

    size, fitted, counted = with_engine(engine_url, body)
    assert fitted.passages == hits
    assert fitted.took_all
    assert fitted.prompt_tokens == counted == size
