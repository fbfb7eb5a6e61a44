"""rag-eval on a 500-document SciFact subset: dense retrieval reproduces plain
sentence-transformers cosine search query by query; the other modes and the reranker run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.embed import Embedder, resolve_model
from rag.evaluation import BeirData, Evaluation, load_beir, metrics
from rag.store import EdgeStore
from tests.conftest import SCIFACT_DIR, require_shared

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def subset() -> BeirData:
    folder = require_shared(SCIFACT_DIR)
    return load_beir(
        folder / "corpus.jsonl",
        folder / "queries-train.jsonl",
        folder / "qrels-train.tsv",
        max_docs=500,
    )


@pytest.fixture(scope="module")
def evaluation(
    subset: BeirData, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Evaluation:
    work = tmp_path_factory.mktemp("eval")
    ev = Evaluation(subset, EdgeStore(work / "store"), embedder, work / "corpora")
    ev.prepare()
    return ev


def plain_sentence_transformers_run(data: BeirData) -> dict[str, dict[str, float]]:
    """The reference: encode with sentence-transformers, rank by cosine with numpy."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    ids = list(data.corpus)
    docs = model.encode([data.corpus[d] for d in ids], normalize_embeddings=True, batch_size=64)
    qids = list(data.queries)
    queries = model.encode([data.queries[q] for q in qids], normalize_embeddings=True)
    scores = queries @ docs.T
    run = {}
    for row, qid in enumerate(qids):
        top = np.argsort(-scores[row], kind="stable")[:100]
        run[qid] = {ids[i]: float(len(top) - rank) for rank, i in enumerate(top)}
    return run


def test_subset_keeps_500_documents_and_only_judged_queries(subset: BeirData) -> None:
    assert len(subset.corpus) == 500
    assert subset.queries
    assert set(subset.queries) == set(subset.qrels)
    assert all(d in subset.corpus for rel in subset.qrels.values() for d in rel)


def test_dense_retrieval_matches_plain_sentence_transformers_per_query(
    evaluation: Evaluation, subset: BeirData
) -> None:
    ours = evaluation.run("dense")
    reference = metrics(plain_sentence_transformers_run(subset), subset.qrels)
    assert ours["queries"] == reference["queries"] > 100
    ours_q, ref_q = ours["per_query_ndcg@10"], reference["per_query_ndcg@10"]
    differing = [q for q in ref_q if abs(ours_q[q] - ref_q[q]) > 1e-9]
    assert len(differing) <= 0.01 * len(ref_q), differing  # float ties may swap, nothing more
    assert ours["ndcg@10"] == pytest.approx(reference["ndcg@10"], abs=2e-3)


def test_sparse_and_hybrid_modes_report_every_metric(evaluation: Evaluation) -> None:
    for mode in ("sparse", "hybrid"):
        result = evaluation.run(mode)
        for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
            assert 0.0 < result[key] <= 1.0
        assert result["recall@100"] >= result["recall@10"]
        assert result["timings"]["per_query_ms"] > 0


def test_the_eval_command_prints_json_for_a_subset(tmp_path: Path) -> None:
    folder = require_shared(SCIFACT_DIR)
    env = {**os.environ, "RAG_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "rag-eval"),
            "retrieval",
            "--corpus",
            str(folder / "corpus.jsonl"),
            "--queries",
            str(folder / "queries-train.jsonl"),
            "--qrels",
            str(folder / "qrels-train.tsv"),
            "--mode",
            "sparse",
            "--max-docs",
            "60",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10", "queries", "timings"}
