"""Answering: hybrid retrieval and passages read in order, reranking, the prompt fitted to the
engine's window, the answer with its citations, the OpenAI shapes, the engine's direct chats."""

from __future__ import annotations

from rag.ask.answer import (
    Answer,
    Answerer,
    AskEvent,
    AskOptions,
    Citation,
    CitationsEvent,
    DoneEvent,
    OutputTooLongError,
    Timings,
    answer_json,
    final_answer,
    max_output_bound,
)
from rag.ask.answer_cache import AnswerCache, Answers, CachedAnswers
from rag.ask.chat import (
    Completion,
    QuestionTooLongError,
    Turn,
    chat_options,
    check_question,
    index_model_card,
    index_of,
    model_cards,
)
from rag.ask.completions import TextCompletion
from rag.ask.conversation import Exchange, HistoryLimits, cut_history, exchanges_from
from rag.ask.direct import DirectChat, DirectOptions, engine_messages, is_task
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
    "AnswerCache",
    "Answers",
    "CachedAnswers",
    "Answer",
    "Answerer",
    "AskEvent",
    "AskOptions",
    "BLOCK_END",
    "Citation",
    "CitationsEvent",
    "Completion",
    "DirectChat",
    "DirectOptions",
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
    "QuestionTooLongError",
    "QWEN3_ADDED_TOKENS",
    "QueryRewriter",
    "Reading",
    "Reranker",
    "Retriever",
    "SMOLLM2_ADDED_TOKENS",
    "Standalone",
    "TextCompletion",
    "Turn",
    "Timings",
    "TokenCounter",
    "answer_json",
    "build_messages",
    "canonical_key",
    "chat_options",
    "cut_history",
    "exchanges_from",
    "check_question",
    "engine_messages",
    "final_answer",
    "index_model_card",
    "index_of",
    "is_task",
    "max_output_bound",
    "model_cards",
    "order_passages",
    "passage_block",
    "read_around",
    "search_passages",
]
