"""Swagger UI at /docs (RAG_API_DOCS=on), served from the package: its script and style sheet
come with `fastapi-offline` (Swagger UI 5, for OpenAPI 3.1), the page and its start-up script
from here. Nothing is fetched from another origin, and no inline script runs: this origin is
the playground's, whose API key sits in the browser's local storage. Off by default, where
/docs is a 404 and /openapi.json is the document."""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import APIRouter, Response

router = APIRouter(include_in_schema=False)

PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rag-service API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body>
</html>
"""
START = b"""window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });\n"""
# Swagger UI sets inline styles and draws its icons from data: URLs; scripts only from here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"}
BUNDLED = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}


@functools.cache
def _bundled(name: str) -> bytes:
    return files("fastapi_offline").joinpath("static", name).read_bytes()


@router.get("/docs")
async def docs() -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/docs/start.js")
async def start_script() -> Response:
    return Response(START, media_type="text/javascript; charset=utf-8", headers=HEADERS)


@router.get("/docs/swagger-ui-bundle.js")
async def swagger_script() -> Response:
    return _asset("swagger-ui-bundle.js")


@router.get("/docs/swagger-ui.css")
async def swagger_style() -> Response:
    return _asset("swagger-ui.css")


def _asset(name: str) -> Response:
    return Response(_bundled(name), media_type=BUNDLED[name], headers=HEADERS)
