"""Reading only what is safe to read: regular files, under a size cap, hashed while read.

A shared drive holds more than documents: symlinks to devices (``/dev/zero`` never ends),
FIFOs (opening one blocks until a writer comes), sockets, and files far larger than anything
worth indexing. Each entry is classified with ``stat`` (symlinks followed) before it is opened;
only regular files are opened, without blocking, checked again on the open descriptor (the entry
may have been swapped since), and read at most up to the cap, so a file that grows or lies about
its size cannot take the memory of the machine.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
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


def _open_regular(path: str, max_bytes: int) -> tuple[int, os.stat_result]:
    """A descriptor of a regular file of at most ``max_bytes``, opened without blocking."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
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


def hash_file(path: str, max_bytes: int) -> str:
    """The sha256 of a regular file, streamed in blocks (the file is never held whole)."""
    fd, _ = _open_regular(path, max_bytes)
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


def read_file(path: str, max_bytes: int) -> FileData:
    """The content of a regular file of at most ``max_bytes``, with its sha256 and mtime.

    Raises NotRegularFile, FileTooLarge, or DocumentError with the OS's reason.
    """
    fd, st = _open_regular(path, max_bytes)
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
