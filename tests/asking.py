"""What the /ask tests share: a long catalogue to index, the reading of an event stream, and
the README's curl lines run as printed."""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
from pathlib import Path
from typing import Any

import httpx

PRODUCTS = ["lantern", "kettle", "compass", "satchel", "telescope", "barometer", "sextant"]
COLOURS = ["amber", "cobalt", "crimson", "jade", "ivory", "slate", "umber"]


def write_catalogue(path: Path, entries: int = 90) -> None:
    """A long Markdown catalogue: far more text than an 8K-token window holds."""
    lines = ["# Product catalogue\n"]
    for k in range(entries):
        product, colour = PRODUCTS[k % len(PRODUCTS)], COLOURS[(k * 3) % len(COLOURS)]
        lines.append(
            f"## Item {k}: the {colour} {product}\n\n"
            f"The {colour} {product} (catalogue number C-{1000 + k}) weighs {200 + 7 * k} grams "
            f"and ships from warehouse {k % 5 + 1}. It was introduced in {1990 + k % 30} and "
            f"its supplier guarantees spare parts for {k % 9 + 2} years. Customers praise the "
            f"{product} for its {colour} finish, its sturdy hinges and its careful packaging; "
            f"returns are accepted within {14 + k % 3 * 7} days. Each {product} is inspected "
            f"twice before it leaves warehouse {k % 5 + 1}, and the inspection report is filed "
            f"under reference R-{5000 + k}.\n"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def uncached_question() -> str:
    """A question of ~2000 tokens no earlier prompt shares (no prefix cache): its prefill on
    the CPU engine takes seconds."""
    alphabet = string.ascii_lowercase + string.digits
    words = ("".join(random.choices(alphabet, k=7)) for _ in range(490))
    return "What is the travel budget? " + " ".join(words)


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events, name = [], ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_curl_asks() -> list[str]:
    """The README's `curl ... /ask` commands (a trailing backslash continues a line), as a user
    copies them."""
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    return [ln for ln in text.splitlines() if ln.startswith("curl ") and "/ask" in ln]


def run_curl_line(line: str, port: int, api_key: str) -> tuple[str, str]:
    """Run a README line in bash (``$RAG_API_KEY`` set) against port; (body, HTTP status)."""
    command = line.replace("localhost:8000", f"127.0.0.1:{port}")
    done = subprocess.run(
        ["bash", "-c", command + " -w '\\n%{http_code}'"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAG_API_KEY": api_key},
    )
    body, _, status = done.stdout.rstrip().rpartition("\n")
    return body, status
