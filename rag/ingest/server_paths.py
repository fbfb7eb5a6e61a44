"""Which server folders an HTTP sync may read, and where uploaded files are kept.

- A sync names absolute folders (or files) on the server. A caller that may write the index
  may name one inside ``RAG_INGEST_ROOTS``; an admin key, or a caller holding the local
  service record's token (`rag-ingest` on this machine), any path the service can read.
  Paths are compared after resolving symlinks, so a link inside a root cannot lead out of it.
  The job is held to those roots (``sync_roots``) when it lists and when it opens each file;
  a caller that may name any folder is held to the folders it named, unless it asks to follow
  links out of them.
- Uploads are kept under ``<data_dir>/uploads/<index>/`` (0700, files 0600): that folder is
  synced like any other, so an uploaded file stays in the index until it is deleted (over
  HTTP, which removes the file too) or replaced. Only documents are kept (HTTP 415 for other
  types), up to ``RAG_UPLOADS_MAX_MB`` per index (413), never below the free-space reserve
  (507), and a request's files are kept all or none.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rag.config import Settings
from rag.errors import DiskFullError, RagError, writing_in
from rag.guard import PermissionDeniedError
from rag.ingest.discovery import WithinRoots
from rag.ingest.readers import SUFFIX_TYPES, file_type
from rag.store import DiskReserve, private_dir

UPLOADS = "uploads"


class PathNotAllowedError(PermissionDeniedError):
    """A sync named a folder outside ``RAG_INGEST_ROOTS`` (HTTP 403)."""


class BadPathError(RagError):
    """A sync named a relative or missing path, or an upload a name that is not a file name."""


def upload_dir(data_dir: Path, index: str) -> Path:
    return data_dir / UPLOADS / index


def sync_paths(
    folders: Sequence[str], roots: Sequence[Path], *, anywhere: bool, uploads: Path
) -> list[Path]:
    """The resolved paths of a sync request, or the error that refuses it."""
    if not folders:
        raise BadPathError("name at least one folder to sync")
    allowed = WithinRoots([*roots, uploads])
    resolved = []
    for folder in folders:
        if "\0" in folder or not os.path.isabs(folder):
            raise BadPathError(f"{folder!r} is not an absolute path on the server")
        path = Path(os.path.realpath(folder))
        if not anywhere and not allowed(folder):
            raise PathNotAllowedError(
                f"{folder!r} is outside the folders this service syncs (RAG_INGEST_ROOTS)"
            )
        if not path.exists():
            raise BadPathError(f"no such file or folder on the server: {folder!r}")
        resolved.append(path)
    return resolved


def sync_roots(
    paths: Sequence[Path],
    roots: Sequence[Path],
    *,
    anywhere: bool,
    follow_links: bool,
    uploads: Path,
) -> list[Path] | None:
    """The roots a sync of ``paths`` is held to (None: none, links are followed anywhere).

    A caller held to ``RAG_INGEST_ROOTS`` stays in them (and the index's uploads), whatever it
    asks; one that may name any folder stays in the folders it named, as `rag-ingest` does,
    unless it asks to follow links out of them.
    """
    if not anywhere:
        return [*roots, uploads]
    return None if follow_links else list(paths)


class UnsupportedUploadError(RagError):
    """An upload is not a document type this service reads (HTTP 415): it is not kept."""


class UploadQuotaError(RagError):
    """An upload would take the index's uploads past RAG_UPLOADS_MAX_MB (HTTP 413)."""


@dataclass(frozen=True)
class UploadLimits:
    """What one index's uploads may take: ``max_bytes`` in all (0: no quota), and the reserve
    of free space on the data dir's file system."""

    max_bytes: int
    reserve: DiskReserve


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_bytes=int(settings.uploads_max_mb * 1_000_000),
        reserve=DiskReserve(settings.data_dir, settings.min_free_mb * 1_000_000),
    )


def upload_name(name: str | None) -> str:
    """The name an uploaded file is kept under: its own base name, checked (at most 255 bytes,
    no NUL, not hidden, not ``.`` or ``..``) and of a document type this service reads."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or base.startswith(".") or "\0" in base:
        raise BadPathError(f"{name!r} is not a file name to keep an upload under")
    try:
        size = len(os.fsencode(base))
    except UnicodeEncodeError:
        raise BadPathError(f"{name!r} is not a file name this file system can hold") from None
    if size > 255:
        raise BadPathError(f"the file name is {size} bytes long, over the 255 a name may have")
    if file_type(Path(base)) is None:
        suffix = Path(base).suffix.lower() or "no suffix"
        accepted = ", ".join(sorted(SUFFIX_TYPES))
        raise UnsupportedUploadError(
            f"{base!r} is not a document type this service reads ({suffix}); accepted: {accepted}"
        )
    return base


def save_uploads(
    folder: Path, files: Sequence[tuple[str, BinaryIO]], limits: UploadLimits | None = None
) -> list[Path]:
    """Keep each upload as ``folder/<its base name>``, all or nothing.

    Every name, the index's quota and the free space are checked before a byte is written;
    then each file goes to a temporary file of a short name of its own (whatever the length of
    the upload's name) and only once all are written are they renamed into place. On any error
    the request's files are removed: a refused or failed request leaves nothing behind.
    """
    names = [upload_name(name) for name, _ in files]
    sizes = [_size(data) for _, data in files]
    if limits is not None:
        _check_room(folder, names, sum(sizes), limits)
    with writing_in(folder, "the uploads folder"):
        private_dir(folder)
        written: list[tuple[str, Path]] = []
        placed: list[Path] = []
        try:
            for name, (_, data) in zip(names, files, strict=True):
                written.append((_write_temporary(folder, data), folder / name))
            for tmp, target in written:
                os.replace(tmp, target)
                placed.append(target)
        except BaseException:
            for tmp, _ in written:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            for target in placed:
                with contextlib.suppress(OSError):
                    target.unlink()
            raise
        return [target for _, target in written]


def _size(data: BinaryIO) -> int:
    data.seek(0, os.SEEK_END)
    size = data.tell()
    data.seek(0)
    return size


def _check_room(folder: Path, names: Sequence[str], incoming: int, limits: UploadLimits) -> None:
    if limits.max_bytes > 0:
        replaced = set(names)
        kept = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.name not in replaced and entry.is_file(follow_symlinks=False):
                    kept += entry.stat(follow_symlinks=False).st_size
        if kept + incoming > limits.max_bytes:
            raise UploadQuotaError(
                f"the index's uploads would take {(kept + incoming) / 1e6:.1f} MB, over the "
                f"{limits.max_bytes / 1e6:g} MB allowed (RAG_UPLOADS_MAX_MB); delete uploaded "
                "documents it no longer needs first"
            )
    limits.reserve.check("saving the upload", needed=incoming)


def _write_temporary(folder: Path, data: BinaryIO) -> str:
    """``data`` in a new hidden file of ``folder`` (0600; never synced: its name is hidden)."""
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(data, out, 1 << 20)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"saving the upload failed: {exc.strerror}") from exc
        raise
    return tmp


def uploaded_copy(uploads: Path, source: str, root: str | None = None) -> Path | None:
    """The kept copy of the uploaded file ``source``, if there is one (and ``root``, when given,
    is the uploads folder); None when ``source`` would lead out of that folder."""
    if "\0" in source or (root is not None and "\0" in root):
        return None  # no file's name holds a NUL byte
    folder = os.path.realpath(uploads)
    if root is not None and os.path.realpath(root) != folder:
        return None
    copy = os.path.realpath(os.path.join(folder, source))
    if os.path.dirname(copy) != folder:  # uploads are kept flat, under their base names
        return None
    return Path(copy) if os.path.isfile(copy) else None
