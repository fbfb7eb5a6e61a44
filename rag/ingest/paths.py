"""File names as the filesystem stores them (any bytes but NUL and '/') and as we show them.

Inside the library a path is a ``str`` decoded with Python's file-system encoding, where bytes
that are not UTF-8 survive as lone surrogates (PEP 383) — lossless, but not valid UTF-8, so such
a string cannot go into JSON, a Qdrant payload or a UUID. Outside it, a path has two fields:

- ``display``: the name as UTF-8, each byte that is not UTF-8 written as ``\\xNN``
  (``bad-\\xff-bytes.txt``); readable, and identical to the name for every UTF-8 name;
- ``raw``: only for names that are not UTF-8, the exact bytes in standard base64, so the name
  can always be recovered (a UTF-8 name containing a literal ``\\xff`` has no ``raw`` field).
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid


def name_bytes(path: str) -> bytes:
    """The bytes the filesystem holds for ``path``."""
    return os.fsencode(path)


def is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display(path: str) -> str:
    """``path`` as valid UTF-8 text; bytes that are not UTF-8 appear as ``\\xNN``."""
    if is_utf8(path):
        return path
    return name_bytes(path).decode("utf-8", "backslashreplace")


def raw(path: str) -> str | None:
    """Base64 of the name's bytes when it is not UTF-8, else None."""
    if is_utf8(path):
        return None
    return base64.b64encode(name_bytes(path)).decode("ascii")


def from_fields(shown: str, raw_b64: str | None) -> str:
    """The library's ``str`` for a path stored as (display, raw)."""
    if raw_b64 is None:
        return shown
    return os.fsdecode(base64.b64decode(raw_b64))


def path_fields(path: str, key: str) -> dict[str, str]:
    """``{key: display}`` plus ``{key + "_raw": base64}`` when the name is not UTF-8."""
    fields = {key: display(path)}
    encoded = raw(path)
    if encoded is not None:
        fields[key + "_raw"] = encoded
    return fields


def uuid5_bytes(namespace: uuid.UUID, name: bytes) -> uuid.UUID:
    """RFC 4122 version-5 UUID of a byte string (``uuid.uuid5`` takes text only).

    For UTF-8 names it equals ``uuid.uuid5(namespace, name.decode())``, so ids of indexes
    built before non-UTF-8 names were supported do not change.
    """
    digest = hashlib.sha1(namespace.bytes + name, usedforsecurity=False).digest()
    return uuid.UUID(bytes=digest[:16], version=5)
