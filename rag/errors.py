"""Typed errors of the library; the shells map them to exit codes and HTTP statuses once."""

from __future__ import annotations


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
