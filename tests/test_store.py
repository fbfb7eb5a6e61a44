"""One contract, two adapters: Qdrant Edge and qdrant-client must behave the same."""

from __future__ import annotations

import numpy as np
import pytest

from rag.embed import SparseEncoder
from rag.errors import IndexNotFoundError
from rag.indexes import ChunkingSpec, IndexMeta
from rag.store import Fusion, SearchFilter, SearchQuery, StoredChunk, VectorStore, path_prefixes

DIM = 8


def meta(name: str = "docs") -> IndexMeta:
    return IndexMeta(
        name=name,
        embed_model="test-embedder",
        dim=DIM,
        max_tokens=254,
        chunking=ChunkingSpec(),
        sparse="bm25",
        created_at="2026-11-22T00:00:00+00:00",
    )


def unit(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.1
    return v / np.linalg.norm(v)


def chunk(i: int, source: str, text: str, mtime: float = 1000.0) -> StoredChunk:
    sparse = SparseEncoder().encode_document(text)
    payload = {
        "root": "/docs",
        "source": source,
        "dirs": path_prefixes(source),
        "type": source.rsplit(".", 1)[-1],
        "sha256": f"sha-{source}",
        "mtime": mtime,
        "text": text,
    }
    return StoredChunk(f"00000000-0000-0000-0000-{i:012d}", unit(i), sparse, payload)


@pytest.fixture
def filled(store: VectorStore) -> VectorStore:
    store.create_index(meta())
    store.upsert(
        "docs",
        [
            chunk(1, "finance/2023/q1.pdf", "revenue grew in the first quarter", 100.0),
            chunk(2, "finance/2023/q2.pdf", "revenue fell in the second quarter", 200.0),
            chunk(3, "finance/2024/q1.pdf", "helium supply contracts were renewed", 300.0),
            chunk(4, "hr/handbook.md", "travel budget and expense receipts", 400.0),
        ],
    )
    return store


def test_created_index_is_listed_with_its_meta(store: VectorStore) -> None:
    store.create_index(meta("alpha"))
    assert store.list_indexes() == ["alpha"]
    assert store.get_meta("alpha") == meta("alpha")
    assert store.get_meta("missing") is None


def test_dense_search_ranks_the_nearest_chunk_first(filled: VectorStore) -> None:
    hits = filled.search("docs", SearchQuery(dense=unit(3), sparse=None, limit=2, exact=True))
    assert hits[0].payload["source"] == "finance/2024/q1.pdf"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_sparse_search_finds_the_chunk_with_the_query_terms(filled: VectorStore) -> None:
    query = SparseEncoder().encode_query("helium contracts")
    hits = filled.search("docs", SearchQuery(dense=None, sparse=query, limit=3, mode="sparse"))
    assert [h.payload["source"] for h in hits][:1] == ["finance/2024/q1.pdf"]


@pytest.mark.parametrize("fusion", ["dbsf", "rrf"])
def test_hybrid_search_fuses_both_rankings(filled: VectorStore, fusion: Fusion) -> None:
    sparse = SparseEncoder().encode_query("travel expense receipts")
    query = SearchQuery(dense=unit(4), sparse=sparse, limit=4, mode="hybrid", fusion=fusion)
    hits = filled.search("docs", query)
    assert hits[0].payload["source"] == "hr/handbook.md"


def test_path_prefix_filter_keeps_only_that_folder(filled: VectorStore) -> None:
    flt = SearchFilter(path_prefix="finance/2023/")
    hits = filled.search("docs", SearchQuery(dense=unit(3), sparse=None, limit=10, filter=flt))
    assert sorted(h.payload["source"] for h in hits) == [
        "finance/2023/q1.pdf",
        "finance/2023/q2.pdf",
    ]


def test_type_and_date_filters_combine(filled: VectorStore) -> None:
    flt = SearchFilter(file_types=("pdf",), modified_after=150.0, modified_before=350.0)
    hits = filled.search("docs", SearchQuery(dense=unit(1), sparse=None, limit=10, filter=flt))
    assert sorted(h.payload["source"] for h in hits) == [
        "finance/2023/q2.pdf",
        "finance/2024/q1.pdf",
    ]


def test_delete_and_scan_and_count_agree(filled: VectorStore) -> None:
    assert filled.count("docs") == 4
    filled.delete("docs", ["00000000-0000-0000-0000-000000000002"])
    scanned = dict(filled.scan("docs", ["source"]))
    assert filled.count("docs") == 3
    assert sorted(p["source"] for p in scanned.values()) == [
        "finance/2023/q1.pdf",
        "finance/2024/q1.pdf",
        "hr/handbook.md",
    ]


def test_a_filtered_scan_returns_only_the_points_the_filter_lets_through(
    filled: VectorStore,
) -> None:
    scanned = filled.scan("docs", ["source"], where=SearchFilter(path_prefix="finance/2023"))
    assert sorted(p["source"] for _, p in scanned) == ["finance/2023/q1.pdf", "finance/2023/q2.pdf"]
    one = filled.scan("docs", ["source"], where=SearchFilter(path_prefix="hr/handbook.md"))
    assert [p["source"] for _, p in one] == ["hr/handbook.md"]


def test_retrieve_returns_whole_payloads_of_the_ids_that_exist(filled: VectorStore) -> None:
    ids = ["00000000-0000-0000-0000-000000000004", "00000000-0000-0000-0000-000000000099"]
    found = filled.retrieve("docs", ids)
    assert [point for point, _ in found] == [ids[0]]
    assert found[0][1]["text"] == "travel budget and expense receipts"
    assert found[0][1]["mtime"] == 400.0
    assert filled.retrieve("docs", []) == []


def test_upserting_the_same_id_replaces_the_point(filled: VectorStore) -> None:
    filled.upsert("docs", [chunk(1, "finance/2023/q1.pdf", "restated revenue")])
    assert filled.count("docs") == 4
    payloads = [p for _, p in filled.scan("docs", ["text"])]
    assert "restated revenue" in [p["text"] for p in payloads]


def test_dropped_index_is_gone(filled: VectorStore) -> None:
    assert filled.drop_index("docs") is True
    assert filled.list_indexes() == []
    assert filled.drop_index("docs") is False
    with pytest.raises(IndexNotFoundError):
        filled.count("docs")
