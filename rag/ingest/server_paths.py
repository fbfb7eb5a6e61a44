"""Which server folders an HTTP sync may read, and where uploaded files are kept.

- A sync names absolute folders (or files) on the server. A caller that may write the index
  may name one inside ``RAG_INGEST_ROOTS``; an admin key, or a caller holding the local
  service record's token (`rag-ingest` on this machine), any path the service can read.
  Paths are compared after resolving symlinks, so a link inside a root cannot lead out of it.
- Uploads are kept under ``<data_dir>/uploads/<index>/``: that folder is synced like any other,
  so an uploaded file stays in the index until it is deleted (over HTTP) or replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from rag.errors import RagError
from rag.guard import PermissionDeniedError
from rag.ingest.discovery import WithinRoots

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


def upload_name(name: str | None) -> str:
    """The name an uploaded file is kept under: its own base name, checked."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or base.startswith(".") or "\0" in base:
        raise BadPathError(f"{name!r} is not a file name to keep an upload under")
    if len(base.encode()) > 255:
        raise BadPathError("the file name is longer than 255 bytes")
    return base


def save_uploads(folder: Path, files: Sequence[tuple[str, BinaryIO]]) -> list[Path]:
    """Keep each upload as ``folder/<its base name>``; every name is checked before any is
    written, so a refused request leaves nothing behind."""
    names = [upload_name(name) for name, _ in files]
    return [save_upload(folder, name, data) for name, (_, data) in zip(names, files, strict=True)]


def save_upload(folder: Path, name: str, data: BinaryIO) -> Path:
    """Write ``data`` to ``folder/name`` atomically: a sync never reads half a file, and two
    uploads of one name at once each write their own temporary file (the last one wins)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / upload_name(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)  # hidden
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(data, out, 1 << 20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def uploaded_copy(uploads: Path, source: str, roots: Iterable[str]) -> Path | None:
    """The kept copy of the uploaded file ``source`` when the index holds it under the uploads
    folder; None when it does not, or when ``source`` would lead out of that folder."""
    folder = os.path.realpath(uploads)
    if folder not in roots:
        return None
    copy = os.path.realpath(os.path.join(folder, source))
    if os.path.dirname(copy) != folder:  # uploads are kept flat, under their base names
        return None
    return Path(copy)
