"""The `monitoring` compose profile, checked without a Docker engine: Prometheus scrapes what
compose really runs, the alert on vLLM's waiting queue, Grafana's provisioning, and every metric
the dashboard and the rules query is one the service and vLLM really export."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.cli import configure_logging
from rag.config import Settings
from rag.engine import EngineClient, EngineSupervisor
from tests.asking import sse_events, uncached_question
from tests.promql import (
    TARGET_LABELS,
    exported_names,
    promql_label_names,
    promql_metric_names,
    sample_labels,
)
from tests.service import RunningService, free_port

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+(\.\d+)?$")
PROFILE_SERVICES = {"prometheus", "grafana"}

# Series Prometheus makes itself for every target; no exporter has them.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# vLLM series the dashboard and the rules may use, pinned from the v1 engine's Prometheus logger
# (vllm/v1/metrics/loggers.py, PrometheusStatLogger), which compose runs as vLLM 0.26. Each name
# is defined there from 0.10 (the source read) through 0.32 (the CPU build these tests scrape,
# and docs.vllm.ai/en/v0.32.0/usage/metrics), so 0.26 has it too. A name added here must be in
# both: the engine test below checks the CPU build's half.
VLLM_026_METRICS = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:num_preemptions_total",
    "vllm:request_success_total",
    *(
        f"vllm:{histogram}_{part}"
        for histogram in (
            "time_to_first_token_seconds",
            "e2e_request_latency_seconds",
            "request_queue_time_seconds",
            "request_prompt_tokens",
        )
        for part in ("bucket", "sum", "count")
    ),
}

# What each panel group of the issue needs the dashboard to query.
DASHBOARD_NEEDS = {
    "asks/s and errors by status": "rag_requests_total",
    "TTFT p50/p95": "rag_ttft_seconds_bucket",
    "stage latencies": "rag_stage_seconds_bucket",
    "prompt tokens": "rag_prompt_tokens_bucket",
    "prefix-cache hit ratio": "vllm:prefix_cache_hits_total",
    "vLLM running requests": "vllm:num_requests_running",
    "vLLM waiting requests": "vllm:num_requests_waiting",
    "KV-cache use": "vllm:kv_cache_usage_perc",
    "admission queue depth": "rag_admission_queue_depth",
    "admission in-flight requests": "rag_admission_inflight_requests",
    "admission in-flight tokens": "rag_admission_inflight_tokens",
    "engine capacity": "rag_engine_capacity_tokens",
    "admission wait": "rag_admission_wait_seconds_bucket",
    "admission rejections": "rag_admission_rejections_total",
    "service memory": "process_resident_memory_bytes",
}

# --- the files -----------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return load_yaml(MONITORING / "prometheus" / "prometheus.yml")


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in sorted((MONITORING / "prometheus" / "rules").glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            rules.extend(group["rules"])
    return rules


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(MONITORING.glob("grafana/dashboards/*.json"))]


def dashboard_exprs() -> list[str]:
    exprs: list[str] = []
    for dashboard in dashboards():
        for panel in dashboard["panels"]:
            exprs.extend(target["expr"] for target in panel.get("targets", []))
    return exprs


def all_exprs() -> list[str]:
    return dashboard_exprs() + [str(rule["expr"]) for rule in alert_rules()]


def queried_names() -> set[str]:
    return set().union(*(promql_metric_names(expr) for expr in all_exprs()))


def unknown_labels(exposition: str, vllm: bool) -> list[tuple[str, str]]:
    """(expression, label) for each label an expression uses that none of its series carries;
    series without samples yet are not judged."""
    carried = sample_labels(exposition)
    unknown = []
    for expr in all_exprs():
        names = promql_metric_names(expr) - PROMETHEUS_SYNTHETIC
        if any(n.startswith("vllm:") for n in names) != vllm:
            continue
        seen = [carried[n] for n in names if n in carried]
        if seen:
            for label in sorted(promql_label_names(expr) - TARGET_LABELS):
                if not any(label in labels for labels in seen):
                    unknown.append((expr, label))
    return unknown


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (relative to the compose file)."""
    found: dict[str, Path] = {}
    for volume in service["volumes"]:
        source, target = str(volume).split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def container_port(service: dict[str, Any]) -> str:
    return str(service["ports"][0]).rsplit(":", 1)[1]


# --- compose ---------------------------------------------------------------------------------


def test_prometheus_and_grafana_start_only_with_the_monitoring_profile(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    profiled = {name for name, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert profiled == PROFILE_SERVICES
    for name in PROFILE_SERVICES:
        assert services[name]["profiles"] == ["monitoring"]
    for name, service in services.items():
        if not service.get("profiles"):  # started by a plain `docker compose up`
            assert not PROFILE_SERVICES & set(service.get("depends_on", [])), name


def test_monitoring_images_are_pinned_to_versions(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]["image"]
    grafana = compose["services"]["grafana"]["image"]
    assert prometheus.startswith("prom/prometheus:v3.")
    assert grafana.startswith("grafana/grafana:")
    for image in (prometheus, grafana):
        assert PINNED.match(image), image
        assert "latest" not in image


def test_prometheus_scrapes_the_api_and_vllm_where_compose_runs_them(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    services = compose["services"]
    vllm_args = [str(a) for a in services["vllm"]["command"]]
    ports = {
        "api": container_port(services["api"]),
        "vllm": vllm_args[vllm_args.index("--port") + 1],
    }
    assert container_port(services["vllm"]) == ports["vllm"]
    scraped = {}
    for job in prometheus_config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for target in (t for group in job["static_configs"] for t in group["targets"]):
            host, port = target.split(":")
            scraped[host] = (port, job)
    assert set(scraped) == {"api", "vllm"}
    for host, (port, _) in scraped.items():
        assert port == ports[host], f"{host} listens on {ports[host]} in its container"
    # The api's /metrics needs a key once keys exist: Prometheus sends the one compose mounts.
    key_file = scraped["api"][1]["authorization"]["credentials_file"]
    prometheus = services["prometheus"]
    given = {c["target"]: c["source"] for c in prometheus["configs"]}
    assert key_file in given
    assert compose["configs"][given[key_file]]["content"] == "${PROMETHEUS_API_KEY:-}"


def test_queries_filter_on_jobs_prometheus_really_scrapes(
    prometheus_config: dict[str, Any],
) -> None:
    jobs = {job["job_name"] for job in prometheus_config["scrape_configs"]}
    assert {"rag-api", "vllm"} <= jobs
    used: set[str] = set()
    for expr in all_exprs():
        for value in re.findall(r'\bjob\s*=~?\s*"([^"]*)"', expr):
            used.update(value.split("|"))
    assert "vllm" in used, "vLLM panels name their job: other vLLMs (embeddings) may be scraped"
    assert used <= jobs


def test_prometheus_reads_its_config_and_rules_where_compose_mounts_them(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    prometheus = compose["services"]["prometheus"]
    mounted = mounts(prometheus)
    config = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert mounted[config.split("=", 1)[1]] == MONITORING / "prometheus" / "prometheus.yml"
    for pattern in prometheus_config["rule_files"]:
        folder, glob = pattern.rsplit("/", 1)
        assert list(mounted[folder].glob(glob)), f"no rule file behind {pattern}"


def test_an_alert_fires_when_vllm_waiting_requests_stay_above_20() -> None:
    rules = [r for r in alert_rules() if "vllm:num_requests_waiting" in r.get("expr", "")]
    assert len(rules) == 1
    rule = rules[0]
    assert rule["alert"]
    assert re.search(r"\)\s*>\s*20\s*$", rule["expr"]), rule["expr"]
    assert promql_metric_names(rule["expr"]) == {"vllm:num_requests_waiting"}
    held = re.fullmatch(r"(\d+)([smh])", rule["for"])
    assert held, "the queue must stay long, not spike once"
    assert int(held.group(1)) * {"s": 1, "m": 60, "h": 3600}[held.group(2)] >= 60
    assert rule["annotations"]["summary"]


def test_grafana_reads_the_provisioned_data_source_and_dashboards_from_its_mounts(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = mounts(grafana)["/etc/grafana/provisioning"]  # Grafana's default path
    assert provisioning == MONITORING / "grafana" / "provisioning"
    sources = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert [(s["type"], s["url"]) for s in sources] == [
        ("prometheus", f"http://prometheus:{container_port(compose['services']['prometheus'])}")
    ]
    providers = load_yaml(provisioning / "dashboards" / "rag.yml")["providers"]
    folder = mounts(grafana)[providers[0]["options"]["path"]]
    assert folder == MONITORING / "grafana" / "dashboards"
    assert dashboards()
    for dashboard in dashboards():
        for panel in dashboard["panels"]:
            if panel.get("targets"):
                assert panel["datasource"]["uid"] == sources[0]["uid"], panel["title"]


def test_the_dashboard_shows_asks_latency_prompts_the_engine_and_admission() -> None:
    names = set().union(*(promql_metric_names(e) for e in dashboard_exprs()))
    missing = {need: name for need, name in DASHBOARD_NEEDS.items() if name not in names}
    assert not missing


def test_promql_names_are_read_past_functions_labels_ranges_and_strings() -> None:
    assert promql_metric_names(
        "histogram_quantile(0.95, sum by (le, stage) "
        '(rate(rag_stage_seconds_bucket{stage!="total"}[$__rate_interval])))'
    ) == {"rag_stage_seconds_bucket"}
    assert promql_metric_names(
        "sum(rate(vllm:prefix_cache_hits_total[5m])) / ignoring(engine) "
        "sum(rate(vllm:prefix_cache_queries_total[5m])) > bool 0.5"
    ) == {"vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"}
    assert promql_metric_names(
        'up{job=~"rag-api|vllm"} == 0 unless on (instance) vllm:num_requests_waiting offset 1h'
    ) == {"up", "vllm:num_requests_waiting"}
    assert promql_metric_names(
        'label_replace(max_over_time(rss[1h:5m]), "dst", "$1", "src", "(.*)") * 1e3'
    ) == {"rss"}
    assert promql_label_names(
        'sum by (le, lane) (rate(wait_bucket{reason!="x=y", route=~"/a"}[5m])) '
        "/ ignoring(engine) sum without (stage) (other)"
    ) == {"le", "lane", "reason", "route", "stage"}


# --- against what really runs ---------------------------------------------------------------


@pytest.mark.engine
def test_every_service_metric_the_dashboard_and_rules_query_is_exported(
    service: RunningService,
) -> None:
    with service.client() as client:
        asked = client.post("/ask", json={"question": "Who makes the kettle?", "max_tokens": 16})
        assert asked.status_code == 200, asked.text
        # Prometheus sends `Bearer ` while PROMETHEUS_API_KEY is empty (the server strips the
        # trailing space): read as no key at all.
        scraped = client.get("/metrics", headers={"Authorization": "Bearer"})
    assert scraped.status_code == 200
    exported = exported_names(scraped.text)
    wanted = {n for n in queried_names() if not n.startswith("vllm:")} - PROMETHEUS_SYNTHETIC
    assert wanted
    missing = sorted(wanted - exported)
    assert not missing, f"queried, but the service does not export {missing}"
    unknown = unknown_labels(scraped.text, vllm=False)
    assert not unknown, f"(query, label) that no series carries: {unknown}"


@pytest.mark.engine
def test_every_vllm_metric_the_dashboard_and_rules_query_is_exported_by_the_engine(
    engine_url: str,
) -> None:
    exposition = httpx.get(f"{engine_url}/metrics", timeout=30).text
    exported = exported_names(exposition)
    wanted = {n for n in queried_names() if n.startswith("vllm:")}
    assert wanted
    missing = sorted(wanted - exported)
    assert not missing, f"queried, but this vLLM build does not export {missing}"
    unpinned = sorted(wanted - VLLM_026_METRICS)
    assert not unpinned, f"queried, but not pinned as exported by vLLM 0.26: {unpinned}"
    unknown = unknown_labels(exposition, vllm=True)
    assert not unknown, f"(query, label) that no series carries: {unknown}"


# --- what the service's metrics say ----------------------------------------------------------


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one series of a /metrics text, or None when the series does not exist."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


@pytest.fixture(scope="module")
def engineless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """A service whose engine does not answer: as one whose engine is still starting."""
    data = tmp_path_factory.mktemp("engineless")
    settings = Settings(data_dir=data, llm_url=f"http://127.0.0.1:{free_port()}")
    with RunningService(create_app(settings)) as running:
        yield running


def test_every_route_and_status_it_documents_is_exported_at_zero_from_the_start(
    engineless: RunningService,
) -> None:
    with engineless.client() as client:
        exposition = client.get("/metrics").text
    for route, status in [
        ("/ask", "503"),
        ("/ask", "429"),
        ("/v1/chat/completions", "504"),
        ("/v1/indexes/{index}/documents", "413"),
        ("/v1/jobs/{job_id}", "404"),
    ]:
        assert sample(exposition, "rag_requests_total", route=route, status=status) == 0, route
    for reason in ("queue_full", "deadline", "first_token_deadline"):
        assert sample(exposition, "rag_admission_rejections_total", reason=reason) == 0
    assert sample(exposition, "rag_stage_seconds_count", stage="total") == 0
    assert sample(exposition, "rag_admission_wait_seconds_count", lane="long") == 0


def test_readiness_503s_while_the_engine_is_not_up_are_no_request_errors(
    engineless: RunningService,
) -> None:
    with engineless.client() as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
        exposition = client.get("/metrics").text
    probes = "rag_probe_requests_total"
    assert sample(exposition, probes, route="/readyz", status="503") == 1
    assert sample(exposition, probes, route="/healthz", status="200") == 1
    assert sample(exposition, "rag_requests_total", route="/readyz", status="503") is None


def test_stage_and_first_token_latencies_have_buckets_past_the_longest_deadline(
    engineless: RunningService,
) -> None:
    with engineless.client() as client:
        exposition = client.get("/metrics").text
    for bound in ("60.0", "300.0", "3600.0"):
        assert sample(exposition, "rag_stage_seconds_bucket", stage="total", le=bound) == 0
        assert sample(exposition, "rag_ttft_seconds_bucket", le=bound) == 0


@pytest.mark.engine
def test_a_stream_that_fails_in_band_counts_with_its_errors_status(
    service: RunningService,
) -> None:
    """Admitted, streaming, but its first token misses the 1 s deadline (a long uncached
    question): the 200 is sent, the stream ends with an `overloaded` event, and it counts as
    the 503 it is."""
    body = {"question": uncached_question(), "top_k": 20, "timeout_s": 1, "stream": True}
    with service.client() as client:
        before = client.get("/metrics").text
        with client.stream("POST", "/ask", json=body) as streamed:
            assert streamed.status_code == 200
            events = sse_events(streamed)
        after = client.get("/metrics").text
    assert events[0][0] == "citations"
    assert events[-1][0] == "error", events[-1]
    assert events[-1][1]["type"] == "overloaded"

    def count(text: str, status: str) -> float:
        return sample(text, "rag_requests_total", route="/ask", status=status) or 0.0

    assert count(after, "503") == count(before, "503") + 1
    assert count(after, "200") == count(before, "200")


@pytest.mark.engine
def test_the_engine_health_probe_logs_nothing_while_the_engine_stays_up(
    engine_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`rag-api`'s logging: the supervisor probes every second; only a change of state is
    logged (httpx's line per request is below the level rag-api logs)."""

    async def watch() -> None:
        engine = EngineClient(engine_url)
        supervisor = EngineSupervisor(engine.health, interval=0.2)
        try:
            await supervisor.probe_once()
            supervisor.start()
            await asyncio.sleep(1.5)  # about seven probes
        finally:
            await supervisor.aclose()
            await engine.aclose()

    httpx_logger = logging.getLogger("httpx")
    level = httpx_logger.level
    configure_logging()
    caplog.set_level(logging.INFO)
    try:
        asyncio.run(watch())
    finally:
        httpx_logger.setLevel(level)
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.getMessage() for r in lines] == ["engine ready: answering its health check"]
