"""The scale-out bench's own parts: its nginx config from deploy/nginx.conf, where it puts each
engine, what it reads from the pool's /metrics, its options, and its processes' clean stop.
(`make bench-scale` runs the whole stack.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from bench.scale import (
    Pool,
    api_reading,
    engine_reading,
    parse_args,
    placement,
    pool_facts,
    render_facts,
)
from bench.scale_stack import NGINX_TEMPLATE, Child, StackError, nginx_config, redis_server
from tests.redis_server import NO_REDIS

UPSTREAMS = ["127.0.0.1:18001", "127.0.0.1:18002"]


def config(prefix: Path) -> str:
    return nginx_config(NGINX_TEMPLATE.read_text(), UPSTREAMS, 18000, prefix, ["fastcgi"])


def test_the_balancer_keeps_the_deployed_settings_with_local_replicas(tmp_path: Path) -> None:
    text = config(tmp_path)
    assert "server 127.0.0.1:18001;\n        server 127.0.0.1:18002;" in text
    assert "listen 127.0.0.1:18000;" in text
    assert "resolver" not in text  # Docker's DNS is not here
    assert "resolve;" not in text
    for kept in ("least_conn;", "proxy_buffering off;", "proxy_request_buffering off;"):
        assert kept in text
    assert f"pid {tmp_path / 'nginx.pid'};" in text
    assert f"proxy_temp_path {tmp_path / 'proxy'};" in text
    assert f"fastcgi_temp_path {tmp_path / 'fastcgi'};" in text


@pytest.mark.skipif(
    shutil.which("nginx", path="/usr/sbin:/usr/bin") is None,
    reason="needs nginx (Debian: sudo apt-get install nginx-light)",
)
def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text(config(tmp_path))
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx is not None
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
        + ["-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_a_deployed_config_without_a_line_it_replaces_is_refused(tmp_path: Path) -> None:
    template = NGINX_TEMPLATE.read_text().replace("resolve;", ";")
    with pytest.raises(StackError, match="resolve"):
        nginx_config(template, UPSTREAMS, 18000, tmp_path, [])


def test_each_engine_gets_its_own_cores_and_gpu_when_there_are_enough() -> None:
    assert placement(0, 2, [0, 1], []) == {"VLLM_CPU_OMP_THREADS_BIND": "0"}
    assert placement(1, 2, [0, 1], []) == {"VLLM_CPU_OMP_THREADS_BIND": "1"}
    assert placement(1, 2, list(range(16)), ["4", "5"]) == {
        "CUDA_VISIBLE_DEVICES": "5",
        "VLLM_CPU_OMP_THREADS_BIND": "8,9,10,11,12,13,14,15",
    }
    assert placement(2, 3, [0, 1], []) == {}  # fewer cores than engines: vLLM's own binding


ENGINE_METRICS = """\
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="128",num_gpu_blocks="728"} 1.0
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} %(queries)s
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} %(hits)s
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} %(stop)s
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} %(length)s
"""

API_METRICS = """\
# TYPE rag_requests counter
rag_requests_total{route="/ask",status="200"} 7.0
rag_requests_total{route="/ask",status="503"} 2.0
rag_requests_total{route="/metrics",status="200"} 40.0
# TYPE rag_answer_cache_hits counter
rag_answer_cache_hits_total 3.0
# TYPE rag_admission_rejections counter
rag_admission_rejections_total{reason="queue_full"} 2.0
# TYPE rag_engine_capacity_tokens gauge
rag_engine_capacity_tokens 93184.0
# TYPE rag_api_replicas gauge
rag_api_replicas 2.0
"""


def engine_text(queries: float, hits: float, stop: float, length: float) -> str:
    return ENGINE_METRICS % {"queries": queries, "hits": hits, "stop": stop, "length": length}


def test_the_pool_is_read_from_every_engine_and_api_replica_over_the_run() -> None:
    before = [engine_reading(engine_text(1000, 100, 3, 1)), engine_reading(None)]
    after = [engine_reading(engine_text(3000, 1100, 10, 2)), engine_reading(None)]
    assert after[0] == {"kv_tokens": 93184, "requests": 12.0, "hits": 1100.0, "queries": 3000.0}
    api = api_reading(API_METRICS)
    assert api == {
        "asks": 9.0,
        "cache_hits": 3.0,
        "rejections": 2.0,
        "capacity": 93184.0,
        "replicas": 2.0,
    }
    pool = Pool(["http://e0", "http://e1"], "http://router", ["http://a0"])
    facts = pool_facts(pool, before, after, [api], "cache_aware")
    assert facts["engines"][0]["requests"] == 8.0
    assert facts["engines"][0]["prefix_cache_hit_ratio"] == 0.5  # 1000 of 2000 in the run
    assert facts["engines"][1]["requests"] is None  # an engine that did not answer
    assert (facts["kv_tokens"], facts["prefix_cache_hit_ratio"]) == (93184, 0.5)
    table = render_facts(facts)
    assert "| http://a0 | 9 | 3 | 2 | 93,184 | 2 |" in table
    assert "| http://e0 | 93,184 | 8 | 0.50 |" in table
    assert "| http://e1 | - | - | - |" in table
    assert "(policy cache_aware)" in table


def test_options_it_does_not_know_go_to_the_load_test_but_the_url() -> None:
    args, load = parse_args(
        ["--apis", "3", "--users", "4", "--repeat", "0.3", "--max-tokens", "16"]
    )
    assert (args.apis, args.engines, args.router_policy) == (3, 2, "cache_aware")
    assert (load.users, load.repeat, load.max_tokens, load.api_key) == (4, 0.3, 16, None)
    with pytest.raises(SystemExit):
        parse_args(["--url", "http://elsewhere:8000"])
    with pytest.raises(SystemExit):
        parse_args(["--router-policy", "fastest"])


def test_a_stopped_child_leaves_nothing_it_spawned_running(tmp_path: Path) -> None:
    spawning = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    child = Child("spawner", [sys.executable, "-c", spawning], tmp_path / "child.log").start()
    assert child.pid is not None
    parent = psutil.Process(child.pid)
    deadline = time.monotonic() + 20
    while not parent.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    spawned = [parent, *parent.children()]
    assert len(spawned) == 2
    child.stop(grace=5)
    _, alive = psutil.wait_procs(spawned, timeout=5)
    assert not alive


@pytest.mark.skipif(shutil.which("redis-server") is None, reason=NO_REDIS)
def test_redis_starts_on_a_free_port_without_persistence(tmp_path: Path) -> None:
    child, url = redis_server(tmp_path)
    try:
        client = redis.Redis.from_url(url)
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        child.stop()
    assert not child.running()
    assert os.listdir(tmp_path) == ["redis.log"]
