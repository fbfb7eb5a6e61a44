"""`rag-eval`: retrieval quality on BEIR-format data through the normal ingest and search paths.

    rag-eval retrieval --corpus corpus.jsonl --queries queries.jsonl --qrels qrels.tsv \
        [--mode dense|sparse|hybrid] [--rerank MODEL] [--k 10]
    rag-eval table --data ../shared/data/scifact      # dense, sparse and hybrid side by side
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, get_args

import click

from rag.config import Settings
from rag.store import SearchMode

MODES = list(get_args(SearchMode))


def _evaluation(
    corpus: Path, queries: Path, qrels: Path, max_docs: int | None, rerank: str | None
) -> Any:
    from rag.embed import Embedder
    from rag.evaluation import Evaluation, load_beir
    from rag.indexes import DEFAULT_EMBED_MODEL
    from rag.store import open_store

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings()
    work = settings.cache_dir / "eval"
    store_settings = settings.model_copy(update={"data_dir": work / "store"})
    reranker = None
    if rerank:
        from rag.ask import CrossEncoderReranker

        reranker = CrossEncoderReranker(rerank)
    evaluation = Evaluation(
        data=load_beir(corpus, queries, qrels, max_docs),
        store=open_store(store_settings),
        embedder=Embedder(settings.embed_model or DEFAULT_EMBED_MODEL),
        work=work / "corpora",
        reranker=reranker,
        rerank_candidates=settings.rerank_candidates,
    )
    evaluation.prepare()
    return evaluation


def _public(result: dict[str, Any], per_query: bool) -> dict[str, Any]:
    return {k: v for k, v in result.items() if per_query or k != "per_query_ndcg@10"}


@click.group()
def main() -> None:
    """Evaluate retrieval on BEIR-format data."""


@main.command()
@click.option("--corpus", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--queries", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--qrels", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@click.option("--rerank", help="Cross-encoder (HF id or folder) to rerank the candidates.")
@click.option("--k", type=int, default=10, show_default=True, help="Cut-off of the headline.")
@click.option("--max-docs", type=int, help="Evaluate on a subset of this many documents.")
@click.option("--hnsw", is_flag=True, help="Search the HNSW index instead of exactly.")
@click.option("--per-query", is_flag=True, help="Include nDCG@10 of every query.")
def retrieval(
    corpus: Path,
    queries: Path,
    qrels: Path,
    mode: SearchMode,
    rerank: str | None,
    k: int,
    max_docs: int | None,
    hnsw: bool,
    per_query: bool,
) -> None:
    """Print nDCG@10, recall@10, recall@100, MRR@10, query count and timings as JSON."""
    evaluation = _evaluation(corpus, queries, qrels, max_docs, rerank)
    try:
        result = evaluation.run(mode, k=k, exact=not hnsw)
    finally:
        evaluation.store.close()
    click.echo(json.dumps(_public(result, per_query), indent=2))


@main.command()
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="A BEIR folder with corpus.jsonl, queries-train.jsonl, qrels-train.tsv.",
)
@click.option("--split", default="train", show_default=True)
@click.option("--max-docs", type=int)
def table(data: Path, split: str, max_docs: int | None) -> None:
    """Dense, sparse and hybrid on one split, as a table (and JSON on the last line)."""
    evaluation = _evaluation(
        data / "corpus.jsonl",
        data / f"queries-{split}.jsonl",
        data / f"qrels-{split}.tsv",
        max_docs,
        None,
    )
    try:
        rows = [evaluation.run(mode) for mode in MODES]
        rows.append(evaluation.run("hybrid", fusion="rrf"))  # the other fusion, for comparison
    finally:
        evaluation.store.close()
    click.echo(
        f"{'mode':<8} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} "
        f"{'queries':>7} {'ms/query':>9}"
    )
    for r in rows:
        click.echo(
            f"{r['mode']:<10} {r['ndcg@10']:>8.4f} {r['recall@10']:>7.4f} {r['recall@100']:>7.4f}"
            f" {r['mrr@10']:>7.4f} {r['queries']:>7} {r['timings']['per_query_ms']:>9.2f}"
        )
    click.echo(json.dumps([_public(r, False) for r in rows]))
