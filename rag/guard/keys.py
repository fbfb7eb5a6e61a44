"""API keys: who may call the service, which indexes each key reads, and its rate limits.

A key looks like ``rag_<id>_<secret>``: a 12-hex-digit id to look the record up by, and a
256-bit random secret. The secret is never stored: the key file keeps a random salt per key and
HMAC-SHA256(salt, secret), and a presented key is checked with a constant-time compare.

The key file (``$RAG_DATA_DIR/keys.json`` unless ``RAG_KEYS_FILE`` says otherwise; the compose
``api`` and ``ingest`` services share the data dir) is JSON, mode 0600, replaced atomically::

    {"version": 1, "keys": [{"name": "search-ui", "id": "3f9c0a1b2c4d", "salt": "<hex>",
      "hash": "<hex>", "indexes": ["handbook"], "all_indexes": false, "admin": false,
      "write": false, "rps": null, "tokens_per_minute": null,
      "created_at": "2026-11-23T03:00:00+00:00"}]}

``rps`` / ``tokens_per_minute`` of null use the service's defaults. ``write`` (absent in files
written before it existed: no write) lets the key change the indexes it reads (sync, upload,
delete); an admin key may write every index. A running service re-reads
the file when it changes, so ``rag-keys revoke`` takes effect without a restart.

The file is written only when a key is created or revoked, so its existence records that keys
have existed: from then on the service is closed (``KeyStore.closed``), even once the last key
is revoked; ``RAG_AUTH=auto`` never falls back to anonymous access because keys were revoked.
A file that cannot be read (corrupt, unreadable) closes the service too: every keyed request is
refused with ``KeysUnavailableError`` (HTTP 503) until it is repaired.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import RagError
from rag.indexes import check_index_name
from rag.store import private_dir

KEYS_FILE = "keys.json"
KEY_PREFIX = "rag"
FORMAT_VERSION = 1
_ID_HEX = 12
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PRESENTED = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{{_ID_HEX}}})_([A-Za-z0-9_-]{{43}})")


class AuthenticationError(RagError):
    """No API key, or one that is unknown, malformed or revoked (HTTP 401)."""


class PermissionDeniedError(RagError):
    """A valid key that may not do this: read or write that index, an admin route (HTTP 403)."""


class KeyStoreError(RagError):
    """The key file cannot be used as asked: a duplicate or unknown name, a corrupt file."""


class KeysUnavailableError(KeyStoreError):
    """The key file exists but cannot be read (corrupt, unreadable): no key can be checked, so
    nothing keyed is served (HTTP 503 ``keys_unavailable``)."""


@dataclass(frozen=True)
class Limits:
    """A key's own rate limits; None means the service's default."""

    rps: float | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and what it may do."""

    name: str
    indexes: tuple[str, ...] = ()
    all_indexes: bool = False
    admin: bool = False
    limits: Limits = field(default_factory=Limits)
    write: bool = False  # may change the indexes it reads

    def can_read(self, index: str) -> bool:
        return self.all_indexes or index in self.indexes

    def can_write(self, index: str) -> bool:
        """Admin keys write every index; write keys the indexes they read."""
        return self.admin or (self.write and self.can_read(index))


# The caller when authentication is not required: reads everything, like the service before keys.
ANONYMOUS = Principal(name="anonymous", all_indexes=True, admin=True)


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: everything but the secret, which only its holder knows."""

    name: str
    id: str
    salt: str
    hash: str
    indexes: tuple[str, ...]
    all_indexes: bool
    admin: bool
    limits: Limits
    created_at: str
    write: bool = False

    @property
    def principal(self) -> Principal:
        return Principal(
            self.name, self.indexes, self.all_indexes, self.admin, self.limits, self.write
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "salt": self.salt,
            "hash": self.hash,
            "indexes": list(self.indexes),
            "all_indexes": self.all_indexes,
            "admin": self.admin,
            "write": self.write,
            "rps": self.limits.rps,
            "tokens_per_minute": self.limits.tokens_per_minute,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyRecord:
        return cls(
            name=str(data["name"]),
            id=str(data["id"]),
            salt=str(data["salt"]),
            hash=str(data["hash"]),
            indexes=tuple(str(i) for i in data.get("indexes", [])),
            all_indexes=bool(data.get("all_indexes", False)),
            admin=bool(data.get("admin", False)),
            limits=Limits(data.get("rps"), data.get("tokens_per_minute")),
            created_at=str(data.get("created_at", "")),
            write=bool(data.get("write", False)),
        )


def _check_record(record: KeyRecord) -> None:
    """ValueError (or TypeError) for a record no key could be checked against."""
    if not (re.fullmatch(rf"[0-9a-f]{{{_ID_HEX}}}", record.id) and _NAME.fullmatch(record.name)):
        raise ValueError(f"key record {record.name!r} has an invalid name or id")
    bytes.fromhex(record.salt)
    bytes.fromhex(record.hash)
    for limit in (record.limits.rps, record.limits.tokens_per_minute):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)):
            raise TypeError(f"key {record.name!r} has a rate limit that is not a number")


def keys_path(settings: Settings) -> Path:
    """``RAG_KEYS_FILE``, else ``keys.json`` in the data dir."""
    return settings.keys_file or settings.data_dir / KEYS_FILE


def _digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


class KeyStore:
    """The key file; safe to share between threads, and between processes for writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, KeyRecord] = {}  # by key id

    def _current(self) -> dict[str, KeyRecord]:
        """The records, re-read when the file changed (an atomic replace changes its inode)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            with self._lock:
                self._stamp, self._records = None, {}
                return self._records
        except OSError as exc:
            raise self._unavailable(exc.strerror or str(exc)) from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._records = self._read()
                self._stamp = stamp
            return self._records

    def _unavailable(self, reason: str) -> KeysUnavailableError:
        return KeysUnavailableError(
            f"the key file {self.path} cannot be used: {reason}; repair it, or move it away "
            "and create the keys again with `rag-keys create`"
        )

    def _read(self) -> dict[str, KeyRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            records = [KeyRecord.from_json(k) for k in data["keys"]]
            for r in records:
                _check_record(r)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self._unavailable(f"it cannot be read ({exc.strerror or exc})") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._unavailable(f"it is corrupt ({type(exc).__name__}: {exc})") from exc
        return {r.id: r for r in records}

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict[str, KeyRecord]]:
        """The records under an exclusive lock; what the block leaves in them is written."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            private_dir(self.path.parent)
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise self._not_writable(exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            records = self._read()
            yield records
            try:
                self._write(list(records.values()))
            except OSError as exc:
                raise self._not_writable(exc) from exc
        finally:
            os.close(fd)  # releases the lock

    def _not_writable(self, exc: OSError) -> KeyStoreError:
        return KeyStoreError(f"the key file {self.path} cannot be written: {exc.strerror or exc}")

    def _write(self, records: Sequence[KeyRecord]) -> None:
        body = {"version": FORMAT_VERSION, "keys": [r.to_json() for r in records]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def create(
        self,
        name: str,
        indexes: Sequence[str] = (),
        *,
        all_indexes: bool = False,
        admin: bool = False,
        write: bool = False,
        rps: float | None = None,
        tokens_per_minute: int | None = None,
    ) -> str:
        """A new key; the returned string is the only copy of it anywhere."""
        if not _NAME.fullmatch(name):
            raise KeyStoreError(f"invalid key name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        if all_indexes and indexes:
            raise KeyStoreError("give either indexes or all_indexes, not both")
        if not (indexes or all_indexes or admin):
            raise KeyStoreError("a key needs at least one index, all_indexes, or admin")
        if write and not (indexes or all_indexes):
            raise KeyStoreError("write applies to the key's indexes: give indexes or all_indexes")
        if rps is not None and rps <= 0:
            raise KeyStoreError("rps must be positive")
        if tokens_per_minute is not None and tokens_per_minute <= 0:
            raise KeyStoreError("tokens_per_minute must be positive")
        try:
            checked = tuple(dict.fromkeys(check_index_name(i) for i in indexes))
        except ValueError as exc:
            raise KeyStoreError(str(exc)) from exc
        key_id, secret = secrets.token_hex(_ID_HEX // 2), secrets.token_urlsafe(32)
        with self._writing() as records:
            if any(r.name == name for r in records.values()):
                raise KeyStoreError(f"a key named {name!r} exists; revoke it first")
            while key_id in records:
                key_id = secrets.token_hex(_ID_HEX // 2)
            salt = secrets.token_hex(16)
            records[key_id] = KeyRecord(
                name=name,
                id=key_id,
                salt=salt,
                hash=_digest(salt, secret),
                indexes=checked,
                all_indexes=all_indexes,
                admin=admin,
                limits=Limits(rps, tokens_per_minute),
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                write=write,
            )
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def list(self) -> list[KeyRecord]:
        return sorted(self._current().values(), key=lambda r: r.name)

    def revoke(self, name: str) -> int:
        """Revoke the key ``name``; returns how many keys are left (the file stays, closed)."""
        with self._writing() as records:
            found = [i for i, r in records.items() if r.name == name]
            if not found:
                raise KeyStoreError(f"no key named {name!r}")
            for key_id in found:
                del records[key_id]
            return len(records)

    def has_keys(self) -> bool:
        """Whether any key is current (none: every key was revoked, or none was ever made)."""
        return bool(self._current())

    def closed(self) -> bool:
        """Whether keys have ever existed here: the file is written only by ``create`` and
        ``revoke``, so once it exists the service stays closed, with or without a current key.
        Raises ``KeysUnavailableError`` for a file that cannot be read."""
        self._current()
        return self._stamp is not None

    def verify(self, presented: str) -> Principal | None:
        """The key's principal, or None for anything that is not a current key."""
        match = _PRESENTED.fullmatch(presented.strip())
        if match is None:
            return None
        key_id, secret = match.groups()
        record = self._current().get(key_id)
        if record is None:
            return None
        if not hmac.compare_digest(_digest(record.salt, secret), record.hash):
            return None
        return record.principal
