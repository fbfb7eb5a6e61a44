"""The data dir on disk: files and folders only their owner can read, and a reserve of free
space.

Qdrant Edge maps its files into memory: a write that finds its file system full does not fail
with an error, the process dies of SIGBUS (the service, its engine with it, nothing logged). So
every write of the embedded store - creating an index, upserting, deleting (the WAL grows too),
optimizing - first checks that the file system keeps ``RAG_MIN_FREE_MB`` free, and refuses
with ``DiskFullError`` (job error ``disk_full``, HTTP 507, rag-ingest exit 3) before anything
is written; reads go on. Uploads check the same reserve, with their own size, before they are
saved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rag.errors import DiskFullError

DEFAULT_MIN_FREE_MB = 512
PRIVATE_DIR = 0o700


def keep_files_private() -> None:
    """New files 0600 and folders 0700 from now on, in this process and its children: the
    commands call it first, since the data dir holds the documents' text (the store's WAL
    among them) and the keys."""
    os.umask(0o077)


def private_dir(path: Path) -> Path:
    """``path`` and every missing folder above it, created 0700 (existing ones are left as
    they are: the operator may have opened them on purpose)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    return path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path`` (or the
    nearest folder above it that exists)."""
    for folder in (path, *path.parents):
        try:
            st = os.statvfs(folder)
        except FileNotFoundError:
            continue
        return st.f_bavail * st.f_frsize
    raise FileNotFoundError(path)


@dataclass(frozen=True)
class DiskReserve:
    """Free space kept on the file system of ``folder``; 0 bytes: never checked."""

    folder: Path
    min_free_bytes: int = DEFAULT_MIN_FREE_MB * 1_000_000

    def check(self, what: str, needed: int = 0) -> None:
        """Raise DiskFullError unless ``needed`` more bytes leave the reserve free."""
        if self.min_free_bytes <= 0:
            return
        free = free_bytes(self.folder)
        if free - needed < self.min_free_bytes:
            more = f" ({needed / 1e6:.1f} MB needed)" if needed else ""
            raise DiskFullError(
                f"{what} refused: {free / 1e6:.0f} MB free on the file system of {self.folder}"
                f"{more}, under the {self.min_free_bytes / 1e6:g} MB kept free "
                "(RAG_MIN_FREE_MB); free some space and try again"
            )

    def has_room(self, needed: int) -> bool:
        try:
            self.check("", needed)
        except DiskFullError:
            return False
        return True
