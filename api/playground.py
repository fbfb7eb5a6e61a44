"""The browser playground at `/`: one page (HTML, CSS and JS kept in the package), no build step,
nothing fetched from elsewhere. The page holds no data, so it is served without a key; its calls
to the API carry the key the user types in."""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response

router = APIRouter(include_in_schema=False)

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "citing.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Only this origin: no CDN, no inline script, no form posted elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    return files("api").joinpath("playground", name).read_bytes()


def _asset(name: str) -> Response:
    return Response(_read(name), media_type=ASSETS[name], headers=HEADERS)


@router.get("/")
async def playground() -> Response:
    """The playground page."""
    return _asset("index.html")


@router.get("/playground/{name}")
async def playground_asset(name: str) -> Response:
    """The page's script and style sheet."""
    if name not in ASSETS or name == "index.html":
        raise HTTPException(404, f"the playground has no file {name!r}")
    return _asset(name)
