"""Passages without an answer: what a search finds, and a document read in order around one of
its passages, so that an agent can cite, filter and read on without the engine.

Each chunk records its file (``root``, ``source``), the version of the file it came from
(``sha256``), its place in that version (``chunk_index`` of ``n_chunks``) and where it is in the
document (page, heading path). Reading around a chunk finds the file's points with a filtered
scan (the payload index on ``source``), keeps those of the anchor's root and version, and
fetches the window's payloads by id.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from rag.ask.retrieval import Retriever
from rag.errors import IndexNotFoundError, RagError
from rag.store import Hit, SearchFilter, VectorStore

# Each side of the anchor: enough to read on a page or two at a time, small enough for a
# model's context (a default chunk is ~200 tokens).
MAX_AROUND = 20
PLACE_FIELDS = ("root", "source", "sha256", "chunk_index", "n_chunks")


class PassageNotFoundError(RagError):
    """No passage with that chunk id, or no document or chunk at that place (HTTP 404)."""


@dataclass(frozen=True)
class Passage:
    """One chunk as a reader sees it: where it is, its text, and its score when searched."""

    chunk_id: str
    source: str
    page: int | None
    location: str | None  # where in the file beyond a page ("slide 3"), when its reader says
    heading: list[str]
    chunk_index: int | None  # its place in the document, from 0; None in indexes without it
    n_chunks: int | None
    text: str
    char_start: int
    char_end: int
    score: float | None = None  # relevance to a search; None for passages read in order

    @classmethod
    def from_payload(
        cls, chunk_id: str, payload: dict[str, Any], score: float | None = None
    ) -> Passage:
        index, count = payload.get("chunk_index"), payload.get("n_chunks")
        return cls(
            chunk_id=chunk_id,
            source=str(payload.get("source")),
            page=payload.get("page"),
            location=payload.get("location") or None,
            heading=list(payload.get("heading") or []),
            chunk_index=None if index is None else int(index),
            n_chunks=None if count is None else int(count),
            text=str(payload.get("text", "")),
            char_start=int(payload.get("char_start", 0)),
            char_end=int(payload.get("char_end", 0)),
            score=None if score is None else round(score, 6),
        )

    @classmethod
    def from_hit(cls, hit: Hit) -> Passage:
        return cls.from_payload(hit.id, hit.payload, hit.score)


async def search_passages(
    retriever: Retriever, index: str, query: str, top_k: int, flt: SearchFilter | None = None
) -> list[Passage]:
    """The ``top_k`` passages of ``index`` best matching ``query``, best first (as an ask would
    retrieve them: same mode, fusion and reranker), without asking the engine anything."""
    if await asyncio.to_thread(retriever.store.get_meta, index) is None:
        raise IndexNotFoundError(f"index {index!r} does not exist")
    found = await retriever.aretrieve(index, query, top_k, flt)
    return [Passage.from_hit(hit) for hit in found.hits]


@dataclass(frozen=True)
class Reading:
    """A stretch of one document in order: the anchor and its neighbours."""

    source: str
    n_chunks: int | None
    anchor: int | None  # the chunk_index read around
    passages: list[Passage]  # in document order

    @property
    def more_before(self) -> bool:
        first = self.passages[0].chunk_index if self.passages else None
        return first is not None and first > 0

    @property
    def more_after(self) -> bool:
        last = self.passages[-1].chunk_index if self.passages else None
        return last is not None and self.n_chunks is not None and last < self.n_chunks - 1


def read_around(
    store: VectorStore,
    index: str,
    *,
    chunk_id: str | None = None,
    source: str | None = None,
    chunk_index: int = 0,
    before: int = 2,
    after: int = 2,
) -> Reading:
    """The passages of a document in order around one of them: named by ``chunk_id`` (a
    citation's or a search hit's), or by ``source`` and ``chunk_index``; ``before`` and
    ``after`` neighbours each side (at most ``MAX_AROUND``), fewer at the document's ends."""
    if store.get_meta(index) is None:
        raise IndexNotFoundError(f"index {index!r} does not exist")
    before, after = (max(0, min(n, MAX_AROUND)) for n in (before, after))
    if chunk_id is not None:
        anchor = _by_id(store, index, chunk_id)
        root, source = str(anchor.get("root")), str(anchor.get("source"))
        sha256, position = anchor.get("sha256"), anchor.get("chunk_index")
        if position is None:  # an index written without places: the passage alone
            passage = Passage.from_payload(chunk_id, anchor)
            return Reading(passage.source, None, None, [passage])
        places = _places(store, index, source, root)
    elif source is not None:
        places = _places(store, index, source, None)
        root, sha256, position = _anchor_at(places, index, source, chunk_index)
    else:
        raise ValueError("read_around needs a chunk_id, or a source and a chunk_index")
    position = int(position)
    window = range(max(0, position - before), position + after + 1)
    ids = {
        int(p["chunk_index"]): point
        for point, p in places
        if p.get("root") == root and p.get("sha256") == sha256 and p.get("chunk_index") in window
    }
    found = dict(store.retrieve(index, list(ids.values())))  # a point deleted meanwhile: left out
    passages = [Passage.from_payload(ids[k], found[ids[k]]) for k in sorted(ids) if ids[k] in found]
    count = next((p.n_chunks for p in passages if p.n_chunks is not None), None)
    return Reading(source, count, position, passages)


def _by_id(store: VectorStore, index: str, chunk_id: str) -> dict[str, Any]:
    try:
        point = str(uuid.UUID(chunk_id))
    except ValueError:
        raise PassageNotFoundError(
            f"{chunk_id!r} is not a chunk id: use the chunk_id of a search result or citation"
        ) from None
    found = store.retrieve(index, [point])
    if not found:
        raise PassageNotFoundError(
            f"index {index!r} has no passage {chunk_id!r} (its document may have changed since: "
            "search again)"
        )
    return found[0][1]


def _places(
    store: VectorStore, index: str, source: str, root: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """The points of the file ``source`` (under ``root`` when given) with their places."""
    where = SearchFilter(path_prefix=source, roots=(root,) if root is not None else ())
    # The filter also lets through a folder of that name: keep the file itself.
    return [
        (point, p)
        for point, p in store.scan(index, PLACE_FIELDS, where)
        if p.get("source") == source
    ]


def _anchor_at(
    places: list[tuple[str, dict[str, Any]]], index: str, source: str, chunk_index: int
) -> tuple[str, str | None, int]:
    """The root and version of ``source`` that has a chunk ``chunk_index``."""
    if not places:
        raise PassageNotFoundError(
            f"index {index!r} has no document {source!r} (list_documents names them)"
        )
    roots = sorted({str(p.get("root")) for _, p in places})
    if len(roots) > 1:
        raise PassageNotFoundError(
            f"{source!r} is in {len(roots)} ingested folders of index {index!r}: name the "
            "passage by its chunk_id instead"
        )
    at = [p for _, p in places if p.get("chunk_index") == chunk_index]
    if not at:
        count = max(int(p.get("n_chunks") or 0) for _, p in places)
        raise PassageNotFoundError(
            f"{source!r} has chunks 0 to {count - 1}; there is no chunk {chunk_index}"
        )
    # A file re-ingested this very moment has two versions: the complete one wins.
    versions = [str(p.get("sha256")) for _, p in places]
    best = max(set(versions), key=versions.count)
    chosen = next((p for p in at if p.get("sha256") == best), at[0])
    return roots[0], chosen.get("sha256"), chunk_index
