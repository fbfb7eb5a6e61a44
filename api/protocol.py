"""Request and response models of the HTTP API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

from rag.indexes import check_index_name

MAX_QUESTION_CHARS = 4000
# The schema's bound on max_tokens before the engine is known; `api.openapi` replaces it with
# the engine's own bound (half its window) once the service knows the window.
MAX_TOKENS_BOUND = 262144
# The schema's bound on timeout_s; the service's own (RAG_MAX_REQUEST_TIMEOUT_S) is checked later.
MAX_TIMEOUT_BOUND = 3600.0


def _iso_text(value: Any) -> Any:
    """Dates come as ISO 8601 text: a number is not silently read as a Unix time."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date-time string, e.g. 2024-01-31T00:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_text)]


def whole_number(value: Any) -> Any:
    """A count written 5.0 is the integer 5, as JSON Schema's "integer" says; 5.5, "5" and true
    stay refused (no other coercion)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _representable(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        value.timestamp()
    except (OverflowError, ValueError, OSError) as exc:
        raise ValueError(f"date {value.isoformat()} is out of the representable range") from exc
    return value


# A question needs one character that is neither whitespace nor a control character (NUL...).
HAS_TEXT = r"[^\s\x00-\x1f\x7f-\x9f]"


def _has_text(value: str) -> str:
    if not re.search(HAS_TEXT, value):
        raise ValueError("question must not be blank")
    return value.strip()


# Every type the readers read (rag.ingest.READ_TYPES; tests/test_http_input.py checks they agree).
FileType = Literal[
    "pdf", "markdown", "text", "html", "docx", "pptx", "xlsx", "csv", "tsv", "odt", "ods", "odp",
    "rtf", "eml", "epub", "ipynb", "json", "jsonl", "yaml", "xml", "zip", "doc", "image",
]  # fmt: skip


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path_prefix: StrictStr | None = Field(
        default=None,
        max_length=1024,
        description="A folder or file path relative to the ingested folder; matches whole "
        "names ('reports' or 'reports/q1.pdf'), not the start of a name.",
    )
    file_types: list[FileType] | None = Field(
        default=None,
        description="Document types, as a chunk's `type` (an archive's or a mail's members "
        "count as `zip` or `eml`).",
    )
    modified_after: IsoDateTime | None = None
    modified_before: IsoDateTime | None = None

    _dates = field_validator("modified_after", "modified_before")(_representable)


class HistoryTurn(BaseModel):
    """One earlier message of a conversation, as the client received or sent it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: StrictStr


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(
        min_length=1,
        max_length=MAX_QUESTION_CHARS,
        json_schema_extra={"pattern": HAS_TEXT},
        examples=["What is the travel budget?"],
    )
    top_k: Annotated[int, Field(ge=1, le=100, strict=True)] | Literal["auto"] | None = Field(
        default=None, description='1 to 100 passages, or "auto" to fill the window.'
    )
    index: StrictStr | None = Field(  # the pattern is checked by check_index_name (its message)
        default=None,
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    )
    filters: Filters | None = None
    history: list[HistoryTurn] = Field(
        default_factory=list,
        description="The conversation so far, oldest first: each question (user) followed by "
        "the answer it got (assistant). The question is retrieved with its conversation and "
        "laid out after it; history over RAG_HISTORY_MAX_TURNS exchanges or "
        "RAG_HISTORY_MAX_CHARS characters is cut, oldest first (never refused). See "
        "docs/api.md, Conversations.",
    )
    max_tokens: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS_BOUND,
        description="Longest answer in tokens; at most half the engine's context window.",
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, strict=True)  # an int is a number
    stream: StrictBool = False
    timeout_s: float | None = Field(
        default=None,
        ge=1,
        le=MAX_TIMEOUT_BOUND,
        strict=True,
        description="Seconds to the first answer token, queueing included (default "
        "RAG_REQUEST_TIMEOUT_S, at most RAG_MAX_REQUEST_TIMEOUT_S); an ask that cannot start "
        "in time gets 503 with Retry-After at once.",
    )

    _question = field_validator("question")(_has_text)
    _counts = field_validator("top_k", "max_tokens", mode="before")(whole_number)

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
    member: str | None = Field(
        default=None, description="path inside an archive or mail (`source` ends with it)"
    )
    location: str | None = Field(
        default=None, description='where in the file: "slide 3", "sheet Budget, rows 2–40"'
    )
    ocr: bool = Field(default=False, description="text recognised from a scan or an image")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Timings(BaseModel):
    embed_ms: float
    search_ms: float
    rerank_ms: float
    rewrite_ms: float = Field(description="writing a follow-up's standalone query")
    prompt_ms: float
    queue_ms: float
    ttft_ms: float | None
    total_ms: float
    cached: bool = Field(
        False, description="answered from the answer cache (RAG_ANSWER_CACHE), not the engine"
    )


class AskResponse(BaseModel):
    answer: str
    citations: list[Citation]
    usage: Usage
    timings: Timings
    model: str
    finish_reason: str | None
    notice: str | None = Field(
        default=None, description="Why there is nothing to answer from, when filters left nothing."
    )
    query: str = Field(
        description="What the passages were retrieved with: the question, or for a follow-up "
        "its standalone form."
    )


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(
        description='"ok", or what is wrong, for each of "engine", "store", "index" and "keys" '
        "(a key file that cannot be read: then the only check told)."
    )


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
