"""Prompt fitting at a long window: `python -m bench.fitting --tokenizer DIR`.

Fits `top_k: "auto"` prompts (the window filled, best first) over passages cut from the SciFact
abstracts, with the served model's tokenizer in-process (Qwen3's on the H200), exactly as the
service does (`rag.ask.prompt.PromptBudget`): cold (no passage counted yet), then warm (every
block's count remembered, as for the next ask over the same passages). It also reports how long the
event loop was held during a fit (a 1 ms ticker's worst lateness), and checks the derived count
against one tokenisation of the whole assembled prompt, timed for comparison. Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rag.ask import FittedPrompt, LocalTokenCounter, PromptBudget
from rag.engine import EngineClient
from rag.store import Hit

DEFAULT_CORPUS = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"
)
QUESTION = "Which treatments reduced mortality in the randomised trials?"


def passages(corpus: Path, count: int, chars: int = 900) -> list[Hit]:
    """``count`` passages of about ``chars`` characters (~200 MiniLM tokens, the default chunk)."""
    hits: list[Hit] = []
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            text = f"{doc.get('title', '')}\n{doc.get('text', '')}"
            for start in range(0, len(text), chars):
                payload = {
                    "root": "scifact",
                    "source": f"{doc['_id']}.txt",
                    "page": None,
                    "heading": [doc.get("title", "")[:60]],
                    "text": text[start : start + chars],
                    "char_start": start,
                }
                hits.append(Hit(f"{doc['_id']}:{start}", 1.0 - len(hits) * 1e-6, payload))
                if len(hits) == count:
                    return hits
    return hits


async def loop_held_ms(work: Callable[[], Awaitable[FittedPrompt]]) -> tuple[FittedPrompt, float]:
    """Runs ``work`` beside a 1 ms ticker; returns its result and the ticker's worst lateness."""
    worst = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, (time.perf_counter() - t) * 1000 - 1)

    ticker = asyncio.create_task(tick())
    try:
        return await work(), worst
    finally:
        done.set()
        await ticker


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    counter = LocalTokenCounter(args.tokenizer)
    engine = EngineClient("http://127.0.0.1:9")  # never called: the window is given
    hits = passages(args.corpus, args.candidates)
    rows: dict[str, Any] = {}
    try:
        for phase in ("cold", "warm"):
            times, held = [], []
            fitted: FittedPrompt | None = None
            budget = PromptBudget(engine, counter, max_model_len=args.window)
            for repeat in range(args.repeats):
                if phase == "cold":
                    budget = PromptBudget(engine, counter, max_model_len=args.window)
                elif repeat == 0:
                    await budget.fit(
                        QUESTION,
                        hits,
                        limit=None,
                        max_output_tokens=args.max_tokens,
                        order="canonical",
                    )

                async def one(b: PromptBudget = budget) -> FittedPrompt:
                    return await b.fit(
                        QUESTION,
                        hits,
                        limit=None,
                        max_output_tokens=args.max_tokens,
                        order="canonical",
                    )

                t = time.perf_counter()
                fitted, lateness = await loop_held_ms(one)
                times.append((time.perf_counter() - t) * 1000)
                held.append(lateness)
            assert fitted is not None
            rows[phase] = {
                "fit_ms_p50": round(statistics.median(times), 1),
                "fit_ms_max": round(max(times), 1),
                "loop_held_ms_max": round(max(held), 1),
                "passages": len(fitted.passages),
                "prompt_tokens": fitted.prompt_tokens,
                "fill": round(fitted.prompt_tokens / (args.window - args.max_tokens), 4),
            }
        assert fitted is not None
        t = time.perf_counter()
        whole = await asyncio.to_thread(counter.count_chat_now, fitted.messages)
        rows["whole_prompt_tokenised"] = {
            "ms": round((time.perf_counter() - t) * 1000, 1),
            "tokens": whole,
            "equals_derived": whole == fitted.prompt_tokens,
        }
    finally:
        await engine.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="the served model's tokenizer folder")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--window", type=int, default=262_144)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--candidates", type=int, default=1_600, help="ranked passages given")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench-fitting.json"))
    args = parser.parse_args()
    rows = asyncio.run(measure(args))
    print(f"window {args.window}, {args.candidates} candidates, tokenizer {args.tokenizer}")
    print("| phase | fit p50 / max ms | event loop held max ms | passages | tokens | fill |")
    print("| --- | --- | --- | --- | --- | --- |")
    for phase in ("cold", "warm"):
        r = rows[phase]
        print(
            f"| {phase} | {r['fit_ms_p50']} / {r['fit_ms_max']} | {r['loop_held_ms_max']} | "
            f"{r['passages']} | {r['prompt_tokens']} | {r['fill']:.2%} |"
        )
    whole = rows["whole_prompt_tokenised"]
    print(
        f"whole prompt tokenised once: {whole['ms']} ms, {whole['tokens']} tokens, "
        f"equals the derived count: {whole['equals_derived']}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **rows}))


if __name__ == "__main__":
    main()
