"""Server-sent events: one helper that formats a typed event."""

from __future__ import annotations

import json
from typing import Any


def sse_event(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
