"""Reading only what is safe to read: regular files inside the roots, under a size cap, hashed
while read.

A shared drive holds more than documents: symlinks to devices (``/dev/zero`` never ends),
FIFOs (opening one blocks until a writer comes), sockets, and files far larger than anything
worth indexing. Each entry is classified with ``stat`` (symlinks followed) before it is opened;
only regular files are opened, without blocking, checked again on the open descriptor (the entry
may have been swapped since), and read at most up to the cap, so a file that grows or lies about
its size cannot take the memory of the machine.

A sync held to roots (``RAG_INGEST_ROOTS`` over HTTP, the folders named on `rag-ingest`'s
command line) opens each file once, through ``open_within``: the path is resolved and checked
against the roots, then walked from its root one component at a time with ``O_NOFOLLOW``, so a
symlink swapped in after the check (as the last component or as a folder on the way) is never
followed; the bytes hashed and parsed are those of that descriptor.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from rag.errors import DocumentError

READ_BLOCK = 1 << 20

_KINDS = (
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISDIR, "folder"),
)


class NotRegularFile(DocumentError):
    """The entry is a FIFO, socket, device or folder: never opened."""


class FileTooLarge(DocumentError):
    """The file is over the size cap: skipped after a stat, before any byte is read."""


OUTSIDE = "outside the ingest roots"
# A path that turns into a symlink between its check and its open is resolved again, this often.
RESOLVE_ATTEMPTS = 3


class OutsideRoots(DocumentError):
    """The file lies outside the roots of the sync (a symlink out of them): never opened."""

    def __init__(self) -> None:
        super().__init__(OUTSIDE)


def resolve_roots(roots: Sequence[str | os.PathLike[str]] | None) -> tuple[str, ...] | None:
    """The roots with their symlinks resolved (None: no roots, every path may be read)."""
    return None if roots is None else tuple(os.path.realpath(r) for r in roots)


def root_of(real: str, roots: Sequence[str]) -> str | None:
    """The resolved root that the resolved path ``real`` lies under (or is), if any."""
    for root in roots:
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return root
    return None


def special_kind(mode: int) -> str | None:
    """What a non-regular entry is (``"named pipe (FIFO)"``...), or None for a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "special file"


def too_large_reason(size: int, max_bytes: int) -> str:
    return f"file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB limit (RAG_MAX_FILE_MB)"


def os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "no such file (dangling symlink, or removed during the run)"
    return exc.strerror or str(exc)


@dataclass(frozen=True)
class FileData:
    data: bytes
    sha256: str
    mtime: float


_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_within(path: str, roots: Sequence[str] | None) -> int:
    """A read-only, non-blocking descriptor of ``path``, which must lie under ``roots``
    (resolved, as ``resolve_roots`` gives them; None: anywhere, symlinks followed).

    Symlinks are resolved once, and the resolved path must lie inside a root (a link to a file
    inside the roots is read like the file); that path is then opened from its root, one
    component at a time, none of them followed if it is a link by now. A component swapped for
    a link since the check makes the path resolve again; outside the roots it is OutsideRoots.
    """
    if roots is None:
        return os.open(path, _FLAGS)
    changed: OSError | None = None
    for _ in range(RESOLVE_ATTEMPTS):
        real = os.path.realpath(path)
        root = root_of(real, roots)
        if root is None:
            raise OutsideRoots()
        try:
            return _walk_open(root, real)
        except OSError as exc:
            # A symlink met with O_NOFOLLOW: ELOOP for the file, ENOTDIR for a folder.
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            changed = exc
    assert changed is not None
    raise changed


def _walk_open(root: str, real: str) -> int:
    """Open ``real`` (under ``root``) through real folders only: O_NOFOLLOW at each step."""
    if real == root:
        return os.open(real, _FLAGS | os.O_NOFOLLOW)
    parts = os.path.relpath(real, root).split(os.sep)
    folder = os.open(root, _FOLDER & ~os.O_NOFOLLOW)  # the root is resolved already
    try:
        for part in parts[:-1]:
            inner = os.open(part, _FOLDER, dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(parts[-1], _FLAGS | os.O_NOFOLLOW, dir_fd=folder)
    finally:
        os.close(folder)


def _open_regular(
    path: str, max_bytes: int, roots: Sequence[str] | None
) -> tuple[int, os.stat_result]:
    """A descriptor of a regular file of at most ``max_bytes``, opened without blocking."""
    try:
        fd = open_within(path, roots)
    except OSError as exc:
        raise DocumentError(os_reason(exc)) from exc
    try:
        st = os.fstat(fd)
        kind = special_kind(st.st_mode)
        if kind is not None:
            raise NotRegularFile(f"not a regular file: {kind}")
        if st.st_size > max_bytes:
            raise FileTooLarge(too_large_reason(st.st_size, max_bytes))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def hash_file(path: str, max_bytes: int, roots: Sequence[str] | None = None) -> str:
    """The sha256 of a regular file, streamed in blocks (the file is never held whole)."""
    fd, _ = _open_regular(path, max_bytes, roots)
    digest = hashlib.sha256()
    read = 0
    try:
        while block := os.read(fd, READ_BLOCK):
            read += len(block)
            if read > max_bytes:
                raise FileTooLarge(too_large_reason(read, max_bytes))
            digest.update(block)
    except OSError as exc:
        raise DocumentError(os_reason(exc)) from exc
    finally:
        os.close(fd)
    return digest.hexdigest()


def read_file(path: str, max_bytes: int, roots: Sequence[str] | None = None) -> FileData:
    """The content of a regular file of at most ``max_bytes``, with its sha256 and mtime.

    With ``roots`` (resolved), a file outside them raises OutsideRoots. Raises NotRegularFile,
    FileTooLarge, or DocumentError with the OS's reason.
    """
    fd, st = _open_regular(path, max_bytes, roots)
    try:
        digest = hashlib.sha256()
        # One read of the stated size (+1 to see growth) is one allocation for the whole file.
        blocks = [os.read(fd, st.st_size + 1)]
        digest.update(blocks[0])
        read = len(blocks[0])
        while read > st.st_size and blocks[-1]:  # it grew since the stat: read on, capped
            if read > max_bytes:
                raise FileTooLarge(too_large_reason(read, max_bytes))
            blocks.append(os.read(fd, READ_BLOCK))
            digest.update(blocks[-1])
            read += len(blocks[-1])
        data = blocks[0] if len(blocks) == 1 else b"".join(blocks)
    except OSError as exc:
        raise DocumentError(os_reason(exc)) from exc
    finally:
        os.close(fd)
    return FileData(data, digest.hexdigest(), st.st_mtime)
