"""A parse worker: a separate process that reads, hashes, parses and chunks one file at a time.

Everything that can hang, crash or swallow memory on a hostile file (pypdf, the HTML and text
decoders, the splitter) runs here, never in the process that embeds and writes. The pool
(``rag.ingest.parse_pool``) hands it tasks over a pipe, kills it when a file takes too long or its
memory passes the limit, and starts a new one. The address-space limit set here is a backstop
for allocations too fast for the pool's watchdog to see.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

from rag.embed import WordPieces
from rag.errors import DocumentError
from rag.indexes import ChunkingSpec
from rag.ingest.chunking import Chunk, build_chunker
from rag.ingest.readers import (
    ContainerLimits,
    OcrOptions,
    ReadContext,
    Section,
    Unreadable,
    parse_document,
)
from rag.ingest.reading import OutsideRoots, read_file

PR_SET_PDEATHSIG = 1
# Sections larger than this are cut (at a paragraph, line or space) before chunking, so that the
# tokenizer's offset lists stay bounded (~250,000 tokens) whatever one file holds.
SLICE_CHARS = 1 << 20


@dataclass(frozen=True)
class WorkerConfig:
    embed_model: str
    chunking: ChunkingSpec
    max_file_bytes: int
    memory_bytes: int
    ocr: OcrOptions = OcrOptions()
    containers: ContainerLimits = ContainerLimits()


@dataclass(frozen=True)
class Task:
    seq: int
    path: str
    kind: str
    roots: tuple[str, ...] | None = None  # resolved roots the file must lie in (None: any)


@dataclass(frozen=True)
class Parsed:
    sha256: str
    mtime: float
    pages: int
    chunks: list[Chunk]
    dropped_runs: int
    dropped_chars: int
    read_s: float
    parse_s: float
    chunk_s: float
    # Parts left out, with why: members of an archive or mail, pages whose OCR timed out.
    skipped: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Failed:
    reason: str
    detail: str | None = None  # a traceback, for unexpected errors only


@dataclass(frozen=True)
class Skipped:
    """Not read, for a reason that is no fault (a password, OCR off, a format we do not read)."""

    reason: str


Outcome = Parsed | Failed | Skipped


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _limit_memory(extra_bytes: int) -> None:
    """Cap the address space at what the worker maps now plus ``extra_bytes``."""
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + extra_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or limit < hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class FileParser:
    """Read, hash, parse and chunk one file (the worker's whole job, callable in-process too)."""

    def __init__(self, config: WorkerConfig, heartbeat: Callable[[], None] | None = None) -> None:
        self.config = config
        # For ReadContext.heartbeat: in a worker it tells the pool the file is making progress.
        self.heartbeat: Callable[[], None] = heartbeat or (lambda: None)
        self.chunker = build_chunker(WordPieces(config.embed_model), config.chunking)

    def handle(self, task: Task) -> Outcome:
        t0 = time.perf_counter()
        try:
            content = read_file(task.path, self.config.max_file_bytes, task.roots)
        except OutsideRoots as exc:
            return Skipped(str(exc))
        except DocumentError as exc:
            return Failed(str(exc))
        t1 = time.perf_counter()
        sha256, mtime = content.sha256, content.mtime
        context = ReadContext(
            ocr=self.config.ocr, limits=self.config.containers, heartbeat=self.heartbeat
        )
        try:
            sections = parse_document(content.data, task.kind, context)
        except Unreadable as exc:
            return Skipped(str(exc))
        except DocumentError as exc:
            return Failed(str(exc))
        finally:
            del content  # the bytes are not needed past parsing
        t2 = time.perf_counter()
        sliced = [part for section in sections for part in slice_section(section)]
        chunked = self.chunker.chunk(sliced)
        t3 = time.perf_counter()
        if not chunked.chunks:
            return Failed("no text to index")
        pages = len({(s.member, s.page) for s in sections if s.page is not None}) or 1
        return Parsed(
            sha256,
            mtime,
            pages,
            chunked.chunks,
            chunked.dropped_runs,
            chunked.dropped_chars,
            t1 - t0,
            t2 - t1,
            t3 - t2,
            tuple(context.skipped),
        )


def slice_section(section: Section) -> list[Section]:
    """A long section as consecutive sub-sections of at most ~SLICE_CHARS, cut at a break."""
    text = section.text
    if len(text) <= SLICE_CHARS:
        return [section]
    parts: list[Section] = []
    start = 0
    while start < len(text):
        end = min(start + SLICE_CHARS, len(text))
        if end < len(text):
            window = text[start + SLICE_CHARS // 2 : end]
            for mark in ("\n\n", "\n", " "):
                cut = window.rfind(mark)
                if cut >= 0:
                    end = start + SLICE_CHARS // 2 + cut + len(mark)
                    break
        parts.append(replace(section, text=text[start:end], offset=section.offset + start))
        start = end
    return parts


def main(conn: Connection, config: WorkerConfig) -> None:
    """The worker process: answer tasks until the pipe closes or a stop (None) arrives."""
    _die_with_parent()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    beat = _Heartbeat(conn)
    try:
        parser = FileParser(config, heartbeat=beat)
        _limit_memory(config.memory_bytes)
    except Exception as exc:  # the whole run cannot parse anything: tell the pool why
        conn.send(("init_failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        beat.seq = task.seq
        try:
            outcome: Outcome = parser.handle(task)
        except MemoryError:
            conn.send((task.seq, Failed(_oom_reason(config)), _peak_rss()))
            return  # a heap that ran out is not worth keeping: the pool starts a new worker
        except Exception as exc:
            outcome = Failed(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        conn.send((task.seq, outcome, _peak_rss()))


class _Heartbeat:
    """A worker's heartbeat: ("beat", seq) to the pool, which extends that task's deadline.

    Readers call it after each costly step (an OCR'd page), so a long scan gets time by the page
    (the pool's ``beat_timeout_s``) rather than one RAG_PARSE_TIMEOUT_S for the whole file.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.seq = -1  # the running task's

    def __call__(self) -> None:
        with contextlib.suppress(OSError):  # the pool is gone: the result's send will tell
            self.conn.send(("beat", self.seq))


def _oom_reason(config: WorkerConfig) -> str:
    limit_mb = config.memory_bytes // (1 << 20)
    return f"out of memory: parsing needed more than {limit_mb} MB (RAG_WORKER_MEMORY_MB)"


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
