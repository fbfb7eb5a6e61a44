"""Request and response models of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag.indexes import check_index_name

MAX_QUESTION_CHARS = 4000


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path_prefix: str | None = Field(default=None, max_length=1024)
    file_types: list[Literal["pdf", "markdown", "text", "html"]] | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    top_k: int | Literal["auto"] | None = Field(default=None)
    index: str | None = None
    filters: Filters | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    stream: bool = False

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("question must not be blank")
        return value

    @field_validator("top_k")
    @classmethod
    def _top_k_range(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 100:
            raise ValueError('top_k must be between 1 and 100, or "auto"')
        return value

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str | None) -> str | None:
        return None if value is None else check_index_name(value)


class Citation(BaseModel):
    n: int
    source: str
    page: int | None
    chunk_id: str
    score: float
    text: str
    char_start: int
    char_end: int
    heading: list[str]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Timings(BaseModel):
    embed_ms: float
    search_ms: float
    rerank_ms: float
    prompt_ms: float
    ttft_ms: float | None
    total_ms: float


class AskResponse(BaseModel):
    answer: str
    citations: list[Citation]
    usage: Usage
    timings: Timings
    model: str
    finish_reason: str | None


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
