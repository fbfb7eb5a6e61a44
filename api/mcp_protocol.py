"""What the MCP tools return (their output schemas) and the turns an `ask` may carry; `ask`
itself returns /ask's own `AskResponse`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class PassageInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    chunk_id: str = Field(description="Names the passage to read_passages and in citations.")
    source: str = Field(description="The file, relative to the ingested folder.")
    page: int | None = Field(description="Its page, for paged documents (PDF); else null.")
    location: str | None = Field(description="Where in the file beyond a page, when known.")
    heading: list[str] = Field(description="The heading path above it, outermost first.")
    chunk_index: int | None = Field(description="Its place in the document, from 0.")
    n_chunks: int | None = Field(description="How many passages the document has.")
    score: float | None = Field(description="Relevance to the query (search only).")
    text: str
    char_start: int
    char_end: int


class SearchResult(BaseModel):
    index: str
    query: str
    passages: list[PassageInfo] = Field(description="Best first.")


class ReadResult(BaseModel):
    index: str
    source: str
    n_chunks: int | None
    chunk_index: int | None = Field(description="The passage read around.")
    more_before: bool = Field(description="The document has passages before the first one here.")
    more_after: bool = Field(description="The document goes on after the last one here.")
    passages: list[PassageInfo] = Field(description="In document order.")


class IndexInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    default: bool = Field(description="Searched and asked when a call names no index.")
    created_at: str
    embed_model: str
    chunks: int = Field(description="Passages in the index.")


class IndexList(BaseModel):
    indexes: list[IndexInfo]


class DocumentInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    source: str = Field(description="The file, relative to the ingested folder.")
    root: str = Field(description="The ingested folder it is in, on the server.")
    chunks: int = Field(description="Its passages.")
    sha256: str


class DocumentList(BaseModel):
    index: str
    documents: list[DocumentInfo] = Field(description="By root, then path.")
    total: int = Field(description="Documents matching, listed or not.")
    truncated: bool = Field(description="More documents match than were listed (raise limit).")


class Turn(BaseModel):
    """One earlier message of the conversation an `ask` continues."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: StrictStr
