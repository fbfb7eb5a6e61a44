"""Questions that arrive together are embedded together: one forward pass per micro-batch.

A burst of asks would otherwise queue for the embedder one by one (on a GPU box, 64 asks spent
0.66-1.0 s p50 waiting for their question's vector). There is no timer: the first caller finds
the embedder idle and embeds its question at once, alone. Whoever calls while that pass runs
queues; when it ends, every waiting question (up to ``max_batch``) goes into the next pass.
So a lone question is never delayed, and under load each pass carries all that has arrived.

Two ways in. ``encode_query`` (threads: the CLI, benchmarks) runs the pass in the calling
thread; when it ends, the caller that queued first leads the next one. ``aencode_query``
(the service's event loop) queues an asyncio future and the pass runs in the batcher's one
worker thread, which settles the futures of a whole pass with one wake-up per event loop: a
burst of asks joins one pass however small the default thread pool is (64 asks through
``asyncio.to_thread`` reached the embedder at most ~20 at a time), and an ask holds no thread
while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from rag.embed.base import Vectors

Encode = Callable[[list[str]], Vectors]


class _Ticket:
    """One question waiting for its vector, or (a thread's) for its turn to lead the next pass."""

    __slots__ = ("done", "error", "future", "lead", "text", "vector")

    def __init__(self, text: str, future: asyncio.Future[Vectors] | None = None) -> None:
        self.text = text
        self.future = future  # set for event-loop callers, who never lead a pass
        self.done = threading.Event()
        self.lead = False
        self.vector: Vectors | None = None
        self.error: BaseException | None = None

    def result(self) -> Vectors:
        if self.error is not None:
            raise self.error
        assert self.vector is not None
        return self.vector


def _settle(tickets: list[_Ticket]) -> None:
    """On the tickets' event loop: hand each awaiting caller its vector or the pass's error."""
    for ticket in tickets:
        assert ticket.future is not None
        if ticket.future.done():  # the ask was cancelled meanwhile
            continue
        if ticket.error is not None:
            ticket.future.set_exception(ticket.error)
        else:
            ticket.future.set_result(ticket.result())


class QueryBatcher:
    """``encode_query`` for many threads and ``aencode_query`` for many tasks at once, over an
    ``encode(texts)`` of the embedder."""

    def __init__(self, encode: Encode, *, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._encode = encode
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: deque[_Ticket] = deque()
        self._busy = False
        # Started on the first async pass; runs the passes of event-loop callers.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="query-embed")
        self.passes = 0  # forward passes run (a measure of how well questions were batched)
        self.questions = 0

    def encode_query(self, text: str) -> Vectors:
        ticket = _Ticket(text)
        with self._lock:
            self._waiting.append(ticket)
            follow = self._busy
            self._busy = True
        if follow:
            ticket.done.wait()
            if not ticket.lead:
                return ticket.result()
        self._run_pass()
        return ticket.result()

    async def aencode_query(self, text: str) -> Vectors:
        """The question's vector, awaited on the event loop (see the module doc)."""
        future: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
        ticket = _Ticket(text, future)
        with self._lock:
            self._waiting.append(ticket)
            start = not self._busy
            self._busy = True
        if start:
            self._hand_to_worker()
        return await future

    def close(self) -> None:
        """Stop the worker thread once the passes under way are done."""
        self._worker.shutdown(wait=True)

    def _run_pass(self) -> None:
        """Embed what waits (first in line first), then pass the lead on."""
        with self._lock:
            size = min(self.max_batch, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(size)]
        try:
            vectors = self._encode([t.text for t in batch])
            for ticket, vector in zip(batch, vectors, strict=True):
                ticket.vector = vector
        except BaseException as exc:  # every waiter of the pass gets the failure, not a hang
            for ticket in batch:
                ticket.error = exc
        finally:
            with self._lock:
                self.passes += 1
                self.questions += len(batch)
                successor = self._waiting[0] if self._waiting else None
                if successor is None:
                    self._busy = False
                elif successor.future is None:  # a thread waits: it leads the next pass
                    successor.lead = True
                    successor.done.set()
            self._deliver(batch)
            if successor is not None and successor.future is not None:
                self._hand_to_worker()  # an event-loop caller is next: the worker leads

    def _hand_to_worker(self) -> None:
        try:
            self._worker.submit(self._run_pass)
        except RuntimeError as exc:  # closed: fail what waits rather than leave it hanging
            with self._lock:
                stranded = list(self._waiting)
                self._waiting.clear()
                self._busy = False
            for ticket in stranded:
                ticket.error = exc
            self._deliver(stranded)

    @staticmethod
    def _deliver(batch: list[_Ticket]) -> None:
        by_loop: defaultdict[asyncio.AbstractEventLoop, list[_Ticket]] = defaultdict(list)
        for ticket in batch:
            if ticket.future is None:
                ticket.done.set()
            else:
                by_loop[ticket.future.get_loop()].append(ticket)
        for loop, tickets in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these
                loop.call_soon_threadsafe(_settle, tickets)
