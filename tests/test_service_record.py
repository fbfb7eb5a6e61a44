"""The service record rag-api leaves in its data dir (rag/guard/service_record.py): a token compared
as bytes, and a record whose pid now names another process is stale."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from rag.guard.service_record import read_record, running_service, write_record


def test_a_token_with_any_characters_is_compared_without_error(tmp_path: Path) -> None:
    record = write_record(tmp_path, "http://127.0.0.1:8000")
    assert record.accepts(record.token)
    assert not record.accepts("jeton-\u00e9t\u00e9")
    assert not record.accepts("")
    assert not record.accepts(None)


def test_a_record_whose_pid_was_reused_by_another_process_is_stale(tmp_path: Path) -> None:
    record = write_record(tmp_path, "http://127.0.0.1:8000")
    assert record.pid == os.getpid()
    assert running_service(tmp_path) == record
    assert read_record(tmp_path) == record
    assert not replace(record, created=record.created - 3600).alive()  # type: ignore[operator]
    older = replace(record, created=None)  # records from before the start time was kept
    assert older.alive()
