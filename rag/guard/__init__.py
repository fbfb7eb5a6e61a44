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
from rag.guard.capacity import (
    NOT_LEARNED,
    CapacityShare,
    EngineCapacity,
    learn_capacity,
    share,
)
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
from rag.guard.shared_keys import SharedKeyStore
from rag.guard.shared_limits import SharedRateLimiter

__all__ = [
    "ANONYMOUS",
    "AdmissionController",
    "AskTooLargeError",
    "AuthenticationError",
    "CapacityShare",
    "KeyStore",
    "KeyStoreError",
    "KeysUnavailableError",
    "EngineCapacity",
    "LANES",
    "Lane",
    "NOT_LEARNED",
    "OverloadedError",
    "PermissionDeniedError",
    "Principal",
    "RateLimitedError",
    "RateLimiter",
    "ServiceRecord",
    "SharedKeyStore",
    "SharedRateLimiter",
    "TOKEN_HEADER",
    "TimeoutTooLongError",
    "before",
    "keys_path",
    "learn_capacity",
    "listen_url",
    "remove_record",
    "running_service",
    "share",
    "write_record",
]
