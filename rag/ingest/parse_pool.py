"""Parse workers that fail alone: a file that hangs, crashes or eats memory costs one worker.

The pool runs in a thread of the ingesting process while its main thread embeds and writes, so
the next files are parsed while the current batch is embedded (a pipeline); a bounded number of
results wait to be embedded, which bounds memory. A watchdog checks every busy worker: past the
time limit or the memory limit it is killed, its file fails with the reason, and a new worker
takes its place. A worker that dies by itself (a segfault in a parser, the kernel's OOM killer,
a kill from outside) is noticed through its process sentinel, with the same result.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

import psutil

import rag.ingest.parse_worker as parse_worker
from rag.errors import RagError
from rag.ingest.parse_worker import Failed, Outcome, Task, WorkerConfig

log = logging.getLogger("rag.ingest")
START_TIMEOUT_S = 120.0
WATCH_INTERVAL_S = 0.05
_DONE = object()
# Imported by the fork server once, so that every worker starts with the parsers loaded.
PRELOAD = [
    "rag.ingest.parse_worker",
    "pypdfium2",
    "docx",
    "pptx",
    "openpyxl",
    "defusedxml.ElementTree",
    "striprtf.striprtf",
    "PIL.Image",
    "email.parser",
    "email.policy",
    "llama_index.core.node_parser",
]
START_ATTEMPTS = 3


class WorkerStartError(RagError):
    """Parse workers cannot start (the embedder's tokenizer is missing, for example)."""


class _KilledWhileStarting(Exception):
    pass


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    task: Task | None = None
    started: float = 0.0
    deadline: float = 0.0  # started + timeout_s, pushed on by each of the task's heartbeats
    beats: int = 0


def _context() -> multiprocessing.context.BaseContext:
    # A fork server started before any work forks fresh workers cheaply and never forks this
    # process's threads (torch's among them); it imports the parsers and the splitter once, so
    # a replaced worker is ready in milliseconds.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class ParsePool:
    def __init__(
        self,
        config: WorkerConfig,
        *,
        workers: int,
        timeout_s: float,
        beat_timeout_s: float | None = None,
    ) -> None:
        self.config = config
        self.size = workers
        self.timeout_s = timeout_s
        # A heartbeat of the running task (an OCR'd page) gives it this long again, from then.
        self.beat_timeout_s = timeout_s if beat_timeout_s is None else beat_timeout_s
        self.replaced = 0
        self._ctx = _context()
        self._workers: list[_Worker] = []
        self._closing = threading.Event()

    def __enter__(self) -> ParsePool:
        self._workers = [self._start() for _ in range(self.size)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        for w in self._workers:
            if w.task is None:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            _kill(w)
        self._workers = []

    def imap(self, tasks: Iterable[Task], backlog: int) -> Iterator[tuple[Task, Outcome]]:
        """Outcomes as files finish (not in task order); at most ``backlog`` wait unread."""
        out: queue.Queue[object] = queue.Queue()
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                self._serve(deque(tasks), out, backlog)
            except BaseException as exc:  # surfaced in the consuming thread below
                errors.append(exc)
            finally:
                out.put(_DONE)

        manager = threading.Thread(target=serve, name="parse-pool", daemon=True)
        manager.start()
        try:
            while (item := out.get()) is not _DONE:
                yield item  # type: ignore[misc]
            if errors:
                raise errors[0]
        finally:
            self._closing.set()
            manager.join()

    # -- the manager thread -------------------------------------------------------------------

    def _serve(self, todo: deque[Task], out: queue.Queue[object], backlog: int) -> None:
        while not self._closing.is_set():
            for worker in self._workers:
                if worker.task is None and todo and out.qsize() + self._busy() < backlog:
                    task = todo.popleft()
                    worker.task, worker.started = task, time.monotonic()
                    worker.deadline, worker.beats = worker.started + self.timeout_s, 0
                    worker.conn.send(task)
            busy = [w for w in self._workers if w.task is not None]
            if not busy:
                if not todo:
                    return
                time.sleep(WATCH_INTERVAL_S)  # the consumer is behind: wait for it
                continue
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], 0.1))
            for worker in busy:
                outcome = self._collect(worker, ready)
                if outcome is not None:
                    assert worker.task is not None
                    out.put((worker.task, outcome))
                    worker.task = None

    def _busy(self) -> int:
        return sum(1 for w in self._workers if w.task is not None)

    def _collect(self, worker: _Worker, ready: set[Any]) -> Outcome | None:
        """The worker's outcome if it has one (replacing it when it is gone), else None."""
        result = None
        if worker.conn in ready:
            try:
                result = self._receive(worker)
            except (EOFError, OSError):
                return self._replace(worker, _death_reason(worker))
        if result is not None:
            _seq, outcome, peak_rss = result
            if not worker.process.is_alive() or peak_rss > self.config.memory_bytes // 2:
                self._replace(worker, None)  # gone, or grown: a fresh heap for the next file
            if isinstance(outcome, Failed) and outcome.detail:
                log.error("unexpected error parsing %r:\n%s", worker.task, outcome.detail)
            return outcome
        if worker.process.sentinel in ready:
            return self._replace(worker, _death_reason(worker))
        if time.monotonic() > worker.deadline:
            if not worker.beats:
                return self._replace(
                    worker,
                    f"parsing took longer than {self.timeout_s:g} s (RAG_PARSE_TIMEOUT_S); "
                    "the worker was stopped",
                )
            return self._replace(
                worker,
                f"parsing stopped making progress: {worker.beats} heartbeats (OCR'd pages), then "
                f"none for {self.beat_timeout_s:g} s (RAG_OCR_PAGE_TIMEOUT_S); the worker was "
                "stopped",
            )
        rss = _rss(worker)
        if rss > self.config.memory_bytes:
            limit_mb = self.config.memory_bytes // (1 << 20)
            return self._replace(
                worker,
                f"the worker used {rss // (1 << 20)} MB parsing this file, over {limit_mb} MB "
                "(RAG_WORKER_MEMORY_MB); it was stopped",
            )
        return None

    def _receive(self, worker: _Worker) -> tuple[int, Outcome, int] | None:
        """The task's result if the worker sent it, else None; each heartbeat read on the way
        moves the task's deadline to ``beat_timeout_s`` from now (never closer)."""
        while True:
            message = worker.conn.recv()
            if message[0] != "beat":
                return cast(tuple[int, Outcome, int], message)
            if worker.task is not None and message[1] == worker.task.seq:
                worker.deadline = max(worker.deadline, time.monotonic() + self.beat_timeout_s)
                worker.beats += 1
            if not worker.conn.poll():
                return None

    def _replace(self, worker: _Worker, reason: str | None) -> Outcome | None:
        _kill(worker)
        fresh = self._start()
        self.replaced += 1
        worker.process, worker.conn = fresh.process, fresh.conn
        return None if reason is None else Failed(reason)

    def _start(self) -> _Worker:
        """A ready worker; one killed while starting (from outside) is started again."""
        for attempt in range(START_ATTEMPTS):
            try:
                return self._await_ready(self._spawn())
            except _KilledWhileStarting:
                if attempt == START_ATTEMPTS - 1:
                    raise WorkerStartError("parse workers keep dying while they start") from None
        raise AssertionError("unreachable")

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=parse_worker.main, args=(child, self.config), daemon=True
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def _await_ready(self, worker: _Worker) -> _Worker:
        if not worker.conn.poll(START_TIMEOUT_S):
            _kill(worker)
            raise WorkerStartError(f"a parse worker did not start in {START_TIMEOUT_S:g} s")
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            _kill(worker)
            raise _KilledWhileStarting from None
        if message[0] != "ready":
            _kill(worker)
            raise WorkerStartError(f"a parse worker could not start: {message[1]}")
        return worker


def _rss(worker: _Worker) -> int:
    try:
        return int(psutil.Process(worker.process.pid).memory_info().rss)
    except (psutil.Error, TypeError):
        return 0


def _kill(worker: _Worker) -> None:
    if worker.process.is_alive() and worker.process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.join(5)
    worker.conn.close()


def _death_reason(worker: _Worker) -> str:
    worker.process.join(2)
    code = worker.process.exitcode
    if code is None:
        return "the worker stopped answering while parsing this file"
    if code < 0:
        name = signal.Signals(-code).name
        if name == "SIGKILL":
            return (
                "the worker was killed (SIGKILL) while parsing this file: stopped from "
                "outside, or by the kernel for lack of memory"
            )
        return f"the worker crashed ({name}) while parsing this file"
    return f"the worker exited with status {code} while parsing this file"
