"""Load test of a running service: virtual users, Poisson arrivals, a realistic mix of asks.

    python -m bench.load --url http://127.0.0.1:8000 --api-key KEY \
        --questions ../shared/data/sec-10q/qna_data.csv --users 100 --rate 2 --duration 60

The plan (bench/load_plan.py) gives each of --users virtual users Poisson arrivals, together at
--rate asks/s for --duration s, each a short (top_k 5), analytical (top_k 20) or long-context
(`top_k: "auto"`, at most --max-long) ask. A user has one ask in flight at a time, as a person
would: an arrival while its previous ask runs starts when that one ends (counted as late).
Every ask is streamed (`"stream": true`); TTFT is the time to its first `token` event. Each ask
is bounded by --timeout (--long-timeout for "auto" asks) and the whole run by --time-limit:
what is still running then is cancelled and counted, so the run never hangs.
Beside the asks, /metrics is read every 0.5 s for `process_resident_memory_bytes` (else the RSS
of the local process listening on the URL's port, by psutil) and before and after the run for
`rag_admission_rejections_total` and the engine's prefix-cache counters (a re-run of the same
seed asks the same prompts: its hit ratio near 1 says the figures are warm-cache ones).
--repeat FRACTION makes that share of the asks repeat an earlier ask exactly, for the answer
cache (RAG_ANSWER_CACHE): each `done` event's `timings.cached` says whether it was a hit.
Prints a table (bench/load_report.py); --json-out writes all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.load_plan import PlannedAsk, load_questions, parse_mix, plan_asks
from bench.load_report import Outcome, render, summarise

SAMPLE_S = 0.5
ADMISSION_METRIC = "rag_admission_rejections_total"
CACHE_METRICS = ("rag_engine_prefix_cache_hits", "rag_engine_prefix_cache_queries")
RSS_METRIC = "process_resident_memory_bytes"


def metric_sum(text: str, name: str) -> float | None:
    """The sum of every sample called ``name`` in Prometheus text: 0 for a declared metric
    without samples yet (a labelled counter before its first count), None for an unknown one."""
    values: list[float] = []
    declared = False
    for family in text_string_to_metric_families(text):
        declared = declared or family.name in (name, name.removesuffix("_total"))
        values.extend(s.value for s in family.samples if s.name == name)
    return sum(values) if values or declared else None


def metric_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """The samples called ``name`` in Prometheus text, summed per value of ``label``."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                key = s.labels.get(label, "")
                found[key] = found.get(key, 0.0) + s.value
    return found


async def read_sse(response: httpx.Response, outcome: Outcome, started: float) -> None:
    """Fill ``outcome`` from the stream: TTFT at the first token, ok at `done`, or the error."""
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:].strip()
            if event == "token" and outcome.ttft_s is None:
                outcome.ttft_s = round(time.perf_counter() - started, 3)
        elif line.startswith("data: ") and event == "error":
            outcome.error = str(json.loads(line[6:]).get("type", "error"))
        elif line.startswith("data: ") and event == "done":
            outcome.ok = outcome.error is None
            cached = (json.loads(line[6:]).get("timings") or {}).get("cached")
            outcome.cached = None if cached is None else bool(cached)


async def ask_once(
    client: httpx.AsyncClient,
    ask: PlannedAsk,
    body: dict[str, Any],
    timeout_s: float,
    t0: float,
    outcomes: list[Outcome],
) -> None:
    """One streamed ask, in ``outcomes`` from its start (so the time limit can count it)."""
    started = time.perf_counter()
    outcome = Outcome(ask.kind, ask.user, ask.at_s, round(started - t0, 3))
    outcome.repeat = ask.repeat_of is not None
    outcomes.append(outcome)
    payload = {**body, "question": ask.question, "top_k": ask.top_k, "stream": True}
    try:
        async with asyncio.timeout(timeout_s), client.stream("POST", "/ask", json=payload) as r:
            outcome.status = r.status_code
            if r.status_code == 200:
                await read_sse(r, outcome, started)
            else:
                await r.aread()
                try:
                    outcome.error = str(r.json()["error"]["type"])
                except (ValueError, KeyError, TypeError):
                    outcome.error = None
    except TimeoutError:
        outcome.error, outcome.ok = "timeout", False
    except httpx.HTTPError as exc:
        outcome.error, outcome.ok = f"transport: {type(exc).__name__}", False
    except asyncio.CancelledError:
        outcome.error, outcome.ok = "time_limit", False
        raise
    finally:
        outcome.total_s = round(time.perf_counter() - started, 3)


async def user(
    client: httpx.AsyncClient,
    asks: list[PlannedAsk],
    args: argparse.Namespace,
    t0: float,
    outcomes: list[Outcome],
) -> None:
    """One virtual user: its asks in order, each at its arrival or when the previous one ends."""
    body: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.index:
        body["index"] = args.index
    for ask in asks:
        await asyncio.sleep(max(0.0, t0 + ask.at_s - time.perf_counter()))
        long = ask.kind == "long"
        extra = {"timeout_s": args.long_deadline} if long and args.long_deadline else {}
        timeout = args.long_timeout if long else args.timeout
        await ask_once(client, ask, body | extra, timeout, t0, outcomes)


def listening_process(url: str) -> psutil.Process | None:
    """The local process listening on the URL's port, when the host is this machine."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if (
                conn.status == psutil.CONN_LISTEN
                and conn.pid
                and conn.laddr
                and conn.laddr.port == port
            ):
                return psutil.Process(conn.pid)
    except psutil.AccessDenied:
        return None
    return None


class RssSampler:
    """Peak RSS of the API: its own /metrics gauge, or psutil on the local listener."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url
        self.peak = 0.0
        self.samples = 0
        self.source = ""
        self.process: psutil.Process | None = None

    async def sample(self) -> None:
        if self.source != "psutil":
            try:
                r = await self.client.get("/metrics", timeout=5)
                value = metric_sum(r.text, RSS_METRIC) if r.status_code == 200 else None
            except httpx.HTTPError:
                value = None
            if value is not None:
                self.source = "/metrics"
                self._keep(value)
                return
            if self.source == "/metrics":
                return  # a missed scrape: the next one counts
            self.process = self.process or listening_process(self.url)
        if self.process is not None:
            try:
                self.source = "psutil"
                self._keep(float(self.process.memory_info().rss))
            except psutil.Error:
                self.process = None

    def _keep(self, value: float) -> None:
        self.peak = max(self.peak, value)
        self.samples += 1

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE_S)

    def report(self) -> dict[str, Any] | None:
        if not self.samples:
            return None
        return {"mb": round(self.peak / 1e6, 1), "source": self.source, "samples": self.samples}


async def counters(client: httpx.AsyncClient) -> dict[str, float | None]:
    """The service's counters that the run changes, as its /metrics shows them now."""
    names = (ADMISSION_METRIC, *CACHE_METRICS)
    try:
        r = await client.get("/metrics", timeout=10)
    except httpx.HTTPError:
        return dict.fromkeys(names)
    if r.status_code != 200:
        return dict.fromkeys(names)
    found = {name: metric_sum(r.text, name) for name in names}
    by_reason = metric_by_label(r.text, ADMISSION_METRIC, "reason")
    return found | {f"{ADMISSION_METRIC}:{k}": v for k, v in by_reason.items()}


def deltas(before: Mapping[str, float | None], after: Mapping[str, float | None]) -> dict[str, Any]:
    """Admission rejections and the engine's prefix-cache hit ratio over the run, where known."""
    change: dict[str, float] = {}
    prefix = f"{ADMISSION_METRIC}:"  # per reason; a reason first counted during the run is new
    for name in before.keys() | after.keys():
        old, new = before.get(name), after.get(name)
        if old is None and name.startswith(prefix) and before.get(ADMISSION_METRIC) is not None:
            old = 0.0
        if old is not None and new is not None and not math.isnan(old - new):
            change[name] = new - old
    found: dict[str, Any] = {}
    if ADMISSION_METRIC in change:
        found["admission_metric"] = change[ADMISSION_METRIC]
        reasons = [(n.removeprefix(prefix), v) for n, v in change.items() if n.startswith(prefix)]
        found["admission_by_reason"] = dict(
            sorted((r for r in reasons if r[1]), key=lambda r: -r[1])
        )
    hits, queries = (change.get(name) for name in CACHE_METRICS)
    if hits is not None and queries:
        found["prefix_cache_hit_ratio"] = round(hits / queries, 3)
    return found


async def run(args: argparse.Namespace, plan: list[PlannedAsk]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.users + 8, max_keepalive_connections=args.users + 8)
    timeout = httpx.Timeout(args.long_timeout, connect=10)
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=timeout
    ) as client:
        before = await counters(client)
        sampler = RssSampler(client, args.url)
        sampling = asyncio.create_task(sampler.run())
        outcomes: list[Outcome] = []
        t0 = time.perf_counter()
        users = [
            asyncio.create_task(user(client, [a for a in plan if a.user == u], args, t0, outcomes))
            for u in range(args.users)
        ]
        done, pending = await asyncio.wait(users, timeout=args.time_limit)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # a bug in the client surfaces here, not as silence
        elapsed = time.perf_counter() - t0
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        after = await counters(client)
    summary = summarise(outcomes, len(plan))
    summary["elapsed_s"] = round(elapsed, 1)
    summary["achieved_rate"] = round(len(outcomes) / min(elapsed, args.duration), 3)
    summary.update(deltas(before, after))
    summary["peak_rss"] = sampler.report()
    summary["outcomes"] = [vars(o) for o in sorted(outcomes, key=lambda o: o.started_s)]
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, from ``argv`` (default: the command line's)."""
    p = argparse.ArgumentParser(prog="bench.load", description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("RAG_BENCH_URL", "http://127.0.0.1:8000"))
    p.add_argument("--api-key", default=os.environ.get("RAG_API_KEY"), help="env RAG_API_KEY")
    p.add_argument("--index", help="the index asked (default: the service's)")
    p.add_argument("--questions", type=Path, help="CSV with a Question column, or one per line")
    p.add_argument("--users", type=int, default=100, help="virtual users")
    p.add_argument("--rate", type=float, default=2.0, help="target asks/s of all users together")
    p.add_argument("--duration", type=float, default=60.0, help="seconds over which asks arrive")
    p.add_argument("--mix", default="short=0.6,analytical=0.3,long=0.1")
    p.add_argument("--max-long", type=int, default=5, help='most "auto" asks in the run')
    p.add_argument("--max-tokens", type=int, default=64, help="answer length of each ask")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per ask")
    p.add_argument("--long-timeout", type=float, default=180.0, help='seconds per "auto" ask')
    p.add_argument("--time-limit", type=float, help="seconds for the whole run (default: "
                   "duration + long timeout)")  # fmt: skip
    p.add_argument(
        "--long-deadline",
        type=float,
        help='the service-side deadline to first token sent as `timeout_s` with "auto" asks',
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--repeat",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of the asks that repeat an earlier ask exactly (for the answer cache)",
    )
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    if args.users < 1 or args.rate <= 0 or args.duration <= 0:
        p.error("--users, --rate and --duration must be positive")
    if not 0 <= args.repeat <= 1:
        p.error("--repeat must be between 0 and 1")
    args.time_limit = args.time_limit or args.duration + args.long_timeout
    return args


def execute(args: argparse.Namespace) -> dict[str, Any]:
    """Plan the run, run it, print its table; the summary (bench/load_report.py and more)."""
    try:
        questions = load_questions(args.questions)
        mix = parse_mix(args.mix)
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"bench.load: {exc}") from None
    plan = plan_asks(
        users=args.users,
        rate=args.rate,
        duration_s=args.duration,
        mix=mix,
        max_long=args.max_long,
        questions=questions,
        seed=args.seed,
        repeat=args.repeat,
    )
    repeats = sum(a.repeat_of is not None for a in plan)
    print(
        f"{len(plan)} asks from {args.users} users over {args.duration:g} s "
        f"(target {args.rate:g}/s) against {args.url}"
        + (f", {repeats} of them repeating an earlier ask" if repeats else ""),
        flush=True,
    )
    summary = asyncio.run(run(args, plan))
    print(render(summary))
    print(f"elapsed {summary['elapsed_s']} s, achieved {summary['achieved_rate']} asks/s")
    return summary


def write_json(args: argparse.Namespace, summary: Mapping[str, Any]) -> None:
    """The run's options (not its key), where it ran, and ``summary``, to --json-out."""
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config.pop("api_key", None)
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(
        json.dumps({"config": config, "environment": env, **summary}, indent=2) + "\n"
    )


def main() -> None:
    args = parse_args()
    summary = execute(args)
    if args.json_out:
        write_json(args, summary)


if __name__ == "__main__":
    main()
