"""Folder sync: counts, skipping, replacement, deletion, failures, crash safety, spans."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from rag.embed import Embedder
from rag.errors import IndexMismatchError
from rag.indexes import ChunkingSpec, IndexMeta, IndexSpec
from rag.ingest import FolderSync
from rag.store import StoredChunk, VectorStore
from tests.conftest import SEC_DIR, require_shared
from tests.documents import (
    PAGE_TWO,
    write_corpus,
    write_encrypted_pdf,
    write_pdf,
    write_truncated_pdf,
)


def sync_for(store: VectorStore, embedder: Embedder, name: str = "docs") -> FolderSync:
    return FolderSync(store, embedder, IndexSpec(name=name))


def points_by_source(store: VectorStore, index: str = "docs") -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for _, payload in store.scan(index, ["source", "sha256", "text", "chunk_index"]):
        grouped.setdefault(payload["source"], []).append(payload)
    return grouped


def test_first_ingest_counts_every_document(
    store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "docs")
    report = sync_for(store, embedder).run([tmp_path / "docs"])
    assert (report.files_seen, report.added, report.skipped, report.failed) == (5, 5, 1, [])
    assert report.chunks_written == store.count("docs") > 0
    assert sorted(points_by_source(store)) == [
        "handbook.md",
        "notes.txt",
        "reports/example-q1.pdf",
        "reports/memo.pdf",
        "status.html",
    ]


def test_unchanged_files_are_skipped_and_nothing_is_written(
    store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "docs")
    sync = sync_for(store, embedder)
    first = sync.run([tmp_path / "docs"])
    second = sync.run([tmp_path / "docs"])
    assert (second.unchanged, second.added, second.updated, second.deleted) == (5, 0, 0, 0)
    assert second.chunks_written == 0
    assert second.chunks_deleted == 0
    assert second.stages["parse"] == 0
    assert second.stages["embed"] == 0
    assert store.count("docs") == first.chunks_written


def test_modified_file_is_replaced_with_no_old_chunk_left(
    store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    files = write_corpus(tmp_path / "docs")
    sync = sync_for(store, embedder)
    sync.run([tmp_path / "docs"])
    files["handbook"].write_text("# Handbook\n\nThe office is closed on Fridays.\n", "utf-8")
    report = sync.run([tmp_path / "docs"])
    assert (report.updated, report.unchanged, report.added) == (1, 4, 0)
    chunks = points_by_source(store)["handbook.md"]
    assert [c["text"] for c in chunks] == ["# Handbook\n\nThe office is closed on Fridays."]
    assert len({c["sha256"] for c in chunks}) == 1


def test_deleted_file_loses_its_chunks_unless_asked_to_keep_them(
    store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    files = write_corpus(tmp_path / "docs")
    sync = sync_for(store, embedder)
    sync.run([tmp_path / "docs"])
    files["notes"].unlink()
    kept = sync.run([tmp_path / "docs"], delete=False)
    assert kept.deleted == 0
    assert "notes.txt" in points_by_source(store)
    report = sync.run([tmp_path / "docs"])
    assert report.deleted == 1
    assert report.chunks_deleted == 1
    assert "notes.txt" not in points_by_source(store)


def test_files_of_other_roots_survive_a_sync_of_one_root(
    edge_store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "extra.md").write_text("# Extra\n\nAnother root.\n", "utf-8")
    sync = sync_for(edge_store, embedder)
    sync.run([tmp_path / "a", tmp_path / "b"])
    report = sync.run([tmp_path / "b"])
    assert report.deleted == 0
    assert len(points_by_source(edge_store)) == 6


def test_bad_files_are_reported_and_the_good_ones_ingested(
    edge_store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write_pdf(docs / "good.pdf", ["A good PDF about solar panels."])
    write_truncated_pdf(docs / "truncated.pdf", "This PDF was cut short. " * 40)
    write_encrypted_pdf(docs / "locked.pdf", "Secret board minutes.")
    (docs / "empty.txt").write_bytes(b"")
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (docs / "latin1.txt").write_bytes(
        "Caf\xe9 cr\xe8me br\xfbl\xe9e costs 4 \xa3.".encode("cp1252")
    )
    os.symlink("loop-b.md", docs / "loop-a.md")
    os.symlink("loop-a.md", docs / "loop-b.md")
    os.symlink(".", docs / "self")  # a folder loop: walked once
    report = sync_for(edge_store, embedder).run([docs])
    reasons = {Path(f.path).name: f.reason for f in report.failed}
    skipped = {Path(f.path).name: f.reason for f in report.skipped_files}
    assert set(reasons) == {
        "truncated.pdf",
        "empty.txt",
        "scan.pdf",
        "loop-a.md",
        "loop-b.md",
    }
    assert skipped == {"locked.pdf": "password-protected PDF"}
    assert reasons["empty.txt"] == "empty file"
    assert reasons["loop-a.md"] == "symlink loop"
    assert report.added == 2
    texts = [c["text"] for c in points_by_source(edge_store)["latin1.txt"]]
    assert texts == ["Café crème brûlée costs 4 £."]


def test_an_index_refuses_vectors_of_another_embedder(
    edge_store: VectorStore, embedder: Embedder
) -> None:
    other = IndexMeta(
        name="docs",
        embed_model="BAAI/bge-small-en-v1.5",
        dim=384,
        max_tokens=510,
        chunking=ChunkingSpec(),
        sparse="bm25",
        created_at="2026-11-22T00:00:00+00:00",
    )
    edge_store.create_index(other)
    with pytest.raises(IndexMismatchError, match="bge-small-en-v1.5"):
        sync_for(edge_store, embedder)


class CrashingStore:
    """Passes everything to a real store but dies on the n-th write, like a killed process."""

    def __init__(self, inner: VectorStore, crash_on_upsert: int) -> None:
        self.inner = inner
        self.upserts = 0
        self.crash_on = crash_on_upsert

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert(self, index: str, chunks: Sequence[StoredChunk]) -> None:
        self.upserts += 1
        if self.upserts == self.crash_on:
            self.inner.upsert(index, chunks[: len(chunks) // 2])  # half a file written
            raise KeyboardInterrupt("killed")
        self.inner.upsert(index, chunks)


def test_a_run_killed_mid_file_then_rerun_equals_a_clean_run(
    edge_store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    files = write_corpus(tmp_path / "docs")
    clean = sync_for(edge_store, embedder, "clean")
    clean.run([tmp_path / "docs"])

    crashing = CrashingStore(edge_store, crash_on_upsert=1)
    with pytest.raises(KeyboardInterrupt):
        FolderSync(crashing, embedder, IndexSpec(name="crashed")).run([tmp_path / "docs"])  # type: ignore[arg-type]
    files["report"].write_bytes(files["report"].read_bytes())  # untouched content, new mtime
    report = sync_for(edge_store, embedder, "crashed").run([tmp_path / "docs"])
    assert report.added >= 1
    assert dict(edge_store.scan("crashed", ["source", "text"])) == dict(
        edge_store.scan("clean", ["source", "text"])
    )


def test_markdown_chunks_keep_their_heading_path(
    edge_store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    files = write_corpus(tmp_path / "docs")
    sync_for(edge_store, embedder).run([tmp_path / "docs"])
    text = files["handbook"].read_text("utf-8")
    found = [
        p
        for _, p in edge_store.scan("docs", ["source", "heading", "text", "char_start", "char_end"])
        if "receipts" in p["text"]
    ]
    assert found[0]["heading"] == ["Handbook", "Travel", "Expenses"]
    assert text[found[0]["char_start"] : found[0]["char_end"]] == found[0]["text"]


def test_pdf_chunks_carry_their_page_and_exact_character_span(
    edge_store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    files = write_corpus(tmp_path / "docs")
    sync_for(edge_store, embedder).run([tmp_path / "docs"])
    page_text = PdfReader(files["report"]).pages[1].extract_text()
    hits = [
        p
        for _, p in edge_store.scan("docs", ["source", "page", "text", "char_start", "char_end"])
        if "zeppelin" in p["text"]
    ]
    assert len(hits) == 1
    assert hits[0]["page"] == 2
    assert page_text[hits[0]["char_start"] : hits[0]["char_end"]] == hits[0]["text"]
    assert "helium reserves" in hits[0]["text"]
    assert PAGE_TWO.split()[0] in page_text


def test_no_chunk_is_longer_than_the_embedder_reads(
    edge_store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "wide.txt").write_text("x" * 5000 + " " + "tabular,data;" * 800, "utf-8")
    sec = require_shared(SEC_DIR) / "2023 Q3 AAPL.pdf"
    shutil.copy(sec, docs / "aapl.pdf")
    sync_for(edge_store, embedder).run([docs])
    lengths = [embedder.count_tokens(p["text"]) for _, p in edge_store.scan("docs", ["text"])]
    assert max(lengths) <= embedder.max_tokens == 254
    assert len(lengths) > 50


def test_a_known_passage_of_a_real_10q_has_the_right_page_and_span(
    edge_store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    sec = require_shared(SEC_DIR) / "2022 Q3 AAPL.pdf"
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(sec, docs / sec.name)
    sync_for(edge_store, embedder).run([docs])
    pages = [p.extract_text() for p in PdfReader(sec).pages]
    needle = "Total net sales"
    expected_page = next(i for i, text in enumerate(pages, start=1) if needle in text)
    chunks = sorted(
        (p for _, p in edge_store.scan("docs", ["page", "text", "char_start", "char_end"])),
        key=lambda p: (p["page"], p["char_start"]),
    )
    first = next(p for p in chunks if needle in p["text"])
    assert first["page"] == expected_page  # the page another PDF library finds it on
    from rag.ingest import parse_document

    read = {s.page: s.text for s in parse_document(sec.read_bytes(), "pdf")}
    assert read[first["page"]][first["char_start"] : first["char_end"]] == first["text"]


def test_large_real_filings_parse_within_the_raised_pdf_limits() -> None:
    """Microsoft's 10-Qs hold content streams with arrays of over 100,000 elements."""
    from rag.ingest import parse_document

    filing = require_shared(SEC_DIR) / "2023 Q1 MSFT.pdf"
    sections = parse_document(filing.read_bytes(), "pdf")
    assert len(sections) > 60
    assert any("Microsoft" in s.text for s in sections)
