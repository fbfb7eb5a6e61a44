"""Questions that arrive together are embedded together (rag/embed/batcher.py), with the real
MiniLM: fewer forward passes than questions, the same vectors as one by one, nothing waits on a
timer, a failing pass fails only its own questions, and the service's asks go through it.
Awaited on the event loop, a whole burst joins one pass however small the thread pool, and the
retriever's async path finds the same hits as its sync one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from rag.ask import Retriever
from rag.embed import Embedder, QueryBatcher, SparseEncoder, Vectors
from rag.indexes import IndexSpec
from rag.ingest import FolderSync
from rag.store import EdgeStore
from tests.documents import write_corpus

if TYPE_CHECKING:
    from tests.service import RunningService

QUESTIONS = [
    f"What did the {thing} cost in quarter {q}?"
    for thing in ("kettle", "lantern", "compass", "satchel", "telescope", "sextant")
    for q in range(1, 5)
] + ["Why?", "Summarise the risk factors of the company's operations in one long sentence."]


class Passes:
    """The real embedder's ``encode``, noting the size of every forward pass it is given."""

    def __init__(self, embedder: Embedder, fail_on: str | None = None) -> None:
        self.embedder = embedder
        self.fail_on = fail_on
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> Vectors:
        with self._lock:
            self.sizes.append(len(texts))
        if self.fail_on in texts:
            raise RuntimeError("the embedder failed on this pass")
        return self.embedder.encode(texts)


def all_at_once(batcher: QueryBatcher, questions: list[str]) -> list[Any]:
    """Each question from its own thread, released together; a vector or the exception each."""
    start = threading.Barrier(len(questions))

    def ask(question: str) -> Any:
        start.wait()
        try:
            return batcher.encode_query(question)
        except RuntimeError as exc:
            return exc

    with ThreadPoolExecutor(len(questions)) as pool:
        futures = [pool.submit(ask, q) for q in questions]
        return [f.result(timeout=120) for f in futures]


def test_concurrent_questions_take_fewer_passes_than_questions(embedder: Embedder) -> None:
    passes = Passes(embedder)
    all_at_once(QueryBatcher(passes, max_batch=64), QUESTIONS)
    assert sum(passes.sizes) == len(QUESTIONS)
    assert len(passes.sizes) < len(QUESTIONS) / 2, passes.sizes
    assert max(passes.sizes) > 1


def test_batched_vectors_equal_each_question_embedded_alone(embedder: Embedder) -> None:
    vectors = all_at_once(QueryBatcher(embedder.encode), QUESTIONS)
    for question, vector in zip(QUESTIONS, vectors, strict=True):
        alone = embedder.encode_query(question)
        assert vector.shape == alone.shape == (embedder.dim,)
        np.testing.assert_allclose(vector, alone, atol=1e-5)


def test_a_lone_question_is_embedded_at_once_in_a_pass_of_its_own(embedder: Embedder) -> None:
    passes = Passes(embedder)
    batcher = QueryBatcher(passes)
    for question in QUESTIONS[:3]:
        np.testing.assert_allclose(
            batcher.encode_query(question), embedder.encode_query(question), atol=1e-5
        )
    assert passes.sizes == [1, 1, 1]
    assert (batcher.passes, batcher.questions) == (3, 3)


def test_no_pass_is_larger_than_max_batch(embedder: Embedder) -> None:
    passes = Passes(embedder)
    all_at_once(QueryBatcher(passes, max_batch=4), QUESTIONS)
    assert sum(passes.sizes) == len(QUESTIONS)
    assert max(passes.sizes) <= 4


def test_a_failing_pass_fails_its_own_questions_and_the_rest_go_on(embedder: Embedder) -> None:
    passes = Passes(embedder, fail_on="Why?")
    batcher = QueryBatcher(passes)
    results = all_at_once(batcher, QUESTIONS)
    failed = [q for q, r in zip(QUESTIONS, results, strict=True) if isinstance(r, Exception)]
    assert "Why?" in failed
    assert len(failed) < len(QUESTIONS)  # the first pass runs its one question alone
    for question, result in zip(QUESTIONS, results, strict=True):
        if not isinstance(result, Exception):
            np.testing.assert_allclose(result, embedder.encode_query(question), atol=1e-5)
    after = batcher.encode_query("Is the batcher still serving?")  # not left busy
    assert after.shape == (embedder.dim,)


@pytest.mark.parametrize("max_batch", [0, -1])
def test_max_batch_must_be_positive(max_batch: int, embedder: Embedder) -> None:
    encode: Callable[[list[str]], Vectors] = embedder.encode
    with pytest.raises(ValueError, match="max_batch"):
        QueryBatcher(encode, max_batch=max_batch)


def test_the_service_embeds_concurrent_asks_together(service: RunningService) -> None:
    batcher = service.app.state.services.answerer.retriever.queries
    assert isinstance(batcher, QueryBatcher)
    passes, questions = batcher.passes, batcher.questions
    asks = [
        f"Which {item} ships from warehouse {n}?"
        for item in ("kettle", "lantern")
        for n in range(6)
    ]
    start = threading.Barrier(len(asks))

    def ask(question: str) -> int:
        with service.client() as client:
            start.wait()
            body = {"question": question, "max_tokens": 1}
            return client.post("/ask", json=body).status_code

    with ThreadPoolExecutor(len(asks)) as pool:
        statuses = list(pool.map(ask, asks))
    assert statuses == [200] * len(asks)
    assert batcher.questions - questions == len(asks)  # each question embedded once...
    assert batcher.passes - passes < len(asks)  # ...in fewer passes than questions


BURST = [f"{question} (ask {n})" for n in range(3) for question in QUESTIONS[:22]][:64]


async def awaited_together(batcher: QueryBatcher, questions: list[str]) -> list[Any]:
    """Each question awaited by its own task on one event loop; a vector or the exception each."""
    return await asyncio.gather(
        *(batcher.aencode_query(q) for q in questions), return_exceptions=True
    )


def test_a_burst_awaited_on_the_loop_joins_few_passes(embedder: Embedder) -> None:
    passes = Passes(embedder)
    batcher = QueryBatcher(passes, max_batch=64)
    try:
        vectors = asyncio.run(awaited_together(batcher, BURST))
    finally:
        batcher.close()
    assert sum(passes.sizes) == len(BURST) == 64
    # The first question alone, then (a busy CPU permitting) all the rest: 20+ passes when each
    # ask held a thread of the default pool while it waited.
    assert len(passes.sizes) < 8, passes.sizes
    for question, vector in zip(BURST, vectors, strict=True):
        np.testing.assert_allclose(vector, embedder.encode_query(question), atol=1e-5)


def test_a_failing_awaited_pass_fails_its_own_questions_and_the_rest_go_on(
    embedder: Embedder,
) -> None:
    passes = Passes(embedder, fail_on="Why?")
    batcher = QueryBatcher(passes)

    async def burst_then_one_more() -> tuple[list[Any], Any]:
        results = await awaited_together(batcher, QUESTIONS)
        return results, await batcher.aencode_query("Is the batcher still serving?")

    try:
        results, after = asyncio.run(burst_then_one_more())
    finally:
        batcher.close()
    failed = [q for q, r in zip(QUESTIONS, results, strict=True) if isinstance(r, Exception)]
    assert "Why?" in failed
    assert len(failed) < len(QUESTIONS)
    assert after.shape == (embedder.dim,)


def test_threads_and_tasks_share_passes_and_get_their_own_vectors(embedder: Embedder) -> None:
    batcher = QueryBatcher(embedder.encode)
    half = len(QUESTIONS) // 2

    async def both() -> tuple[list[Any], list[Any]]:
        threads = asyncio.to_thread(all_at_once, batcher, QUESTIONS[:half])
        return await asyncio.gather(threads, awaited_together(batcher, QUESTIONS[half:]))

    try:
        from_threads, from_tasks = asyncio.run(both())
    finally:
        batcher.close()
    for question, vector in zip(QUESTIONS, from_threads + from_tasks, strict=True):
        np.testing.assert_allclose(vector, embedder.encode_query(question), atol=1e-5)
    assert batcher.questions == len(QUESTIONS)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Any]:
    """The mixed test corpus in Qdrant Edge, index "docs"."""
    base = tmp_path_factory.mktemp("burst")
    write_corpus(base / "docs")
    store = EdgeStore(base / "data")
    try:
        FolderSync(store, embedder, IndexSpec(name="docs")).run([base / "docs"])
        yield store
    finally:
        store.close()


def test_a_burst_of_64_async_retrievals_takes_few_passes_and_finds_the_sync_hits(
    small_index: EdgeStore, embedder: Embedder
) -> None:
    passes = Passes(embedder)
    batcher = QueryBatcher(passes, max_batch=64)
    retriever = Retriever(small_index, embedder, SparseEncoder(), queries=batcher)

    async def burst() -> list[Any]:  # the default executor: min(32, cores + 4) threads
        return await asyncio.gather(*(retriever.aretrieve("docs", q, 5) for q in BURST))

    try:
        found = asyncio.run(burst())
    finally:
        batcher.close()
    assert len(passes.sizes) < 8, passes.sizes
    alone = Retriever(small_index, embedder, SparseEncoder())  # sync, one question at a time
    for question, got in zip(BURST, found, strict=True):
        want = alone.retrieve("docs", question, 5)
        assert [h.id for h in got.hits] == [h.id for h in want.hits]
        np.testing.assert_allclose(
            [h.score for h in got.hits], [h.score for h in want.hits], atol=1e-5
        )


def test_async_retrieval_reuses_a_cached_vector_without_embedding_again(
    small_index: EdgeStore, embedder: Embedder
) -> None:
    passes = Passes(embedder)
    batcher = QueryBatcher(passes)
    retriever = Retriever(small_index, embedder, SparseEncoder(), queries=batcher)
    try:
        first = retriever.retrieve("docs", "Where is the coffee machine?", 3)
        again = asyncio.run(retriever.aretrieve("docs", "Where is the coffee machine?", 3))
    finally:
        batcher.close()
    assert passes.sizes == [1]
    assert [h.id for h in again.hits] == [h.id for h in first.hits]
