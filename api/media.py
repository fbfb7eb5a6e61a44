"""What a route's body must be sent as: JSON for /ask, the chat completions and sync, multipart
for uploads; anything else is 415 with what to send.

A form, text/plain or untyped POST is what a page on another site can make a browser send
without asking first (no CORS preflight); refusing it keeps such pages off a keyless service on
localhost. The openai clients, `rag-ask`, the playground and `curl -H 'Content-Type:
application/json'` send JSON.
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request

from api.auth import PrincipalDep

JSON_EXAMPLE = "curl -H 'Content-Type: application/json' -d '{...}'"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def json_body(request: Request, _: PrincipalDep) -> None:
    """415 unless the body is declared JSON (`application/json` or `...+json`); after the key
    check, so that a caller without a key hears 401 first."""
    media = _media_type(request)
    if media != "application/json" and not media.endswith("+json"):
        sent = f"'{media}'" if media else "no Content-Type"
        raise HTTPException(
            415,
            f"the body must be JSON sent as 'Content-Type: application/json' ({sent} was "
            f"sent), e.g. {JSON_EXAMPLE}",
        )


def multipart_body(request: Request, _: PrincipalDep) -> None:
    """415 unless the body is `multipart/form-data` (files in `files` fields), after the key."""
    media = _media_type(request)
    if media != "multipart/form-data":
        sent = f"'{media}'" if media else "no Content-Type"
        raise HTTPException(
            415,
            f"upload files as multipart/form-data ({sent} was sent), e.g. "
            "curl -F files=@report.pdf",
        )


JsonBody = Depends(json_body)
MultipartBody = Depends(multipart_body)
