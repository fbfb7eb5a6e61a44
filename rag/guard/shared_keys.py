"""API keys that several API replicas read from Redis, so a revocation reaches all of them.

The records are those of the key file (rag/guard/keys.py: salted hashes, never a secret), kept
in the hash ``rag:keys`` by key id, with ``rag:keys:closed`` set once any key has existed and a
version counter bumped by every change. A replica looks at the version at most every
``refresh_s`` (0.25 s), so a key revoked with ``rag-keys revoke`` on any replica (with
``RAG_REDIS_URL`` set) is refused by every replica within a second. The first replica that
starts against an empty Redis imports the local key file, if there is one.

While Redis is away a replica goes on with the records it saw last (keys revoked meanwhile are
not seen until it is back); one that never saw them refuses keyed requests with 503
``keys_unavailable``, as for a key file it cannot read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from redis import Redis

from rag.guard.keys import KeyRecord, KeyStore, KeyStoreError, KeysUnavailableError, _check_record
from rag.shared import SharedState, SharedStateDown

log = logging.getLogger("rag.keys")


class SharedKeyStore(KeyStore):
    """``KeyStore`` with its records in Redis; ``path`` is the key file imported at first."""

    def __init__(
        self,
        shared: SharedState,
        path: Path,
        *,
        refresh_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(path)
        self.shared = shared
        self.refresh_s = refresh_s
        self._clock = clock
        self._hash = shared.key("keys")
        self._closed_key = shared.key("keys", "closed")
        self._version_key = shared.key("keys", "version")
        self._version: str | None = None
        self._checked = float("-inf")
        self._is_closed = False
        self._loaded = False

    def import_file(self) -> int:
        """Copy the local key file's records into an empty Redis; how many were copied."""
        if not self.path.exists():
            return 0
        records = self._read()  # KeysUnavailableError for a corrupt file, as without Redis

        def copy(client: Redis) -> int:
            if not client.set(self._closed_key, "1", nx=True):
                return 0  # another replica (or rag-keys) got there first: Redis is the truth
            pipe = client.pipeline()
            for record in records.values():
                pipe.hset(self._hash, record.id, json.dumps(record.to_json()))
            pipe.incr(self._version_key)
            pipe.execute()
            return len(records)

        try:
            copied: int = self.shared.call(copy)
        except SharedStateDown as exc:
            raise KeyStoreError(f"the shared key store is unreachable: {exc}") from exc
        if copied:
            log.info("keys: imported %d key(s) from %s into shared state", copied, self.path)
        return copied

    def _current(self) -> dict[str, KeyRecord]:
        now = self._clock()
        if self._loaded and now - self._checked < self.refresh_s:
            return self._records
        try:
            version, closed = self.shared.call(
                lambda c: c.mget([self._version_key, self._closed_key])
            )
            if closed is None and self._is_closed:
                # Redis lost its data (a restart without persistence): put back what we saw.
                self._restore()
                version = None  # re-read what is there now
            if version is None or version != self._version or not self._loaded:
                raw = self.shared.call(lambda c: c.hgetall(self._hash))
                self._records = self._parse(raw)
                self._version = None if version is None else str(version)
        except SharedStateDown as exc:
            if not self._loaded:
                raise self._unavailable(f"the shared key store is unreachable ({exc})") from exc
            return self._records  # the last records seen; SharedState warned once
        self._is_closed = self._is_closed or closed is not None  # never reopened by a lost flag
        self._loaded, self._checked = True, now
        return self._records

    def _restore(self) -> None:
        """Put back the records this replica saw last into a Redis that lost them, so a
        restarted Redis neither opens the service nor locks every key out."""
        records = dict(self._records)

        def restore(client: Redis) -> None:
            if client.set(self._closed_key, "1", nx=True):
                pipe = client.pipeline()
                for record in records.values():
                    pipe.hsetnx(self._hash, record.id, json.dumps(record.to_json()))
                pipe.incr(self._version_key)
                pipe.execute()
                log.warning("keys: Redis had lost them; restored the %d seen last", len(records))

        with contextlib.suppress(SharedStateDown):
            self.shared.call(restore)

    def _parse(self, raw: Mapping[Any, Any]) -> dict[str, KeyRecord]:
        try:
            records = [KeyRecord.from_json(json.loads(str(v))) for v in raw.values()]
            for record in records:
                _check_record(record)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._unavailable(f"a shared key record is corrupt ({exc})") from exc
        return {r.id: r for r in records}

    def _unavailable(self, reason: str) -> KeysUnavailableError:
        return KeysUnavailableError(
            f"the API keys cannot be checked: {reason}; check RAG_REDIS_URL and the Redis server"
        )

    def closed(self) -> bool:
        self._current()
        return self._is_closed

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict[str, KeyRecord]]:
        """The records under a Redis lock; what the block leaves in them is written."""
        try:
            lock = self.shared.call(lambda c: c.lock(self.shared.key("keys", "lock"), timeout=10))
            if not self.shared.call(lambda _: lock.acquire(blocking_timeout=10)):
                raise KeyStoreError("the shared key store is locked by another writer; try again")
        except SharedStateDown as exc:
            raise KeyStoreError(f"the shared key store cannot be written: {exc}") from exc
        try:
            raw = self.shared.call(lambda c: c.hgetall(self._hash))
            records = self._parse(raw)
            yield records

            def write(client: Redis) -> None:
                pipe = client.pipeline()
                pipe.delete(self._hash)
                if records:
                    mapping: dict[Any, Any] = {
                        i: json.dumps(r.to_json()) for i, r in records.items()
                    }
                    pipe.hset(self._hash, mapping=mapping)
                pipe.set(self._closed_key, "1")
                pipe.incr(self._version_key)
                pipe.execute()

            self.shared.call(write)
            self._checked = float("-inf")  # this process sees its own change at once
        except SharedStateDown as exc:
            raise KeyStoreError(f"the shared key store cannot be written: {exc}") from exc
        finally:
            with contextlib.suppress(SharedStateDown, Exception):
                self.shared.call(lambda _: lock.release())
