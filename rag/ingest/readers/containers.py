"""Zip archives: each member read as a document of its own, in archive order.

The central directory is checked against the caps (``ContainerLimits``) before a single byte
is decompressed, so a zip bomb is refused from its headers; every member is then read with a
bounded read, so a header that lies about a size cannot make us decompress more than the caps.
Member names are never used as paths: a member is read from the archive into memory, so
``../../etc/evil.md`` is only a name, and such names are left out anyway.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib

from rag.errors import DocumentError
from rag.ingest.readers.base import ContainerLimits, ReadContext, Section, Unreadable

try:
    import lzma

    _LZMA_ERRORS: tuple[type[Exception], ...] = (lzma.LZMAError,)
except ImportError:  # a Python built without liblzma; zipfile then refuses LZMA members itself
    _LZMA_ERRORS = ()

# What a damaged archive or member raises from zipfile and its decompressors.
_ZIP_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    RuntimeError,
    *_LZMA_ERRORS,
)
_BIG_MEMBER = 1_000_000  # members over this many bytes uncompressed must respect max_ratio
_ENCRYPTED = 0x1
_METHOD_NAMES = {6: "imploding", 9: "deflate64", 93: "zstandard", 95: "xz", 98: "PPMd"}
_DRIVE = re.compile(r"^[A-Za-z]:")


def read_member_sections(
    context: ReadContext, name: str, data: bytes
) -> tuple[list[Section], DocumentError | None]:
    """A member's sections through ``context.read_member``, or none and why (also recorded in
    ``context.skipped``). What the member's own reader left out is renamed to its path from
    here ("inner.zip/deep.md"), so nested skips say where they are."""
    read_member = context.read_member
    if read_member is None:
        error = DocumentError("not read (members are read through parse_document)")
        context.skipped.append((name, str(error)))
        return [], error
    mark = len(context.skipped)
    sections: list[Section] = []
    failure: DocumentError | None = None
    try:
        sections = read_member(name, data)
    except DocumentError as exc:
        failure = exc
    context.skipped[mark:] = [(f"{name}/{inner}", why) for inner, why in context.skipped[mark:]]
    if failure is not None:
        context.skipped.append((name, str(failure) or "unreadable"))
    return sections, failure


def read_zip(data: bytes, context: ReadContext) -> list[Section]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise DocumentError(f"damaged zip archive ({exc})") from exc
    with archive:
        files = [info for info in infos if not info.is_dir()]
        if not files:
            raise DocumentError("empty zip archive")
        _check_limits(files, context.limits)
        named = [(info, _member_name(info.filename)) for info in files]
        wanted = [info for info, name in named if _left_out(name) is None]
        if wanted and all(info.flag_bits & _ENCRYPTED for info in wanted):
            raise Unreadable("password-protected zip archive")
        return _read_members(archive, named, context)


def _check_limits(files: list[zipfile.ZipInfo], limits: ContainerLimits) -> None:
    """Refuse the whole archive from its central directory, before anything is extracted."""
    if len(files) > limits.max_members:
        raise Unreadable(f"archive over its limits (more than {limits.max_members} members)")
    total = sum(info.file_size for info in files)
    if total > limits.max_total_bytes:
        raise Unreadable(
            f"archive over its limits ({total} bytes uncompressed, "
            f"more than {limits.max_total_bytes})"
        )
    for info in files:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _BIG_MEMBER and ratio > limits.max_ratio:
            raise Unreadable(
                f"archive over its limits ({_member_name(info.filename)} expands {ratio:.0f} "
                f"times, more than {limits.max_ratio:g})"
            )


def _read_members(
    archive: zipfile.ZipFile, named: list[tuple[zipfile.ZipInfo, str]], context: ReadContext
) -> list[Section]:
    sections: list[Section] = []
    left_out: list[tuple[str, str]] = []
    damaged = False
    budget = context.limits.max_total_bytes

    def leave_out(name: str, reason: str) -> None:
        left_out.append((name, reason))
        context.skipped.append((name, reason))

    for info, name in named:
        reason = _left_out(name)
        if reason is None and info.flag_bits & _ENCRYPTED:
            reason = "password-protected zip member"
        if reason is not None:
            leave_out(name, reason)
            continue
        try:
            content = _extract(archive, info, name, budget)
        except NotImplementedError:
            method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            leave_out(name, f"unsupported zip compression ({method})")
            continue
        except _ZIP_ERRORS as exc:
            damaged = True
            leave_out(name, f"damaged zip member ({exc})")
            continue
        budget -= len(content)
        read, failure = read_member_sections(context, name, content)
        sections.extend(read)
        if failure is not None:
            left_out.append((name, str(failure)))
            damaged = damaged or not isinstance(failure, Unreadable)
        context.heartbeat()
    if not sections:
        first, why = left_out[0] if left_out else ("", "")
        more = f", and {len(left_out) - 1} more" if len(left_out) > 1 else ""
        summary = f"{first}: {why}{more}"
        if damaged:
            raise DocumentError(f"no readable member in the zip archive ({summary})")
        raise Unreadable(f"no readable member in the zip archive ({summary})")
    return sections


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: int) -> bytes:
    """A member's bytes, read with a bound: never more than its header says nor the caps."""
    limit = min(info.file_size, budget)
    with archive.open(info) as stream:
        content = stream.read(limit + 1)
    if len(content) > limit:
        raise Unreadable(
            f"archive over its limits ({name} holds more than its header says or the caps allow)"
        )
    return content


def _member_name(filename: str) -> str:
    """The member's path with "/" separators (Windows tools write "\\"), without "." parts,
    control characters shown as "?"; a leading "/" is kept so that it is refused."""
    parts = [p for p in filename.replace("\\", "/").split("/") if p not in ("", ".")]
    shown = "/".join(parts)
    shown = "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in shown)
    return ("/" + shown) if filename.startswith(("/", "\\")) else shown


def _left_out(name: str) -> str | None:
    """Why a member is not read from its name alone, or None."""
    parts = name.split("/")
    if name.startswith("/") or _DRIVE.match(name):
        return "unsafe member name (an absolute path)"
    if ".." in parts:
        return "unsafe member name (it points outside the archive)"
    if parts[0] == "__MACOSX":
        return "macOS metadata (__MACOSX)"
    if any(part.startswith(".") for part in parts):
        return "hidden file"
    return None
