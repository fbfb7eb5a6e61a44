"""`rag-ingest` when a running `rag-api` holds the embedded store: the sync is handed to it.

Qdrant Edge lets one process open an index; the service records where it listens in the data
dir (rag/guard/service_record.py). rag-ingest then asks the service to sync the same folders
(`POST /v1/indexes/{index}/sync`, with RAG_API_KEY and the record's local token), follows the
job to its end and returns the job's report - the one `rag-ingest --json` prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from ingest.exit_codes import EXIT_STORE, EXIT_USAGE
from rag.guard import TOKEN_HEADER, ServiceRecord

POLL_S = 0.5
# Job error types (rag/ingest/jobs.py) that are the caller's to fix; the others are the store's.
USAGE_ERRORS = {"index_mismatch", "invalid_request", "unknown_index"}

Progress = Callable[[Any, int, int], None]  # (file, its bytes, bytes of the whole run)


class HandoffError(Exception):
    """The service refused or failed the sync; ``code`` is rag-ingest's exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or response.reason_phrase


def _refused(response: httpx.Response, index: str) -> HandoffError:
    status, message = response.status_code, _message(response)
    if status == 401:
        hint = (
            "set RAG_API_KEY to a key that may write it "
            f"(rag-keys create NAME --index {index} --write)"
        )
        return HandoffError(
            f"the service needs an API key to write index {index!r}: {hint}", EXIT_USAGE
        )
    if status == 403:
        if "may not write" in message:
            message += f"; it needs write rights (rag-keys create NAME --index {index} --write)"
        return HandoffError(f"the service refused the sync: {message}", EXIT_USAGE)
    if status in (404, 409, 413, 422):
        return HandoffError(message, EXIT_USAGE)
    return HandoffError(f"the service failed ({status}): {message}", EXIT_STORE)


class Handoff:
    """A sync carried out by the service of ``record``."""

    def __init__(self, record: ServiceRecord, api_key: str | None, *, timeout: float = 60) -> None:
        self.record = record
        headers = {TOKEN_HEADER: record.token}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.client = httpx.Client(base_url=record.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Handoff:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def _call(self, method: str, url: str, index: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise HandoffError(
                f"the service holding this data dir (pid {self.record.pid}) does not answer at "
                f"{self.record.url} ({exc}); wait until it is up, or stop it",
                EXIT_STORE,
            ) from exc
        if response.status_code >= 400:
            raise _refused(response, index)
        body: dict[str, Any] = response.json()
        return body

    def sync(
        self,
        index: str,
        paths: Sequence[Path],
        *,
        delete: bool = True,
        follow_links: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The job's report once the service has synced ``paths`` into ``index``."""
        body: dict[str, Any] = {"folders": [os.path.abspath(p) for p in paths], "delete": delete}
        if follow_links:  # sent only when asked: a service from before the option still syncs
            body["follow_links"] = True
        job = self._call("POST", f"/v1/indexes/{index}/sync", index, json=body)
        shown = 0
        while True:
            done = job["progress"]["bytes_done"]
            if progress is not None and done > shown:
                progress(None, done - shown, job["progress"]["bytes_total"])
                shown = done
            if job["state"] in ("succeeded", "failed"):
                break
            time.sleep(POLL_S)
            job = self._call("GET", f"/v1/jobs/{job['id']}", index)
        if job["state"] == "failed":
            error = job["error"] or {}
            code = EXIT_USAGE if error.get("type") in USAGE_ERRORS else EXIT_STORE
            raise HandoffError(str(error.get("message", "the sync failed")), code)
        report: dict[str, Any] = job["report"]
        return report
