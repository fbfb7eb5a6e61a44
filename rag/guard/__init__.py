"""What guards the service and its engine: API keys, per-key rate limits, admission sized to
the engine's KV cache, and the record a running service leaves for local commands."""

from __future__ import annotations

from rag.guard.admission import (
    LANES,
    AdmissionController,
    AskTooLargeError,
    Lane,
    OverloadedError,
    TimeoutTooLongError,
    before,
)
from rag.guard.capacity import NOT_LEARNED, learn_capacity
from rag.guard.keys import (
    ANONYMOUS,
    AuthenticationError,
    KeyStore,
    KeyStoreError,
    KeysUnavailableError,
    PermissionDeniedError,
    Principal,
    keys_path,
)
from rag.guard.ratelimit import RateLimitedError, RateLimiter
from rag.guard.service_record import (
    TOKEN_HEADER,
    ServiceRecord,
    listen_url,
    remove_record,
    running_service,
    write_record,
)

__all__ = [
    "ANONYMOUS",
    "AdmissionController",
    "AskTooLargeError",
    "AuthenticationError",
    "KeyStore",
    "KeyStoreError",
    "KeysUnavailableError",
    "LANES",
    "Lane",
    "NOT_LEARNED",
    "OverloadedError",
    "PermissionDeniedError",
    "Principal",
    "RateLimitedError",
    "RateLimiter",
    "ServiceRecord",
    "TOKEN_HEADER",
    "TimeoutTooLongError",
    "before",
    "keys_path",
    "learn_capacity",
    "listen_url",
    "remove_record",
    "running_service",
    "write_record",
]
