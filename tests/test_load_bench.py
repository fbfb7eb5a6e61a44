"""The load test's own arithmetic: its Poisson schedule, its mix, its statistics, its reading of
the service's streams and metrics. (`make bench-load` runs it against a live stack.)"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load import deltas, metric_by_label, metric_sum, read_sse
from bench.load_plan import (
    CLASSES,
    PlannedAsk,
    load_questions,
    parse_mix,
    plan_asks,
    poisson_arrivals,
)
from bench.load_report import Outcome, percentile, render, summarise

QUESTIONS = {kind: [f"{kind} question {i}" for i in range(5)] for kind in CLASSES}


def plan(**overrides: Any) -> list[PlannedAsk]:
    kwargs: dict[str, Any] = {
        "users": 20,
        "rate": 2.0,
        "duration_s": 600.0,
        "mix": parse_mix("short=0.6,analytical=0.3,long=0.1"),
        "max_long": 1000,
        "questions": QUESTIONS,
        "seed": 7,
    }
    return plan_asks(**(kwargs | overrides))


def test_poisson_arrivals_come_at_the_target_rate_with_exponential_gaps() -> None:
    times = poisson_arrivals(2.0, 5000.0, random.Random(1))
    assert abs(len(times) - 10_000) < 400  # 4 standard deviations of a Poisson count
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(0.5, rel=0.05)
    # an exponential gap's standard deviation equals its mean (a fixed pace would have none)
    assert statistics.stdev(gaps) == pytest.approx(0.5, rel=0.05)
    assert all(0 <= t < 5000 for t in times)
    assert times == sorted(times)


def test_all_users_together_arrive_at_the_target_rate_and_all_take_part() -> None:
    asks = plan(users=50, rate=1.0, duration_s=2000.0)
    assert abs(len(asks) - 2000) < 180
    assert {a.user for a in asks} == set(range(50))
    assert [a.at_s for a in asks] == sorted(a.at_s for a in asks)


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert plan(seed=3) == plan(seed=3)
    assert plan(seed=3) != plan(seed=4)


def test_the_mix_sets_the_share_of_each_class_and_its_top_k() -> None:
    asks = plan()
    share = {k: sum(a.kind == k for a in asks) / len(asks) for k in CLASSES}
    assert share["short"] == pytest.approx(0.6, abs=0.03)
    assert share["analytical"] == pytest.approx(0.3, abs=0.03)
    assert share["long"] == pytest.approx(0.1, abs=0.02)
    assert {(a.kind, a.top_k) for a in asks} == {("short", 5), ("analytical", 20), ("long", "auto")}
    assert all(a.question in QUESTIONS[a.kind] for a in asks)


def test_long_context_asks_are_capped_and_the_rest_become_analytical() -> None:
    asks = plan(mix=parse_mix("long=1"), max_long=3)
    assert [a.kind for a in asks[:3]] == ["long"] * 3
    assert {a.kind for a in asks[3:]} == {"analytical"}


def test_repeats_ask_again_exactly_what_an_earlier_ask_of_their_class_asked() -> None:
    asks = plan(repeat=0.3)
    repeats = [(i, a) for i, a in enumerate(asks) if a.repeat_of is not None]
    assert len(repeats) == round(0.3 * len(asks))
    for i, a in repeats:
        j = a.repeat_of
        assert j is not None
        assert j < i
        assert (asks[j].question, asks[j].kind, asks[j].top_k) == (a.question, a.kind, a.top_k)


def test_repeats_keep_the_arrivals_classes_and_seed_of_the_plan_without_them() -> None:
    fresh, repeated = plan(), plan(repeat=0.5)
    assert [(a.at_s, a.user, a.kind) for a in fresh] == [(a.at_s, a.user, a.kind) for a in repeated]
    assert all(f == r for f, r in zip(fresh, repeated, strict=True) if r.repeat_of is None)
    assert plan(repeat=0.5) == repeated
    assert plan(repeat=0.5, seed=8) != plan(seed=8)
    assert plan(repeat=0.0) == fresh
    assert all(a.repeat_of is None for a in fresh)


def test_only_asks_with_an_earlier_one_of_their_class_repeat_and_the_share_is_bounded() -> None:
    asks = plan(repeat=1.0)
    firsts = {a.kind: i for i, a in reversed(list(enumerate(asks)))}
    assert [i for i, a in enumerate(asks) if a.repeat_of is None] == sorted(firsts.values())
    with pytest.raises(ValueError, match="between 0 and 1"):
        plan(repeat=1.5)


def test_a_mix_with_an_unknown_class_or_no_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        parse_mix("short=1,huge=1")
    with pytest.raises(ValueError, match="positive sum"):
        parse_mix("short=0")


def test_sec_questions_are_split_by_their_type(tmp_path: Path) -> None:
    csv = tmp_path / "qna.csv"
    csv.write_text(
        "\ufeffQuestion,Question Type\n"
        "What was the gross margin?,Single-Doc Single-Chunk RAG\n"
        "How do segment costs compare?,Single-Doc Multi-Chunk RAG\n"
        "How did net sales change over time?,Multi-Doc RAG\n",
        encoding="utf-8",
    )
    pools = load_questions(csv)
    assert pools["short"] == ["What was the gross margin?"]
    assert pools["analytical"] == [
        "How do segment costs compare?",
        "How did net sales change over time?",
    ]
    assert pools["long"] == ["How did net sales change over time?"]


def test_a_text_file_gives_every_class_all_its_questions(tmp_path: Path) -> None:
    path = tmp_path / "questions.txt"
    path.write_text("# asked by the load test\nWhat is X?\n\nWhat is Y?\n", encoding="utf-8")
    assert load_questions(path) == dict.fromkeys(CLASSES, ["What is X?", "What is Y?"])


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert percentile([7.0], 0.95) == 7.0


def outcome(kind: str, **fields: object) -> Outcome:
    o = Outcome(kind, user=0, scheduled_s=0.0, started_s=0.0)
    for name, value in fields.items():
        setattr(o, name, value)
    return o


def test_summary_counts_successes_per_class_and_every_failure_by_what_went_wrong() -> None:
    outcomes = [
        outcome("short", status=200, ok=True, ttft_s=1.0, total_s=2.0),
        outcome("short", status=200, ok=True, ttft_s=3.0, total_s=4.0),
        outcome("short", status=503, error="overloaded", total_s=0.05),
        outcome("short", status=429, error="rate_limited"),
        outcome("analytical", status=200, error="overloaded", ttft_s=None),
        outcome("analytical", status=200, error="timeout"),
        outcome("long", status=None, error="time_limit"),
    ]
    summary = summarise(outcomes, planned=9)
    short = summary["classes"]["short"]
    assert (short["count"], short["ok"], short["success_rate"]) == (4, 2, 0.5)
    assert short["ttft_s"] == {"mean": 2.0, "p50": 2.0, "p95": 2.9}
    assert summary["classes"]["long"]["ttft_s"]["mean"] is None
    assert summary["overall"]["success_rate"] == round(2 / 7, 4)
    assert summary["non_200"] == {"503 overloaded": 1, "429 rate_limited": 1}
    assert summary["failures"] == {
        "503 overloaded": 1,
        "429 rate_limited": 1,
        "200 error: overloaded": 1,
        "timeout": 1,
        "time_limit": 1,
    }
    assert (summary["rejected_by_admission"], summary["overloaded_in_band"]) == (1, 1)
    assert summary["rejection_s"]["p95"] == 0.05
    assert (summary["planned"], summary["sent"]) == (9, 7)
    table = render(summary)
    assert "| short | 4 | 2 | 50.0% | 2.00 / 2.00 / 2.90 | 3.00 / 3.00 / 3.90 |" in table
    assert "non-200 by status: 503 overloaded: 1, 429 rate_limited: 1" in table
    assert summary["rejected_within_1s"] == 1
    refused = "1 before admission (503 overloaded, answered in p50 0.05 / p95 0.05 s; 1 within 1 s)"
    assert refused in table


def test_cache_hits_are_counted_per_class_with_their_times_apart_from_the_rest() -> None:
    outcomes = [
        outcome("short", status=200, ok=True, ttft_s=0.1, total_s=0.2, cached=True, repeat=True),
        outcome("short", status=200, ok=True, ttft_s=0.3, total_s=0.4, cached=True, repeat=True),
        outcome("short", status=200, ok=True, ttft_s=2.0, total_s=5.0, cached=False),
        outcome("short", status=200, ok=True, ttft_s=4.0, total_s=7.0, cached=False, repeat=True),
        outcome("short", status=503, error="overloaded", repeat=True),
        outcome("analytical", status=200, ok=True, ttft_s=3.0, total_s=9.0),  # cached not said
    ]
    summary = summarise(outcomes, planned=6)
    short = summary["classes"]["short"]
    assert (short["repeats"], short["cache_hits"], short["cache_hit_share"]) == (4, 2, 0.5)
    assert short["cached"]["ttft_s"]["p50"] == 0.2
    assert short["cached"]["total_s"]["p50"] == 0.3
    assert short["not_cached"]["ttft_s"]["p50"] == 3.0
    assert short["not_cached"]["total_s"]["p50"] == 6.0
    assert short["ttft_s"]["p50"] == 1.15  # every ok ask, as before
    analytical = summary["classes"]["analytical"]
    assert (analytical["cache_hits"], analytical["cached"]["ttft_s"]["p50"]) == (0, None)
    assert summary["overall"]["cache_hits"] == 2
    table = render(summary)
    assert "| short | 5 | 4 | 80.0% | " in table
    assert "| short | 4 | 2 (50.0%) | 0.20 / 3.00 | 0.30 / 6.00 |" in table
    assert "| analytical | 0 | 0 (0.0%) | - / 3.00 | - / 9.00 |" in table
    assert "| all | 4 | 2 (40.0%) | 0.20 / 3.00 | 0.30 / 7.00 |" in table


def test_a_run_without_repeats_or_cache_hits_prints_no_cache_table() -> None:
    outcomes = [outcome("short", status=200, ok=True, ttft_s=1.0, total_s=2.0, cached=False)]
    assert "cache hits" not in render(summarise(outcomes, planned=1))


def stream(body: str) -> httpx.Response:
    return httpx.Response(200, content=body.encode())


def test_the_first_token_event_sets_ttft_and_done_makes_the_ask_a_success() -> None:
    o = outcome("short", status=200)
    body = (
        'event: citations\ndata: {"citations": []}\n\n'
        'event: token\ndata: {"text": "Hi"}\n\n'
        'event: token\ndata: {"text": "!"}\n\n'
        'event: done\ndata: {"finish_reason": "stop"}\n\n'
    )
    asyncio.run(read_sse(stream(body), o, started=0.0))
    assert o.ok
    assert o.error is None
    assert o.ttft_s is not None
    assert o.cached is None  # a done event without timings says nothing of the cache


def test_the_done_events_timings_say_whether_the_answer_came_from_the_cache() -> None:
    for cached in (True, False):
        o = outcome("short", status=200)
        done = json.dumps({"finish_reason": "stop", "timings": {"ttft_ms": 1.0, "cached": cached}})
        body = f'event: token\ndata: {{"text": "Hi"}}\n\nevent: done\ndata: {done}\n\n'
        asyncio.run(read_sse(stream(body), o, started=0.0))
        assert (o.ok, o.cached) == (True, cached)


def test_an_error_event_after_tokens_is_a_failure_of_its_type() -> None:
    o = outcome("short", status=200)
    body = (
        'event: token\ndata: {"text": "Hi"}\n\n'
        'event: error\ndata: {"type": "engine_timeout", "message": "slow"}\n\n'
    )
    asyncio.run(read_sse(stream(body), o, started=0.0))
    assert not o.ok
    assert o.failure == "200 error: engine_timeout"


def test_a_stream_cut_before_done_is_not_a_success() -> None:
    o = outcome("short", status=200)
    asyncio.run(read_sse(stream('event: token\ndata: {"text": "Hi"}\n\n'), o, started=0.0))
    assert not o.ok
    assert o.failure == "200 without done"


def test_metric_samples_are_summed_over_their_labels_and_absent_ones_are_none() -> None:
    text = (
        "# TYPE rag_admission_rejections counter\n"
        'rag_admission_rejections_total{reason="queue_full"} 3.0\n'
        'rag_admission_rejections_total{reason="deadline"} 2.0\n'
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes 7.5e8\n"
    )
    assert metric_sum(text, "rag_admission_rejections_total") == 5.0
    assert metric_sum(text, "process_resident_memory_bytes") == 7.5e8
    assert metric_sum(text, "rag_queue_depth") is None
    assert metric_by_label(text, "rag_admission_rejections_total", "reason") == {
        "queue_full": 3.0,
        "deadline": 2.0,
    }
    # a labelled counter that has counted nothing yet is declared without samples: zero
    assert (
        metric_sum("# TYPE rag_admission_rejections counter\n", "rag_admission_rejections_total")
        == 0
    )


def test_counters_are_compared_over_the_run_and_unknown_ones_left_out() -> None:
    names = ("rag_engine_prefix_cache_hits", "rag_engine_prefix_cache_queries")
    rejections = "rag_admission_rejections_total"
    before = {rejections: 4.0, f"{rejections}:queue_full": 4.0, names[0]: 100.0, names[1]: 1000.0}
    after = {
        rejections: 10.0,
        f"{rejections}:queue_full": 5.0,
        f"{rejections}:deadline": 5.0,  # first counted during the run
        names[0]: 550.0,
        names[1]: 1500.0,
    }
    assert deltas(before, after) == {
        "admission_metric": 6.0,
        "admission_by_reason": {"queue_full": 1.0, "deadline": 5.0},
        "prefix_cache_hit_ratio": 0.9,
    }
    # no admission metric yet, and an engine that was down (NaN): nothing is made up
    down: dict[str, float | None] = {
        "rag_admission_rejections_total": None,
        names[0]: math.nan,
        names[1]: math.nan,
    }
    assert deltas(down, after) == {}
