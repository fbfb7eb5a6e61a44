"""Conversation benchmark: follow-up retrieval quality and the turn-prefix layout's TTFT.

    python -m bench.conversation --folder ../shared/data/sec-10q [--top-k 12] [--out FILE]
        [--dump prompts.json]

The SEC filings are synced into an index and the service runs in this process against an engine
it starts here (the CPU engine, as bench/ask.py). For each conversation of
bench/conversations.json (a first question naming its company, an elliptical follow-up, and the
follow-up's standalone form written by hand):

- quality: the first turn is answered; the follow-up is then retrieved three ways (top 5): with
  its history (the service's rewrite and fallback), alone, and as its written standalone form. A
  hit is a retrieved passage of the filings of the conversation's company; reported per way, with
  history's hit rate over the standalone forms' (goal >= 0.95).
- prompts: turn 1 at --top-k, then the follow-up with turn 1's answer as history: the service's
  own prompts, checked to begin with turn 1's prompt and answer, and the same follow-up with every
  passage ahead of the conversation (the layout that re-injects context each turn). Their TTFT on
  this machine's engine (bench/conversation_replay.py), and --dump writes them for a replay on
  another engine (the GPU machine: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from bench.ask import INDEX, Service, bench_engine, sync_index
from bench.conversation_replay import replay
from rag.ask import AskOptions, Citation, Exchange, FittedPrompt, Timings
from rag.config import default_cache_dir
from rag.engine import Message

SET = Path(__file__).with_name("conversations.json")
QUESTION = "Question: "  # how a turn's user message ends (rag/ask/prompt.py)


def companies(fitted: FittedPrompt) -> list[str]:
    """The file of each passage the turn may cite (new and quoted before)."""
    return [Citation.from_hit(n, hit).source for n, hit in fitted.numbered()]


def hit(sources: list[str], company: str) -> bool:
    return any(company in Path(source).name for source in sources)


def no_prefix(turn1: list[Message], turn2: list[Message]) -> list[Message]:
    """``turn2``'s content with every passage ahead of the conversation: the system prompt, the
    passages of both turns, then the questions and the answer (the layout of chat UIs that put
    retrieved context first each turn)."""
    system, first_user, answer, new_user = turn2[0], turn2[1], turn2[2], turn2[-1]
    old, q1 = first_user["content"].rsplit(QUESTION, 1)
    new, q2 = new_user["content"].rsplit(QUESTION, 1)
    passages = [old.strip(), new.strip()]
    return [
        {"role": "system", "content": system["content"] + "\n\n" + "\n\n".join(passages)},
        {"role": "user", "content": QUESTION + q1},
        answer,
        {"role": "user", "content": QUESTION + q2},
    ]


def run(service: Service, conversations: list[dict[str, str]], top_k: int) -> dict[str, Any]:
    answerer = service.app.state.services.answerer

    def prepare(question: str, k: int, history: tuple[Exchange, ...] = ()) -> FittedPrompt:
        options = AskOptions(question, top_k=k, index=INDEX, history=history)
        fitted: FittedPrompt = service.call(answerer.prepare(options, Timings()))
        return fitted

    rows, prompts = [], []
    for c in conversations:
        first = AskOptions(c["first"], top_k=5, index=INDEX, max_tokens=64)
        answer = service.call(answerer.answer(first)).answer
        history = (Exchange(c["first"], answer),)
        with_history = prepare(c["follow_up"], 5, history)
        ways = {
            "history": with_history,
            "alone": prepare(c["follow_up"], 5),
            "standalone": prepare(c["standalone"], 5),
        }
        row: dict[str, Any] = {"company": c["company"], "query": with_history.query}
        row |= {way: hit(companies(fitted), c["company"]) for way, fitted in ways.items()}
        rows.append(row)

        turn1 = prepare(c["first"], top_k)
        long_answer = service.call(answerer.answer(dataclasses.replace(first, top_k=top_k))).answer
        turn2 = prepare(c["follow_up"], top_k, (Exchange(c["first"], long_answer),))
        laid_out = [*turn1.messages, {"role": "assistant", "content": long_answer}]
        if turn2.messages[: len(laid_out)] != laid_out:
            raise RuntimeError(f"turn 2 does not begin with turn 1 and its answer: {c['first']!r}")
        prompts.append(
            {
                "first": turn1.messages,
                "follow_up": turn2.messages,
                "follow_up_no_prefix": no_prefix(turn1.messages, turn2.messages),
                "prompt_tokens": [turn1.prompt_tokens, turn2.prompt_tokens],
            }
        )
    n = len(rows)
    rates = {way: sum(r[way] for r in rows) / n for way in ("history", "alone", "standalone")}
    quality = {
        "conversations": n,
        "hit_rate": {way: round(rate, 3) for way, rate in rates.items()},
        "history_over_standalone": round(rates["history"] / rates["standalone"], 3),
        "rows": rows,
    }
    return {"quality": quality, "prompts": prompts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--conversations", type=Path, default=SET)
    parser.add_argument("--top-k", type=int, default=12, help="passages of each turn's prompt")
    parser.add_argument("--rounds", type=int, default=1, help="TTFT rounds over the set")
    parser.add_argument(
        "--ttft-conversations",
        type=int,
        default=5,
        help="conversations whose TTFT is measured here (a CPU engine prefills ~250 tokens/s)",
    )
    parser.add_argument("--dump", type=Path, help="write the prompts for bench.conversation_replay")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.folder.is_dir():
        raise SystemExit("needs the SEC filings of ../shared/data/sec-10q")
    conversations = json.loads(args.conversations.read_text(encoding="utf-8"))["conversations"]
    data_dir = default_cache_dir() / "bench" / "ask-data"
    sync_index(args.folder, data_dir)
    with bench_engine(data_dir) as (engine, settings):
        with Service(settings, 8792) as service:
            result = run(service, conversations, args.top_k)
        prompts = result.pop("prompts")
        if args.dump:
            args.dump.write_text(json.dumps({"conversations": prompts}), "utf-8")
        quality = {k: v for k, v in result["quality"].items() if k != "rows"}
        print(json.dumps({"quality": quality}, indent=2), flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
        if args.ttft_conversations:
            ttft = replay(engine.url, prompts[: args.ttft_conversations], args.rounds)
            result["ttft"] = ttft["summary"]
            print(json.dumps({"ttft": result["ttft"]}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    main()
