"""Retrieval evaluation on BEIR-format data through the normal ingest and retrieval paths.

The corpus is written out as one text file per document (``title + " " + text``, BEIR's
convention) and synced into an index with the normal ``FolderSync``; the index lives under
the cache dir, so a second evaluation only hashes the files. Every query goes through the
normal ``Retriever``. Metrics come from pytrec_eval (trec_eval's own implementation).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.ask import Reranker, Retriever
from rag.embed import Embedder, SparseEncoder
from rag.indexes import ChunkingSpec, IndexSpec
from rag.ingest import FolderSync
from rag.store import Fusion, SearchMode, VectorStore

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class BeirData:
    corpus: dict[str, str]  # doc id -> title + " " + text
    queries: dict[str, str]
    qrels: Qrels


def load_beir(corpus: Path, queries: Path, qrels: Path, max_docs: int | None = None) -> BeirData:
    """Queries are kept only when judged; with ``max_docs``, only those judging a kept doc."""
    docs: dict[str, str] = {}
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            docs[str(doc["_id"])] = f"{doc.get('title', '')} {doc['text']}".strip()
    judged: Qrels = {}
    with qrels.open(encoding="utf-8") as lines:
        for line in lines:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or not parts[2].isdigit():
                continue  # the header
            judged.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    if max_docs is not None:
        relevant = sorted({d for rel in judged.values() for d in rel if d in docs})
        keep = set(relevant[: max_docs // 2])
        keep |= set(sorted(set(docs) - keep)[: max_docs - len(keep)])
        docs = {d: t for d, t in docs.items() if d in keep}
        judged = {q: {d: s for d, s in rel.items() if d in docs} for q, rel in judged.items()}
        judged = {q: rel for q, rel in judged.items() if rel}
    texts: dict[str, str] = {}
    with queries.open(encoding="utf-8") as lines:
        for line in lines:
            query = json.loads(line)
            if str(query["_id"]) in judged:
                texts[str(query["_id"])] = query["text"]
    return BeirData(docs, texts, {q: judged[q] for q in texts})


def corpus_index_name(data: BeirData) -> str:
    digest = hashlib.sha256("\n".join(sorted(data.corpus)).encode()).hexdigest()[:12]
    return f"beir-{digest}"


def write_corpus_files(data: BeirData, folder: Path) -> None:
    """One UTF-8 file per document; files already holding the same text are left alone."""
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, text in data.corpus.items():
        path = folder / f"{doc_id}.txt"
        body = text.encode("utf-8")
        if not path.exists() or path.read_bytes() != body:
            path.write_bytes(body)


def ingest_corpus(
    data: BeirData, store: VectorStore, embedder: Embedder, work: Path
) -> tuple[str, float]:
    """Sync the corpus into its own index (one point per document); returns (index, seconds)."""
    name = corpus_index_name(data)
    folder = work / name
    write_corpus_files(data, folder)
    spec = IndexSpec(
        name=name, embed_model=embedder.model_id, chunking=ChunkingSpec(mode="document")
    )
    report = FolderSync(store, embedder, spec).run([folder])
    return name, report.seconds


def doc_ranking(hits: Iterable[tuple[str, float]], depth: int) -> dict[str, float]:
    """Chunk hits to a document ranking: a document takes the score of its best chunk."""
    ranking: dict[str, float] = {}
    for doc_id, score in hits:
        if doc_id not in ranking:
            ranking[doc_id] = score
        if len(ranking) == depth:
            break
    return ranking


def retrieve_all(
    retriever: Retriever,
    index: str,
    queries: dict[str, str],
    mode: SearchMode,
    depth: int,
    exact: bool = True,
) -> tuple[Run, float]:
    run: Run = {}
    started = time.perf_counter()
    for qid, text in queries.items():
        found = retriever.retrieve(index, text, depth, mode=mode, exact=exact)
        pairs = ((str(h.payload["source"]).removesuffix(".txt"), h.score) for h in found.hits)
        ranking = doc_ranking(pairs, depth)
        # trec_eval ranks by score; RRF ties are broken by rank here, as the engine returned them
        run[qid] = {d: float(len(ranking) - i) for i, d in enumerate(ranking)}
    return run, time.perf_counter() - started


def metrics(run: Run, qrels: Qrels) -> dict[str, Any]:
    import pytrec_eval

    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"})
    top10 = {q: dict(sorted(d.items(), key=lambda kv: -kv[1])[:10]) for q, d in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    per_query = full.evaluate(run)
    rr = mrr.evaluate(top10)

    def mean(key: str, table: dict[str, dict[str, float]]) -> float:
        return round(sum(v[key] for v in table.values()) / max(1, len(table)), 4)

    return {
        "ndcg@10": mean("ndcg_cut_10", per_query),
        "recall@10": mean("recall_10", per_query),
        "recall@100": mean("recall_100", per_query),
        "mrr@10": mean("recip_rank", rr),
        "queries": len(per_query),
        "per_query_ndcg@10": {q: v["ndcg_cut_10"] for q, v in per_query.items()},
    }


@dataclass
class Evaluation:
    data: BeirData
    store: VectorStore
    embedder: Embedder
    work: Path
    reranker: Reranker | None = None
    rerank_candidates: int = 30
    index: str = ""
    ingest_seconds: float = 0.0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def prepare(self) -> None:
        self.index, self.ingest_seconds = ingest_corpus(
            self.data, self.store, self.embedder, self.work
        )

    def run(
        self, mode: SearchMode, k: int = 100, exact: bool = True, fusion: Fusion = "dbsf"
    ) -> dict[str, Any]:
        retriever = Retriever(
            self.store,
            self.embedder,
            SparseEncoder(),
            mode=mode,
            reranker=self.reranker,
            rerank_candidates=self.rerank_candidates,
            fusion=fusion,
        )
        run, seconds = retrieve_all(
            retriever, self.index, self.data.queries, mode, max(k, 100), exact
        )
        result = metrics(run, self.data.qrels)
        label = f"{mode}-{fusion}" if mode == "hybrid" and fusion != "dbsf" else mode
        result["mode"] = label + ("+rerank" if self.reranker else "")
        result["timings"] = {
            "ingest_s": round(self.ingest_seconds, 1),
            "retrieval_s": round(seconds, 2),
            "per_query_ms": round(1000 * seconds / max(1, len(run)), 2),
        }
        self.results[result["mode"]] = result
        return result
