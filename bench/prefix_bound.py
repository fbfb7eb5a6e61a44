"""Prefix-cache bound: how much of a question set's prompt tokens any passage order could reuse.

    python -m bench.prefix_bound --folder ../shared/data/sec-10q \
        --questions ../shared/data/sec-10q/qna_data.csv --tokenizer /tmp/qwen3-tok \
        [--asks 40 --top-k 5 --block 16 --out prefix-bound.json]

--tokenizer is the served model's tokenizer folder; for the H200 runs (Qwen3): the files of
.gpu-kit/b/model/ plus .gpu-kit/b/tokenizer.json.xz unpacked beside them.

Offline, no engine: the folder is synced into an embedded Edge store under --data-dir (real
MiniLM, the project's FolderSync), each question retrieves its top_k passages with the service's
Retriever (hybrid, DBSF fusion), and each prompt is built by rag/ask/prompt.py (``order_passages``
then ``build_messages``, as ``PromptBudget.fit`` does when every passage fits, which top_k 5 does
in a large window) and tokenised with the served model's tokenizer and chat template. An
infinite prefix cache in blocks of --block tokens (vLLM's: a hit is a run of whole blocks from
the start, never the prompt's last token) then gives, over all prompt tokens:

- ``simulated``: the hit ratio of canonical and score order, and of two other orders: ``popular``
  (passages retrieved by more of the set's questions first: an offline, whole-set statistic)
  and ``greedy`` (online: follow the longest path of earlier prompts' passage sequences made of
  this prompt's passages, then the rest by how often earlier asks retrieved them);
- ``bound_union``: for any order, a prompt can reuse at most the part every prompt shares (chat
  template, system prompt, passage header) plus its passages that some earlier prompt held, as
  if all were placed first in one identical sequence; block-aligned down;
- ``bound_pairwise``: tighter and still a bound: a cache hit is a prefix of ONE earlier prompt,
  so at most the shared part plus the passages held in common with the best single earlier one.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ask import INDEX, load_questions, sync_index
from rag.ask import (
    BLOCK_END,
    Retriever,
    build_messages,
    canonical_key,
    order_passages,
    passage_block,
)
from rag.embed import Embedder, SparseEncoder
from rag.indexes import IndexSpec
from rag.store import EdgeStore, Hit

Orderer = Callable[[Sequence[Hit]], list[Hit]]


@dataclass(frozen=True)
class Ask:
    question: str
    hits: list[Hit]  # best first


class PrefixCache:
    """An infinite block-hash prefix cache: a block hits when it and every block before it did."""

    def __init__(self, block: int) -> None:
        self.block = block
        self._seen: set[int] = set()

    def ask(self, ids: Sequence[int]) -> int:
        """Tokens of ``ids`` served from the cache; then all its whole blocks are cached."""
        chain: list[int] = []
        h = 0
        for start in range(0, len(ids) - self.block + 1, self.block):
            h = hash((h, tuple(ids[start : start + self.block])))
            chain.append(h)
        hit_blocks = 0
        cap = (len(ids) - 1) // self.block  # the last token is always computed
        while hit_blocks < min(cap, len(chain)) and chain[hit_blocks] in self._seen:
            hit_blocks += 1
        self._seen.update(chain)
        return hit_blocks * self.block


def retrieve_all(data_dir: Path, questions: list[str], top_k: int) -> list[Ask]:
    """Each question's top_k passages, retrieved as the service retrieves them."""
    store = EdgeStore(data_dir)
    try:
        embedder = Embedder(IndexSpec(INDEX).embed_model)
        retriever = Retriever(store, embedder, SparseEncoder(), mode="hybrid", fusion="dbsf")
        return [Ask(q, retriever.retrieve(INDEX, q, top_k).hits) for q in questions]
    finally:
        store.close()


def popular_order(asks: Sequence[Ask]) -> Orderer:
    """Passages retrieved by more of the set's questions first, then canonical order."""
    counts = Counter(h.id for a in asks for h in a.hits)
    return lambda hits: sorted(hits, key=lambda h: (-counts[h.id], canonical_key(h)))


class GreedyOrder:
    """Online: the longest path of earlier prompts' passage sequences that this prompt's passages
    can follow (the most-travelled branch at each step), then the rest by how many earlier asks
    retrieved them, then canonical order. Call it once per ask, in ask order."""

    def __init__(self) -> None:
        self._trie: dict[str, Any] = {}
        self._counts: Counter[str] = Counter()

    def __call__(self, hits: Sequence[Hit]) -> list[Hit]:
        left = {h.id: h for h in hits}
        chosen: list[Hit] = []
        node = self._trie
        while True:
            options = [k for k in node if k in left and k != "#"]
            if not options:
                break
            best = max(options, key=lambda k: (node[k]["#"], k))
            chosen.append(left.pop(best))
            node = node[best]
        rest = sorted(left.values(), key=lambda h: (-self._counts[h.id], canonical_key(h)))
        ordered = chosen + rest
        node = self._trie
        for h in ordered:
            node = node.setdefault(h.id, {"#": 0})
            node["#"] += 1
        self._counts.update(h.id for h in ordered)
        return ordered


class Tokens:
    """The served model's tokenizer and chat template, as the engine applies them."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(path))

    def prompt(self, ask: Ask, ordered: list[Hit]) -> list[int]:
        messages = build_messages(ordered, ask.question)
        ids = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids)

    def counts(self, texts: list[str]) -> list[int]:
        encoded = self._tokenizer.backend_tokenizer.encode_batch_fast(
            texts, add_special_tokens=False
        )
        return [len(e.ids) for e in encoded]


def simulate(tok: Tokens, asks: Sequence[Ask], order: Orderer, block: int) -> dict[str, Any]:
    cache = PrefixCache(block)
    total = cached = 0
    for ask in asks:
        ids = tok.prompt(ask, order(ask.hits))
        total += len(ids)
        cached += cache.ask(ids)
    return {"prompt_tokens": total, "cached_tokens": cached, "hit_ratio": round(cached / total, 4)}


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs):
            return i
    return n


def bounds(tok: Tokens, asks: Sequence[Ask], block: int) -> dict[str, Any]:
    """The union and pairwise bounds over any passage order (see the module doc)."""
    prompts = [tok.prompt(a, order_passages(a.hits, "canonical")) for a in asks]
    shared = common_prefix(prompts)
    cost: dict[str, int] = {}
    for a in asks:
        ordered = order_passages(a.hits, "canonical")
        texts = [passage_block(n, h) + BLOCK_END for n, h in enumerate(ordered, start=1)]
        for h, c in zip(ordered, tok.counts(texts), strict=True):
            cost[h.id] = max(cost.get(h.id, 0), c)
    union_hit = pair_hit = 0
    earlier: list[tuple[str, frozenset[str]]] = []
    seen: set[str] = set()
    for a, ids in zip(asks, prompts, strict=True):
        mine = frozenset(h.id for h in a.hits)
        cap = (len(ids) - 1) // block * block
        if not earlier:
            union = pair = 0  # nothing is cached before the first prompt
        elif any(q == a.question and s == mine for q, s in earlier):
            union = pair = cap  # the same prompt again: all of it but the last token
        else:
            union = shared + sum(cost[i] for i in mine & seen)
            pair = shared + max((sum(cost[i] for i in mine & s) for _, s in earlier), default=0)
        union_hit += min(cap, union // block * block)
        pair_hit += min(cap, pair // block * block)
        earlier.append((a.question, mine))
        seen |= mine
    total = sum(len(p) for p in prompts)
    return {
        "prompt_tokens": total,
        "shared_prefix_tokens": shared,
        "shared_prefix_ratio": round((len(asks) - 1) * (shared // block * block) / total, 4),
        "bound_union": round(union_hit / total, 4),
        "bound_pairwise": round(pair_hit / total, 4),
        "distinct_passages": len(cost),
        "passage_slots": sum(len(a.hits) for a in asks),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    sync_index(args.folder, args.data_dir)
    asks = retrieve_all(args.data_dir, load_questions(args.questions, args.asks), args.top_k)
    tok = Tokens(args.tokenizer)
    orders: dict[str, Orderer] = {
        "canonical": lambda hits: order_passages(hits, "canonical"),
        "score": lambda hits: order_passages(hits, "score"),
        "popular": popular_order(asks),
        "greedy": GreedyOrder(),
    }
    simulated = {name: simulate(tok, asks, o, args.block) for name, o in orders.items()}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "argv": {k: str(v) for k, v in vars(args).items()},
        "asks": len(asks),
        "simulated": simulated,
        "bounds": bounds(tok, asks, args.block),
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_table(result: dict[str, Any]) -> None:
    b = result["bounds"]
    print(f"\n| {result['asks']} asks, block {result['argv']['block']} | hit ratio |")
    print("| --- | --- |")
    for name, s in result["simulated"].items():
        print(f"| simulated, {name} order | {s['hit_ratio']:.1%} |")
    print(
        f"| shared prefix alone ({b['shared_prefix_tokens']} tokens) | "
        f"{b['shared_prefix_ratio']:.1%} |"
    )
    print(f"| bound, any order (union of earlier passages) | {b['bound_union']:.1%} |")
    print(f"| bound, any order (best single earlier prompt) | {b['bound_pairwise']:.1%} |")
    print(
        f"\n{b['distinct_passages']} distinct passages in {b['passage_slots']} slots; "
        f"{b['prompt_tokens']} prompt tokens (canonical)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True, help="the served model's")
    parser.add_argument("--asks", type=int, default=40)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--block", type=int, default=16, help="the engine's KV block size")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/prefix-bound-data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/prefix-bound.json"))
    args = parser.parse_args()
    if not args.folder.is_dir() or not args.questions.is_file():
        raise SystemExit("needs the SEC filings and questions of ../shared/data/sec-10q")
    result = run(args)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_table(result)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
