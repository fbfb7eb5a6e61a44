"""Schemathesis hooks of the contract run (tests/test_contract.py loads them through
SCHEMATHESIS_HOOKS): answers stay a few tokens long, whatever the generated request says."""

from __future__ import annotations

from typing import Any

import schemathesis

ANSWER_TOKENS = 4  # the contract is about shapes, not about prose


def _count(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def short_answers(case: schemathesis.Case) -> None:
    """Valid max_tokens values become small ones (an integral float stays a float: 8.0 is a
    valid count) and valid timeout_s values generous ones (a deadline the CPU engine always
    meets); invalid ones stay invalid. An ask that sets no length gets a short one."""
    body = case.body
    if not isinstance(body, dict):
        return
    for key in ("max_tokens", "max_completion_tokens"):  # /ask's, and /v1/chat/completions'
        value = body.get(key)
        if _count(value) and value >= 1 and float(value).is_integer():
            body[key] = type(value)(min(value, ANSWER_TOKENS))
    value = body.get("timeout_s")
    if _count(value) and 1 <= value <= 300:
        body["timeout_s"] = max(value, 120)
    asks = isinstance(body.get("question"), str) or isinstance(body.get("messages"), list)
    if asks and body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = ANSWER_TOKENS


@schemathesis.hook
def before_call(context: Any, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    short_answers(case)
