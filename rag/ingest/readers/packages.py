"""Members of zip-based document packages (OpenDocument, EPUB), read with their size capped
before and while they are inflated."""

from __future__ import annotations

import io
import zipfile
import zlib

from rag.errors import DocumentError

MAX_MEMBER_BYTES = 100 * 1_000_000  # uncompressed size of one XML member of a package


def open_package(data: bytes, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DocumentError(f"{what} ({exc})") from exc


def package_member(archive: zipfile.ZipFile, name: str, what: str) -> bytes | None:
    """A member's bytes (None when absent), its declared size checked against
    ``MAX_MEMBER_BYTES`` before it is inflated and its actual size while it is (a header can
    lie)."""
    limit = MAX_MEMBER_BYTES
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    over = f"archive over its limits ({name} is over {limit:,} bytes uncompressed)"
    if info.file_size > limit:
        raise DocumentError(over)
    try:
        with archive.open(info) as member:
            content = member.read(limit + 1)
    except (
        zipfile.BadZipFile,  # a bad CRC
        OSError,
        EOFError,  # a truncated member
        zlib.error,
        RuntimeError,  # an encrypted member
        ValueError,
        NotImplementedError,  # a compression method zipfile lacks
    ) as exc:
        raise DocumentError(f"{what} ({name}: {exc})") from exc
    if len(content) > limit:
        raise DocumentError(over)
    return content
