"""Where a running service listens, recorded in its data dir so that `rag-ingest` can find it.

`rag-api` on the embedded store (no RAG_QDRANT_URL: the store rag-ingest would open itself)
writes ``<data_dir>/service.json`` (mode 0600) once it serves and removes it at shutdown::

    {"url": "http://127.0.0.1:8000", "pid": 4242, "created": 1763880000.12, "token": "<random>",
     "started_at": "..."}

A record whose process is gone is stale (a service that was killed): it is ignored. The
process's start time is recorded with its pid, so a pid reused by another process is not
taken for the service. The token
proves that a caller can read the service's data dir, i.e. runs on this machine as the
service's operator: with it a sync may name any folder the service can read (see
``rag.ingest.server_paths``). It is compared in constant time and never logged.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from rag.store import private_dir

RECORD_FILE = "service.json"
TOKEN_HEADER = "X-Rag-Local-Token"


@dataclass(frozen=True)
class ServiceRecord:
    url: str
    pid: int
    token: str
    started_at: str = ""
    created: float | None = None  # the process's start time (psutil); None in older records

    def alive(self) -> bool:
        """Whether the process that wrote the record still runs (a reused pid is not ours)."""
        try:
            process = psutil.Process(self.pid)
            if self.created is not None and abs(process.create_time() - self.created) > 0.01:
                return False
            return process.is_running()
        except psutil.Error:
            return False

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is the token, in constant time (any characters: bytes compared)."""
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.token.encode())


def record_path(data_dir: Path) -> Path:
    return data_dir / RECORD_FILE


def listen_url(host: str, port: int) -> str:
    """The URL a local client reaches a service bound to ``host`` at."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_record(data_dir: Path, url: str) -> ServiceRecord:
    """This process's record, replacing any earlier one atomically."""
    record = ServiceRecord(
        url=url,
        pid=os.getpid(),
        created=psutil.Process().create_time(),
        token=secrets.token_urlsafe(32),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    private_dir(data_dir)
    path = record_path(data_dir)
    tmp = path.with_name(f".{RECORD_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record.__dict__, f)
    os.replace(tmp, path)
    return record


def remove_record(data_dir: Path, record: ServiceRecord) -> None:
    """Remove the record if it is still this one (a newer service may have replaced it)."""
    current = read_record(data_dir)
    if current is not None and current.token == record.token:
        with contextlib.suppress(FileNotFoundError):
            record_path(data_dir).unlink()


def read_record(data_dir: Path) -> ServiceRecord | None:
    try:
        data = json.loads(record_path(data_dir).read_text(encoding="utf-8"))
        return ServiceRecord(
            url=str(data["url"]),
            pid=int(data["pid"]),
            token=str(data["token"]),
            started_at=str(data.get("started_at", "")),
            created=None if data.get("created") is None else float(data["created"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_service(data_dir: Path) -> ServiceRecord | None:
    """The record of the service that holds this data dir, if one is running."""
    record = read_record(data_dir)
    return record if record is not None and record.alive() else None
