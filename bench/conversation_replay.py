"""Replays conversation prompts dumped by bench/conversation.py on any OpenAI-compatible vLLM
engine, e.g. the GPU machine's, where the service itself need not be installed (httpx only):

    python -m bench.conversation_replay --prompts prompts.json --engine-url http://127.0.0.1:8000

For each conversation, from an empty prefix cache (`/reset_prefix_cache`, VLLM_SERVER_DEV_MODE=1):
the first turn's time to first token, then the follow-up laid out after it (turn-prefix layout,
as the service builds it), then the same follow-up with every passage ahead of the conversation
(how chat UIs re-inject context each turn: only the system prompt is shared). Prints and writes
JSON with the p50/p95 of each and the follow-ups' ratios to the first turns.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

KINDS = ("first", "follow_up", "follow_up_no_prefix")


def ttft_ms(client: httpx.Client, model: str, messages: list[dict[str, str]]) -> tuple[float, int]:
    """Time to the first streamed content, and the prompt's tokens as the engine counted them."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": 2,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    prompt_tokens = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                first = (time.perf_counter() - started) * 1000
            if chunk.get("usage"):
                prompt_tokens = int(chunk["usage"]["prompt_tokens"])
    if first is None:
        raise RuntimeError("the engine streamed no content")
    return first, prompt_tokens


def p50_p95(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


def replay(engine_url: str, prompts: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=engine_url, timeout=600) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        warm = prompts[0]["first"]
        ttft_ms(client, model, warm)  # compiles and warms the engine; not counted
        for _ in range(rounds):
            for conversation in prompts:
                client.post("/reset_prefix_cache").raise_for_status()
                row: dict[str, Any] = {}
                for kind in KINDS:
                    row[kind], row[f"{kind}_tokens"] = ttft_ms(client, model, conversation[kind])
                rows.append(row)
    summary: dict[str, Any] = {"asks": len(rows), "model": model}
    for kind in KINDS:
        summary[f"{kind}_ttft_ms"] = p50_p95([r[kind] for r in rows])
        summary[f"{kind}_prompt_tokens"] = p50_p95([float(r[f"{kind}_tokens"]) for r in rows])
    for kind in KINDS[1:]:
        ratios = [r[kind] / r["first"] for r in rows]
        summary[f"{kind}_over_first"] = round(statistics.median(ratios), 3)
    return {"summary": summary, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--engine-url", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    prompts = json.loads(args.prompts.read_text(encoding="utf-8"))["conversations"]
    result = replay(args.engine_url, prompts, args.rounds)
    print(json.dumps(result["summary"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
