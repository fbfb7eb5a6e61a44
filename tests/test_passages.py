"""Passages without an answer (rag/ask/passages.py): a search's passages, and a document read in
order around one of them, on both stores, over documents really synced with the MiniLM embedder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rag.ask import MAX_AROUND, PassageNotFoundError, Retriever, read_around, search_passages
from rag.embed import Embedder, SparseEncoder
from rag.errors import IndexNotFoundError
from rag.indexes import ChunkingSpec, IndexSpec
from rag.ingest import FolderSync
from rag.store import SearchFilter, VectorStore

SMALL_CHUNKS = ChunkingSpec(chunk_tokens=40, overlap_tokens=0)


def write_log(path: Path, days: int = 14) -> None:
    """A ship's log, one paragraph a day: chunks of 40 tokens hold about one day each."""
    lines = ["# Ship's log\n"]
    for day in range(days):
        lines.append(
            f"Day {day}: the barque sailed {40 + day} nautical miles with the wind from the "
            f"west; the crew mended sail number {day % 4} and logged {day * 3} gulls.\n"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture
def logbook(store: VectorStore, embedder: Embedder, tmp_path: Path) -> VectorStore:
    write_log(tmp_path / "voyage" / "log.md")
    (tmp_path / "voyage" / "crew.md").write_text("# Crew\n\nThe cook is called Ada.\n", "utf-8")
    FolderSync(store, embedder, IndexSpec(name="docs", chunking=SMALL_CHUNKS)).run(
        [tmp_path / "voyage"]
    )
    return store


def chunk_ids(store: VectorStore, source: str) -> list[str]:
    """The file's chunk ids in document order."""
    places = [
        (p["chunk_index"], point)
        for point, p in store.scan("docs", ["source", "chunk_index"])
        if p["source"] == source
    ]
    return [point for _, point in sorted(places)]


def test_reading_around_a_chunk_gives_its_neighbours_in_document_order(
    logbook: VectorStore,
) -> None:
    ids = chunk_ids(logbook, "log.md")
    assert len(ids) >= 8
    reading = read_around(logbook, "docs", chunk_id=ids[5], before=2, after=2)
    assert reading.source == "log.md"
    assert reading.anchor == 5
    assert [p.chunk_index for p in reading.passages] == [3, 4, 5, 6, 7]
    assert [p.chunk_id for p in reading.passages] == ids[3:8]
    assert reading.n_chunks == len(ids)
    starts = [p.char_start for p in reading.passages]
    assert starts == sorted(starts)
    assert all(p.score is None and p.heading == ["Ship's log"] for p in reading.passages)
    assert reading.more_before
    assert reading.more_after


def test_reading_stops_at_the_ends_of_the_document(logbook: VectorStore) -> None:
    ids = chunk_ids(logbook, "log.md")
    start = read_around(logbook, "docs", chunk_id=ids[0], before=3, after=1)
    assert [p.chunk_index for p in start.passages] == [0, 1]
    assert not start.more_before
    end = read_around(logbook, "docs", source="log.md", chunk_index=len(ids) - 1, after=5)
    assert [p.chunk_index for p in end.passages] == [len(ids) - 3, len(ids) - 2, len(ids) - 1]
    assert not end.more_after


def test_an_agent_reads_on_from_the_last_passage_it_was_given(logbook: VectorStore) -> None:
    ids = chunk_ids(logbook, "log.md")
    first = read_around(logbook, "docs", source="log.md", chunk_index=0, before=0, after=2)
    last = first.passages[-1].chunk_index
    assert last is not None
    on = read_around(logbook, "docs", source="log.md", chunk_index=last + 1, before=0, after=2)
    read = [p.chunk_id for p in first.passages + on.passages]
    assert read == ids[:6]


def test_a_window_is_at_most_max_around_each_side(logbook: VectorStore) -> None:
    reading = read_around(logbook, "docs", source="log.md", chunk_index=0, after=1000)
    assert len(reading.passages) == min(MAX_AROUND + 1, len(chunk_ids(logbook, "log.md")))


def test_unknown_places_are_refused_with_what_to_do(logbook: VectorStore) -> None:
    with pytest.raises(PassageNotFoundError, match="not a chunk id"):
        read_around(logbook, "docs", chunk_id="log.md#3")
    with pytest.raises(PassageNotFoundError, match="has no passage"):
        read_around(logbook, "docs", chunk_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(PassageNotFoundError, match="has no document 'voyage/log.md'"):
        read_around(logbook, "docs", source="voyage/log.md")
    with pytest.raises(PassageNotFoundError, match="there is no chunk 99"):
        read_around(logbook, "docs", source="log.md", chunk_index=99)
    with pytest.raises(IndexNotFoundError):
        read_around(logbook, "missing", source="log.md")


def test_a_file_in_two_ingested_folders_is_read_by_chunk_id(
    logbook: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    write_log(tmp_path / "copy" / "log.md", days=3)
    FolderSync(logbook, embedder, IndexSpec(name="docs", chunking=SMALL_CHUNKS)).run(
        [tmp_path / "copy"], delete=False
    )
    with pytest.raises(PassageNotFoundError, match="2 ingested folders"):
        read_around(logbook, "docs", source="log.md", chunk_index=1)
    ids = chunk_ids(logbook, "log.md")  # both copies' chunks
    for point in ids:
        reading = read_around(logbook, "docs", chunk_id=point, before=MAX_AROUND, after=0)
        (anchor,) = [p for p in reading.passages if p.chunk_id == point]
        indexes = [p.chunk_index for p in reading.passages]
        assert indexes == list(range(len(indexes)))  # one copy's chunks, never both
        assert anchor.chunk_index == indexes[-1]


def test_search_passages_returns_scored_passages_with_their_place(
    logbook: VectorStore, embedder: Embedder
) -> None:
    retriever = Retriever(logbook, embedder, SparseEncoder())
    found = asyncio.run(search_passages(retriever, "docs", "What is the cook called?", 3))
    assert found[0].source == "crew.md"
    assert found[0].text.endswith("The cook is called Ada.")
    assert found[0].heading == ["Crew"]
    assert found[0].chunk_index == 0
    assert found[0].n_chunks == 1
    scores = [p.score for p in found]
    assert all(s is not None for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    only_log = SearchFilter(path_prefix="log.md")
    filtered = asyncio.run(search_passages(retriever, "docs", "cook", 3, only_log))
    assert {p.source for p in filtered} == {"log.md"}
    with pytest.raises(IndexNotFoundError):
        asyncio.run(search_passages(retriever, "missing", "cook", 3))
