"""Answering: hybrid retrieval and passages read in order, reranking, the prompt fitted to the
engine's window, the answer with its citations, and the OpenAI-compatible chat over it."""

from __future__ import annotations

from rag.ask.answer import (
    Answer,
    Answerer,
    AskEvent,
    AskOptions,
    CitationsEvent,
    DoneEvent,
    OutputTooLongError,
    Timings,
    answer_json,
    max_output_bound,
)
from rag.ask.chat import Completion, chat_options, model_cards
from rag.ask.conversation import Exchange, HistoryLimits, cut_history, exchanges_from
from rag.ask.passages import (
    MAX_AROUND,
    Passage,
    PassageNotFoundError,
    Reading,
    read_around,
    search_passages,
)
from rag.ask.prompt import (
    BLOCK_END,
    FittedPrompt,
    NoPassageFitsError,
    PassageOrder,
    PromptBudget,
    PromptTooLongError,
    build_messages,
    canonical_key,
    order_passages,
    passage_block,
)
from rag.ask.rerank import CrossEncoderReranker
from rag.ask.retrieval import Reranker, Retriever
from rag.ask.rewrite import QueryRewriter, Standalone
from rag.ask.special_tokens import (
    KNOWN_ADDED_TOKENS,
    QWEN3_ADDED_TOKENS,
    SMOLLM2_ADDED_TOKENS,
    Neutraliser,
)
from rag.ask.tokens import EngineTokenCounter, LocalTokenCounter, TokenCounter

__all__ = [
    "Answer",
    "Answerer",
    "AskEvent",
    "AskOptions",
    "BLOCK_END",
    "CitationsEvent",
    "Completion",
    "CrossEncoderReranker",
    "DoneEvent",
    "EngineTokenCounter",
    "Exchange",
    "FittedPrompt",
    "HistoryLimits",
    "KNOWN_ADDED_TOKENS",
    "LocalTokenCounter",
    "MAX_AROUND",
    "Neutraliser",
    "NoPassageFitsError",
    "OutputTooLongError",
    "Passage",
    "PassageNotFoundError",
    "PassageOrder",
    "PromptBudget",
    "PromptTooLongError",
    "QWEN3_ADDED_TOKENS",
    "QueryRewriter",
    "Reading",
    "Reranker",
    "Retriever",
    "SMOLLM2_ADDED_TOKENS",
    "Standalone",
    "Timings",
    "TokenCounter",
    "answer_json",
    "build_messages",
    "canonical_key",
    "chat_options",
    "cut_history",
    "exchanges_from",
    "max_output_bound",
    "model_cards",
    "order_passages",
    "passage_block",
    "read_around",
    "search_passages",
]
