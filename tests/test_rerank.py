"""The cross-encoder stage, on a tiny randomly initialised model the test builds (no cross-encoder
weights can be downloaded here): the real code path, not a meaningful ranking."""

from __future__ import annotations

from pathlib import Path

import pytest
from sentence_transformers import CrossEncoder

from rag.ask import CrossEncoderReranker, Retriever
from rag.embed import Embedder, SparseEncoder, resolve_model
from rag.indexes import IndexSpec
from rag.ingest import FolderSync
from rag.store import Hit, VectorStore
from tests.documents import write_corpus


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    torch.manual_seed(7)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def hits(texts: list[str]) -> list[Hit]:
    return [Hit(f"id-{i}", 1.0 - i / 10, {"text": t}) for i, t in enumerate(texts)]


def test_reranker_returns_top_k_by_cross_encoder_score(tiny_cross_encoder: Path) -> None:
    reranker = CrossEncoderReranker(str(tiny_cross_encoder))
    candidates = hits(["alpha beta", "gamma delta", "helium supply", "travel budget", "coffee"])
    reranked = reranker.rerank("what is the travel budget?", candidates, top_k=3)
    expected = CrossEncoder(str(tiny_cross_encoder)).predict(
        [("what is the travel budget?", h.payload["text"]) for h in candidates]
    )
    best = sorted(zip(candidates, expected, strict=True), key=lambda p: -p[1])[:3]
    assert [h.id for h in reranked] == [h.id for h, _ in best]
    assert [h.score for h in reranked] == pytest.approx([float(s) for _, s in best], abs=1e-5)


def test_retriever_reranks_a_deeper_candidate_list(
    tiny_cross_encoder: Path, edge_store: VectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "docs")
    FolderSync(edge_store, embedder, IndexSpec(name="docs")).run([tmp_path / "docs"])
    plain = Retriever(edge_store, embedder, SparseEncoder())
    reranking = Retriever(
        edge_store,
        embedder,
        SparseEncoder(),
        reranker=CrossEncoderReranker(str(tiny_cross_encoder)),
        rerank_candidates=8,
    )
    before = plain.retrieve("docs", "travel budget", 8)
    after = reranking.retrieve("docs", "travel budget", 2)
    assert len(after.hits) == 2
    assert after.rerank_ms > 0
    assert {h.id for h in after.hits} <= {h.id for h in before.hits}
    assert after.hits[0].score >= after.hits[1].score
