"""Typed errors of the library; the shells map them to exit codes and HTTP statuses once."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path


class RagError(Exception):
    """Base of every error the library raises on purpose."""


class DocumentError(RagError):
    """A file cannot be read as a document (corrupt, encrypted, empty, binary...)."""


class IndexMismatchError(RagError):
    """An index was created with another embedder or chunking than the one asked for."""


class IndexNotFoundError(RagError):
    """The named index does not exist in the store."""


class StoreUnavailableError(RagError):
    """The vector store cannot be reached or opened (server down, folder locked)."""


class DiskFullError(StoreUnavailableError):
    """A write would leave less than the reserve (RAG_MIN_FREE_MB) free: refused before it
    starts, since Qdrant Edge dies of SIGBUS on a full file system (HTTP 507)."""


class NotWritableError(RagError):
    """A folder the service writes (the data dir, its uploads) refuses writes: a read-only file
    system, or permissions (HTTP 503 ``not_writable``)."""


# Errors of a write refused by the file system; a full disk (ENOSPC) is another matter.
REFUSED_WRITE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


@contextlib.contextmanager
def writing_in(folder: Path, what: str = "the data folder") -> Iterator[None]:
    """The block's writes under ``folder``: a refused write raises ``NotWritableError`` with the
    reason, in place of the OSError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in REFUSED_WRITE:
            raise
        reason = exc.strerror or str(exc)
        raise NotWritableError(f"{what} is not writable: {folder}: {reason}") from exc
