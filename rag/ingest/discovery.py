"""Finding the documents under the folders given: every entry is accounted for.

Each entry is classified with ``stat`` (symlinks followed) and is one of: a document to read
(a regular file with a document suffix, under the size cap), skipped with a reason (hidden, not
a document type, over the size cap, a FIFO, socket or device), or failed with a reason (a
symlink loop, a dangling link). A folder reached twice (a symlink loop) is walked once. Nothing
is opened here.

With ``within`` (the allowed roots: RAG_INGEST_ROOTS for an HTTP sync, the folders named on
`rag-ingest`'s command line), a file or folder whose resolved path lies outside every one of
them - a symlink out of the roots - is skipped, not followed. This is the listing's check; the
one that counts is made again when the file is opened (``rag.ingest.reading.open_within``), since
an entry may be swapped for a link at any moment after it was listed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag.ingest.readers import file_type
from rag.ingest.reading import (
    OUTSIDE,
    os_reason,
    resolve_roots,
    root_of,
    special_kind,
    too_large_reason,
)


@dataclass(frozen=True)
class SourceFile:
    root: str  # absolute, resolved folder the relative path is taken from
    source: str  # path relative to root, with '/' separators
    path: str  # the path to open (file-system string: any bytes survive)
    kind: str
    size: int


@dataclass(frozen=True)
class Entry:
    """An entry that is not ingested, and why."""

    path: str
    reason: str


@dataclass
class Discovery:
    files: list[SourceFile] = field(default_factory=list)
    roots: set[str] = field(default_factory=set)  # folders whose vanished files may be deleted
    skipped: list[Entry] = field(default_factory=list)
    failed: list[Entry] = field(default_factory=list)


class WithinRoots:
    """Whether a path, symlinks resolved, lies under one of the allowed roots (any, without)."""

    def __init__(self, roots: Sequence[Path] | None) -> None:
        self.roots = resolve_roots(roots)

    def __call__(self, path: str) -> bool:
        if self.roots is None:
            return True
        return root_of(os.path.realpath(path), self.roots) is not None


def discover(
    paths: Sequence[Path], max_bytes: int, within: Sequence[Path] | None = None
) -> Discovery:
    found = Discovery()
    allowed = WithinRoots(within)
    for given in paths:
        if not allowed(str(given)):
            found.skipped.append(Entry(os.path.abspath(given), OUTSIDE))
            continue
        if os.path.isdir(given):
            root = os.path.realpath(given)
            found.roots.add(root)
            candidates: Iterator[str] = _walk(root, found, allowed)
        else:
            root = os.path.dirname(os.path.realpath(given))
            candidates = iter([os.path.abspath(given)])
        for path in candidates:
            if not allowed(path):
                found.skipped.append(Entry(path, OUTSIDE))
                continue
            source = os.path.relpath(path, root).replace(os.sep, "/")
            _classify(path, root, source, max_bytes, found)
    found.files.sort(key=lambda f: (f.root, f.source))
    return found


def _classify(path: str, root: str, source: str, max_bytes: int, found: Discovery) -> None:
    try:
        st = os.stat(path)  # follows symlinks: a link to /dev/zero is a character device
    except OSError as exc:
        found.failed.append(Entry(path, os_reason(exc)))
        return
    special = special_kind(st.st_mode)
    kind = file_type(Path(path))
    if special is not None:
        found.skipped.append(Entry(path, f"not a regular file: {special}"))
    elif kind is None:
        suffix = Path(path).suffix.lower()
        found.skipped.append(Entry(path, f"not a document type ({suffix or 'no suffix'})"))
    elif st.st_size > max_bytes:
        found.skipped.append(Entry(path, too_large_reason(st.st_size, max_bytes)))
    else:
        found.files.append(SourceFile(root, source, path, kind, st.st_size))


def _walk(root: str, found: Discovery, allowed: WithinRoots) -> Iterator[str]:
    seen: set[tuple[int, int]] = set()

    def unreadable(exc: OSError) -> None:
        found.failed.append(Entry(exc.filename or root, os_reason(exc)))

    for folder, dirs, names in os.walk(root, followlinks=True, onerror=unreadable):
        try:
            st = os.stat(folder)
        except OSError as exc:
            found.failed.append(Entry(folder, os_reason(exc)))
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in sorted(d for d in dirs if d.startswith(".")):
            found.skipped.append(Entry(os.path.join(folder, name), "hidden folder"))
        inside = {d: allowed(os.path.join(folder, d)) for d in dirs if not d.startswith(".")}
        for name in sorted(d for d, ok in inside.items() if not ok):
            found.skipped.append(Entry(os.path.join(folder, name), OUTSIDE))
        dirs[:] = sorted(d for d, ok in inside.items() if ok)
        for name in sorted(names):
            if name.startswith("."):
                found.skipped.append(Entry(os.path.join(folder, name), "hidden file"))
            else:
                yield os.path.join(folder, name)
