"""What the load test saw, summarised: TTFT and total time per class, success, every failure.

An ask succeeds when the service answered 200 and its stream ended with a `done` event. Every
other ask is a failure, counted by what went wrong: the HTTP status and the error type of the
JSON envelope (``503 overloaded`` is a rejection by admission control), an in-band `error`
event after a 200, a client-side timeout, a transport error, or the run's time limit.
A successful ask whose `done` event says ``timings.cached`` was answered from the answer cache
(RAG_ANSWER_CACHE): cache hits are counted per class, with the TTFT and total time of cached and
of not-cached asks apart.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.load_plan import CLASSES

OVERLOADED = (503, "overloaded")  # status and envelope type of an ask admission turned away
# What the client itself ended: its per-ask timeout, the run's time limit, a transport error.
CLIENT_SIDE = ("timeout", "time_limit", "transport: ")


@dataclass
class Outcome:
    kind: str
    user: int
    scheduled_s: float  # planned start, seconds after the run's start
    started_s: float  # actual start (later when the user's previous ask was still running)
    status: int | None = None  # None: no HTTP status arrived
    error: str | None = None  # envelope or event type, or one of the client's own (CLIENT_SIDE)
    ttft_s: float | None = None  # to the first `token` event
    total_s: float | None = None  # to the end of the stream or the error
    ok: bool = False
    repeat: bool = False  # planned as a repeat of an earlier ask (bench/load_plan.py)
    cached: bool | None = None  # the done event's timings.cached; None: no done, or not said

    @property
    def failure(self) -> str:
        """How it failed, as one label: "503 overloaded", "200 error: engine_timeout", "timeout"."""
        if self.status is None or (self.error or "").startswith(CLIENT_SIDE):
            return self.error or "no response"
        if self.status == 200:
            return f"200 error: {self.error}" if self.error else "200 without done"
        return f"{self.status} {self.error}" if self.error else str(self.status)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def spread(values: list[float]) -> dict[str, float | None]:
    """Mean, p50 and p95 in seconds (None when there is nothing to measure)."""
    if not values:
        return {"mean": None, "p50": None, "p95": None}
    return {
        "mean": round(sum(values) / len(values), 3),
        "p50": round(percentile(values, 0.5), 3),
        "p95": round(percentile(values, 0.95), 3),
    }


def timing(ok: list[Outcome]) -> dict[str, dict[str, float | None]]:
    """TTFT and total time of successful asks."""
    return {
        "ttft_s": spread([o.ttft_s for o in ok if o.ttft_s is not None]),
        "total_s": spread([o.total_s for o in ok if o.total_s is not None]),
    }


def class_summary(outcomes: list[Outcome]) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    cached = [o for o in ok if o.cached]
    return {
        "count": len(outcomes),
        "ok": len(ok),
        "success_rate": round(len(ok) / len(outcomes), 4) if outcomes else None,
        **timing(ok),
        "repeats": sum(o.repeat for o in outcomes),
        "cache_hits": len(cached),
        "cache_hit_share": round(len(cached) / len(ok), 4) if ok else None,  # of the ok asks
        "cached": timing(cached),
        "not_cached": timing([o for o in ok if not o.cached]),
    }


def summarise(outcomes: list[Outcome], planned: int) -> dict[str, Any]:
    """Per class and overall, failures by kind, admission rejections; `planned - sent` unsent."""
    kinds = [k for k in CLASSES if any(o.kind == k for o in outcomes)]
    failures = Counter(o.failure for o in outcomes if not o.ok)
    non_200 = Counter(
        f"{o.status} {o.error or ''}".strip()
        for o in outcomes
        if o.status is not None and o.status != 200
    )
    return {
        "planned": planned,
        "sent": len(outcomes),
        "classes": {k: class_summary([o for o in outcomes if o.kind == k]) for k in kinds},
        "overall": class_summary(outcomes),
        "failures": dict(failures.most_common()),
        "non_200": dict(non_200.most_common()),
        "rejected_by_admission": sum((o.status, o.error) == OVERLOADED for o in outcomes),
        "rejected_within_1s": sum(
            (o.status, o.error) == OVERLOADED and o.total_s is not None and o.total_s <= 1.0
            for o in outcomes
        ),
        "rejection_s": spread(
            [o.total_s for o in outcomes if (o.status, o.error) == OVERLOADED and o.total_s]
        ),
        # admitted, then aborted when the first token missed the deadline (an `error` event)
        "overloaded_in_band": sum((o.status, o.error) == (200, OVERLOADED[1]) for o in outcomes),
        "late_starts": sum(o.started_s - o.scheduled_s > 1.0 for o in outcomes),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cache_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Per class: planned repeats, answer-cache hits (share of the ok asks), and the TTFT and
    total p50 of cached against not-cached asks."""
    lines = [
        "| class | repeats | cache hits (of ok) | TTFT p50 cached / not (s) "
        "| total p50 cached / not (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, c in rows:
        hit, miss = c["cached"], c["not_cached"]
        share = "-" if c["cache_hit_share"] is None else f"{100 * c['cache_hit_share']:.1f}%"
        lines.append(
            f"| {name} | {c['repeats']} | {c['cache_hits']} ({share}) "
            f"| {_fmt(hit['ttft_s']['p50'])} / {_fmt(miss['ttft_s']['p50'])} "
            f"| {_fmt(hit['total_s']['p50'])} / {_fmt(miss['total_s']['p50'])} |"
        )
    return lines


def render(summary: dict[str, Any]) -> str:
    """The summary as the Markdown docs/benchmarks.md shows."""
    lines = [
        "| class | asks | ok | success | TTFT mean / p50 / p95 (s) | total mean / p50 / p95 (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = [*summary["classes"].items(), ("all", summary["overall"])]
    for name, c in rows:
        t, w = c["ttft_s"], c["total_s"]
        rate = "-" if c["success_rate"] is None else f"{100 * c['success_rate']:.1f}%"
        lines.append(
            f"| {name} | {c['count']} | {c['ok']} | {rate} "
            f"| {_fmt(t['mean'])} / {_fmt(t['p50'])} / {_fmt(t['p95'])} "
            f"| {_fmt(w['mean'])} / {_fmt(w['p50'])} / {_fmt(w['p95'])} |"
        )
    if summary["overall"].get("repeats") or summary["overall"].get("cache_hits"):
        lines.extend(["", *cache_table(rows)])
    lines.append("")
    lines.append(f"asks planned {summary['planned']}, sent {summary['sent']}")
    non_200 = ", ".join(f"{k}: {v}" for k, v in summary["non_200"].items()) or "none"
    lines.append(f"non-200 by status: {non_200}")
    failures = ", ".join(f"{k}: {v}" for k, v in summary["failures"].items()) or "none"
    lines.append(f"failures: {failures}")
    took = summary["rejection_s"]
    answered = (
        f", answered in p50 {took['p50']:.2f} / p95 {took['p95']:.2f} s" if took["p50"] else ""
    )
    lines.append(
        f"rejected by admission: {summary['rejected_by_admission']} before admission "
        f"(503 overloaded{answered}; {summary['rejected_within_1s']} within 1 s), "
        f"{summary['overloaded_in_band']} in band after admission"
    )
    admission = summary.get("admission_metric")
    if admission is not None:
        reasons = ", ".join(f"{k} {v:g}" for k, v in summary["admission_by_reason"].items())
        detail = f" ({reasons})" if reasons else ""
        lines.append(f"rag_admission_rejections_total during the run: {admission:g}{detail}")
    ratio = summary.get("prefix_cache_hit_ratio")
    if ratio is not None:
        lines.append(f"engine prefix-cache hit ratio during the run: {ratio:.2f}")
    lines.append(f"asks started > 1 s late (their user still busy): {summary['late_starts']}")
    rss = summary.get("peak_rss")
    if rss:
        lines.append(
            f"API peak RSS: {rss['mb']:.0f} MB ({rss['source']}, {rss['samples']} samples)"
        )
    return "\n".join(lines)
