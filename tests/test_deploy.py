"""Past one GPU, checked without Docker or a cluster: the compose `scale` profile (vLLM replicas
behind vllm-router, api replicas sharing Redis behind nginx), the Kubernetes manifests under
deploy/k8s against the Kubernetes API's own schemas, the real vllm-router in front of scripted
engines, and a Qdrant cluster's shards reaching the collection the service creates."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml

from api.routes import router as api_routes
from rag.config import Settings
from rag.engine import EngineClient
from rag.indexes import ChunkingSpec, IndexMeta
from rag.store import open_store
from tests.service import free_port
from tests.test_monitoring import VLLM_026_METRICS

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"  # the oldest API the manifests are held to
SCALE = {"vllm-0", "vllm-1", "vllm-router", "redis", "api-replicas", "api-lb"}
QDRANT_CLIENT = version("qdrant-client")  # what the scripted Qdrant says it runs: no warning


# --- compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(data["services"])


def resolved(value: str) -> str:
    """`${NAME:-default}` or `${NAME-default}` -> default."""
    match = re.fullmatch(r"\$\{\w+:?-([^}]*)\}", value)
    return match.group(1) if match else value


def args_of(service: dict[str, Any]) -> list[str]:
    return [resolved(str(part)) for part in service.get("command", service.get("args", []))]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def flag_values(args: list[str], name: str) -> list[str]:
    """The values after a flag that takes several, up to the next flag."""
    values: list[str] = []
    for value in args[args.index(name) + 1 :]:
        if value.startswith("--"):
            break
        values.append(value)
    return values


def engine_replicas(services: dict[str, Any]) -> list[str]:
    return sorted(name for name in services if re.fullmatch(r"vllm-\d+", name))


def url_of(services: dict[str, Any], name: str) -> str:
    return f"http://{name}:{flag(args_of(services[name]), '--port')}"


def test_the_scale_services_start_only_with_the_scale_profile(services: dict[str, Any]) -> None:
    assert set(services) >= SCALE
    for name, service in services.items():
        if name in SCALE:
            assert service["profiles"] == ["scale"], name
            assert service["healthcheck"]["test"], name
        else:
            assert "scale" not in service.get("profiles", []), name
    assert len(engine_replicas(services)) >= 2


def test_each_engine_replica_is_the_one_gpu_engine_pinned_to_its_own_gpu(
    services: dict[str, Any],
) -> None:
    engine = services["vllm"]
    gpus: list[str] = []
    for name in engine_replicas(services):
        replica = services[name]
        assert replica["image"] == engine["image"]
        assert replica["command"] == engine["command"]  # prefix caching, chunked prefill, model
        assert replica["healthcheck"] == engine["healthcheck"]
        assert replica["ports"] == []  # reached through the router only
        (device,) = replica["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
        assert len(device["device_ids"]) == 1
        gpus += device["device_ids"]
    assert len(set(gpus)) == len(gpus), "two replicas on one GPU"


def test_the_router_routes_cache_aware_to_every_engine_replica(services: dict[str, Any]) -> None:
    router = services["vllm-router"]
    args = args_of(router)
    assert flag(args, "--policy") == "cache_aware"
    replicas = engine_replicas(services)
    assert sorted(flag_values(args, "--worker-urls")) == [url_of(services, r) for r in replicas]
    assert router["depends_on"] == {r: {"condition": "service_healthy"} for r in replicas}
    assert "/readiness" in " ".join(router["healthcheck"]["test"])


def test_the_router_image_is_the_vllm_router_the_tests_run(services: dict[str, Any]) -> None:
    """One pinned vllm-router: the image's, the dev install's (tested below) and the tags'."""
    dockerfile = (ROOT / services["vllm-router"]["build"] / "Dockerfile").read_text()
    (pin,) = re.findall(r'"vllm-router==([\d.]+)"', dockerfile)
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"vllm-router=={pin}" in dev["dev"]
    assert services["vllm-router"]["image"].endswith(f":{pin}")
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    tags = {image["name"]: image["newTag"] for image in kustomization["images"]}
    assert tags["rag-vllm-router"] == pin


def test_api_replicas_ask_the_router_and_share_redis(services: dict[str, Any]) -> None:
    api = services["api-replicas"]
    env = api["environment"]
    assert api["image"] == services["api"]["image"]
    assert env["RAG_LLM_URL"] == url_of(services, "vllm-router")
    metrics_urls = env["RAG_ENGINE_METRICS_URLS"].split(",")
    assert sorted(metrics_urls) == [url_of(services, r) for r in engine_replicas(services)]
    redis = urlsplit(env["RAG_REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert services["redis"]["image"].startswith("redis:")
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])  # keys live there
    assert env["RAG_QDRANT_URL"] == services["api"]["environment"]["RAG_QDRANT_URL"]
    assert api["depends_on"] == {
        name: {"condition": "service_healthy"} for name in ("qdrant", "redis", "vllm-router")
    }
    assert int(resolved(str(api["deploy"]["replicas"]))) >= 2
    assert api["ports"] == []  # only the balancer is published


def test_the_balancer_proxies_to_the_api_replicas_without_buffering(
    services: dict[str, Any],
) -> None:
    lb = services["api-lb"]
    (mount,) = lb["volumes"]
    source, target = mount.removesuffix(":ro").split(":")
    assert target == "/etc/nginx/nginx.conf"
    conf = (ROOT / source).read_text()
    conf = re.sub(r"#.*", "", conf)
    api_port = re.search(r"RAG_API_PORT=(\d+)", (ROOT / "Dockerfile").read_text())
    assert api_port
    upstream = re.search(r"upstream (\w+) \{([^}]*)\}", conf)
    assert upstream
    assert re.findall(r"server ([\w.-]+:\d+)", upstream.group(2)) == [
        f"api-replicas:{api_port.group(1)}"
    ]
    location = re.search(r"location / \{([^}]*)\}", conf)
    assert location
    assert f"proxy_pass http://{upstream.group(1)};" in location.group(1)
    assert "proxy_buffering off;" in location.group(1)  # server-sent events go out as they come
    assert "proxy_request_buffering off;" in conf
    assert re.search(r"client_max_body_size 0;", conf)  # the api's own 413s, not nginx's 1 MB
    published = lb["ports"][0].rsplit(":", 1)[1]
    assert re.search(rf"listen {published};", conf)
    assert lb["depends_on"] == {"api-replicas": {"condition": "service_healthy"}}
    health = re.search(r"GET (\S+) HTTP", " ".join(lb["healthcheck"]["test"]))
    assert health
    assert f"location = {health.group(1)} {{" in conf
    if " resolve;" in upstream.group(2):  # re-resolving upstream names came in nginx 1.27.3
        version = re.fullmatch(r"nginx:(\d+)\.(\d+)\.(\d+)", lb["image"])
        assert version
        assert tuple(map(int, version.groups())) >= (1, 27, 3)


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        found += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return found


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def pod_container(template: dict[str, Any]) -> dict[str, Any]:
    (only,) = template["spec"]["containers"]
    return dict(only)


def container(workload: dict[str, Any]) -> dict[str, Any]:
    return pod_container(workload["spec"]["template"])


def validate(manifest: dict[str, Any]) -> None:
    """Against the API's schema; a failure names the object and the field, nothing more."""
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(part) for part in exc.path)
        problem = f"{manifest['kind']} {manifest['metadata']['name']}: {where}: {exc.message}"
    pytest.fail(problem)


def service_url(manifests: list[dict[str, Any]], name: str) -> str:
    ports = find(manifests, "Service", name)["spec"]["ports"]
    return f"http://{name}:{ports[0]['port']}"


def test_every_manifest_file_is_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_manifests_match_the_kubernetes_api_schemas(manifests: list[dict[str, Any]]) -> None:
    assert len(manifests) > 10
    for manifest in manifests:  # strict: an unknown or misspelt field is an error
        validate(manifest)


def test_kustomize_renders_them_into_the_namespace_with_the_built_images(
    manifests: list[dict[str, Any]],
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on this machine")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    names = sorted((m["kind"], m["metadata"]["name"]) for m in rendered)
    assert names == sorted((m["kind"], m["metadata"]["name"]) for m in manifests)
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    for manifest in rendered:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == namespace
        validate(manifest)
    images = {
        c["image"]
        for m in rendered
        if m["kind"] in {"Deployment", "StatefulSet"}
        for c in m["spec"]["template"]["spec"]["containers"]
    }
    assert all(re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image) for image in images), images


def test_vllm_pods_get_a_gpu_each_and_the_compose_engine_flags(
    manifests: list[dict[str, Any]], services: dict[str, Any]
) -> None:
    vllm = container(find(manifests, "Deployment", "vllm"))
    assert vllm["image"] == services["vllm"]["image"]
    assert vllm["args"] == args_of(services["vllm"])  # compose's defaults, flag for flag
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health"
    startup = vllm["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1200  # the first download


def test_pods_get_no_service_links(manifests: list[dict[str, Any]]) -> None:
    """A Service named rag-api would set RAG_API_PORT=tcp://…, and one named vllm VLLM_PORT,
    in every pod: settings the api and vLLM read as their own port, and refuse."""
    for m in manifests:
        if m["kind"] in {"Deployment", "StatefulSet"}:
            assert m["spec"]["template"]["spec"]["enableServiceLinks"] is False, m["metadata"]


def test_the_vllm_autoscaler_follows_the_waiting_queue_through_prometheus_adapter(
    manifests: list[dict[str, Any]],
) -> None:
    hpa = find(manifests, "HorizontalPodAutoscaler", "vllm")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "vllm")
    find(manifests, target["kind"], target["name"])
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    series = re.match(r"([\w:]+)\{", rule["seriesQuery"])
    assert series
    assert series.group(1) == "vllm:num_requests_waiting"
    assert series.group(1) in VLLM_026_METRICS  # a series the compose image's vLLM exports
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},  # a Pods metric is looked up per pod
    }
    monitor = yaml.safe_load((K8S / "monitoring" / "vllm-podmonitor.yaml").read_text())
    pods = find(manifests, "Deployment", "vllm")["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pods["metadata"]["labels"].items()
    port_names = {p["name"] for p in pod_container(pods)["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in port_names


def test_the_router_finds_the_vllm_pods_itself(manifests: list[dict[str, Any]]) -> None:
    deployment = find(manifests, "Deployment", "vllm-router")
    args = container(deployment)["args"]
    assert flag(args, "--policy") == "cache_aware"
    assert "--service-discovery" in args
    vllm = find(manifests, "Deployment", "vllm")["spec"]["template"]
    key, value = flag(args, "--selector").split("=")
    assert vllm["metadata"]["labels"][key] == value
    vllm_port = pod_container(vllm)["ports"][0]["containerPort"]
    assert int(flag(args, "--service-discovery-port")) == vllm_port
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    binding = find(manifests, "RoleBinding", "vllm-router")
    assert {"kind": "ServiceAccount", "name": account} in binding["subjects"]
    (rule,) = find(manifests, binding["roleRef"]["kind"], binding["roleRef"]["name"])["rules"]
    assert rule["resources"] == ["pods"]
    assert {"list", "watch"} <= set(rule["verbs"])


def test_api_pods_ask_the_router_share_redis_and_probe_the_real_routes(
    manifests: list[dict[str, Any]],
) -> None:
    api = container(find(manifests, "Deployment", "rag-api"))
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert env["RAG_LLM_URL"] == service_url(manifests, "vllm-router")
    assert env["RAG_QDRANT_URL"] == service_url(manifests, "qdrant")
    redis = urlsplit(env["RAG_REDIS_URL"])
    assert f"http://{redis.hostname}:{redis.port}" == service_url(manifests, "redis")
    routes = {route.path for route in api_routes.routes}  # type: ignore[attr-defined]
    assert {"/healthz", "/readyz"} <= routes
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The kubelet's Host would be the pod's IP: the probe names one RAG_ALLOWED_HOSTS lists.
    (host,) = api["livenessProbe"]["httpGet"]["httpHeaders"]
    assert host["name"] == "Host"
    assert host["value"] in env["RAG_ALLOWED_HOSTS"].split(",")
    assert "/readyz" in " ".join(api["readinessProbe"]["exec"]["command"])
    assert api["resources"]["requests"]["cpu"]  # what the CPU autoscaler divides by
    hpa = find(manifests, "HorizontalPodAutoscaler", "rag-api")["spec"]
    assert (hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"]) == (
        "Deployment",
        "rag-api",
    )
    (metric,) = hpa["metrics"]
    assert (metric["type"], metric["resource"]["name"]) == ("Resource", "cpu")


class Recorder(BaseHTTPRequestHandler):
    """A scripted HTTP server's handler: ``answer(handler)`` -> (status, JSON body)."""

    answer: Callable[[Recorder], tuple[int, Any]]
    seen: list[tuple[str, str, dict[str, str], Any]]

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.seen.append((self.command, self.path, dict(self.headers), body))
        self.body = body
        status, payload = type(self).answer(self)
        if status == 0:
            return  # the answer wrote itself
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_HEAD = _serve

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def scripted_server(
    answer: Callable[[Recorder], tuple[int, Any]],
) -> Iterator[tuple[str, list[tuple[str, str, dict[str, str], Any]]]]:
    seen: list[tuple[str, str, dict[str, str], Any]] = []
    handler = type(
        "Handler",
        (Recorder,),
        {"answer": staticmethod(answer), "seen": seen, "protocol_version": "HTTP/1.1"},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def run_readiness_probe(manifests: list[dict[str, Any]], url: str, key: str | None) -> int:
    command = container(find(manifests, "Deployment", "rag-api"))["readinessProbe"]["exec"]
    program, flag_c, code = command["command"]
    assert (program, flag_c) == ("python", "-c")
    assert "http://127.0.0.1:8000/readyz" in code
    env = {"PROBE_API_KEY": key} if key else {}
    code = code.replace("http://127.0.0.1:8000", url)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode


def test_the_readiness_probe_asks_readyz_with_the_probe_key(
    manifests: list[dict[str, Any]],
) -> None:
    status = {"now": 200}
    with scripted_server(lambda h: (status["now"], {"ready": status["now"] == 200})) as (
        url,
        seen,
    ):
        assert run_readiness_probe(manifests, url, "k-probe") == 0
        assert run_readiness_probe(manifests, url, None) == 0
        status["now"] = 503
        assert run_readiness_probe(manifests, url, "k-probe") != 0  # not ready: no traffic
    assert [path for _, path, _, _ in seen] == ["/readyz"] * 3
    assert seen[0][2].get("Authorization") == "Bearer k-probe"
    assert "Authorization" not in seen[1][2]


# --- every RAG_* variable is a setting, with a value it accepts ---------------------------


def api_environments(
    services: dict[str, Any], manifests: list[dict[str, Any]]
) -> dict[str, dict[str, str]]:
    found = {
        f"compose {name}": {k: resolved(str(v)) for k, v in s.get("environment", {}).items()}
        for name, s in services.items()
    }
    for m in manifests:
        if m["kind"] in {"Deployment", "StatefulSet"}:
            for c in m["spec"]["template"]["spec"]["containers"]:
                found[f"k8s {c['name']}"] = {
                    e["name"]: e.get("value", "") for e in c.get("env", [])
                }
    return found


def test_every_rag_variable_deployed_is_a_setting_it_accepts(
    services: dict[str, Any], manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {f"RAG_{name.upper()}" for name in Settings.model_fields}
    environments = api_environments(services, manifests)
    assert {"compose api-replicas", "k8s api"} <= set(environments)
    for where, env in environments.items():
        rag = {k: v for k, v in env.items() if k.startswith("RAG_")}
        assert set(rag) <= known, f"{where}: not settings: {sorted(set(rag) - known)}"
        if not rag:
            continue
        with monkeypatch.context() as scoped:
            for name in [n for n in os.environ if n.startswith("RAG_")]:
                scoped.delenv(name)
            for name, value in rag.items():
                scoped.setenv(name, value)
            Settings(_env_file=None)  # type: ignore[call-arg]  # raises for a refused value


# --- the real vllm-router in front of two scripted engines --------------------------------


def scripted_engine(handler: Recorder) -> tuple[int, Any]:
    """What the service asks of vLLM: health, models, tokenize, metrics, a streamed chat."""
    path = handler.path
    if path == "/health":
        return 200, {}
    if path == "/v1/models":
        return 200, {"object": "list", "data": [{"id": "m", "max_model_len": 4096}]}
    if path == "/tokenize":
        text = json.dumps(handler.body)
        return 200, {"count": len(text.split()), "tokens": list(range(len(text.split())))}
    if path == "/metrics":
        return 200, "vllm:num_requests_waiting 0.0\n"
    if path == "/v1/chat/completions":
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        port = handler.server.server_port  # type: ignore[attr-defined]

        def send(event: dict[str, Any] | str) -> None:
            line = f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"
            data = line.encode()
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        send({"choices": [{"delta": {"content": f"from {port}"}}]})
        time.sleep(1.0)  # the rest comes later: a buffering router would hold the first part
        send({"choices": [{"delta": {"content": "."}, "finish_reason": "stop"}]})
        send({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
        send("[DONE]")
        handler.wfile.write(b"0\r\n\r\n")
        return 0, None
    return 404, {"error": "not found"}


async def ask_through(url: str) -> tuple[bool, int, list[tuple[float, str]], str]:
    client = EngineClient(url)
    try:
        healthy = await client.health()
        count = await client.count_tokens("three words here")
        started = time.monotonic()
        deltas = [
            (time.monotonic() - started, delta.text)
            async for delta in client.stream_chat(
                [{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0
            )
            if delta.text
        ]
        return healthy, count, deltas, await client.metrics_text()
    finally:
        await client.aclose()


@contextmanager
def running_router(args: list[str], workers: list[str], log: Path) -> Iterator[str]:
    """The dev install's vllm-router with these flags, on free local ports, before ``workers``."""
    binary = Path(sys.executable).with_name("vllm-router")
    assert binary.exists(), "vllm-router is a dev dependency: pip install -e '.[dev]'"
    args = list(args)
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    args[args.index("--prometheus-host") + 1] = "127.0.0.1"
    args[args.index("--prometheus-port") + 1] = str(free_port())
    start = args.index("--worker-urls") + 1
    args[start : start + len(flag_values(args, "--worker-urls"))] = workers
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        router = subprocess.Popen([str(binary), *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert router.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{url}/readiness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the router never became ready"
            time.sleep(0.2)
        yield url
    finally:
        router.terminate()
        router.wait(timeout=30)


def test_vllm_router_serves_every_engine_route_the_service_calls_and_streams_unbuffered(
    services: dict[str, Any], tmp_path: Path
) -> None:
    args = args_of(services["vllm-router"])
    with (
        scripted_server(scripted_engine) as (one, seen_one),
        scripted_server(scripted_engine) as (two, seen_two),
        running_router(args, [one, two], tmp_path / "router.log") as url,
    ):
        healthy, tokens, deltas, metrics = asyncio.run(ask_through(url))
    assert healthy
    assert tokens > 0
    assert "vllm:num_requests_waiting" in metrics
    assert [text for _, text in deltas][-1] == "."
    assert deltas[0][1].startswith("from ")
    assert deltas[0][0] < 0.8 < deltas[-1][0]  # the first token came before the stream ended
    for seen in (seen_one, seen_two):  # both replicas are health-checked by the router
        assert "/health" in {path for _, path, _, _ in seen}
    chats = [p for _, p, _, _ in seen_one + seen_two if p == "/v1/chat/completions"]
    assert len(chats) == 1


# --- a Qdrant cluster's shards and replicas -----------------------------------------------


def scripted_qdrant(handler: Recorder) -> tuple[int, Any]:
    def ok(result: Any) -> tuple[int, Any]:
        return 200, {"result": result, "status": "ok", "time": 0.0}

    if handler.path == "/":
        return 200, {"title": "qdrant - vector search engine", "version": QDRANT_CLIENT}
    if handler.path.endswith("/exists"):
        return ok({"exists": False})
    if handler.command == "PUT" and re.fullmatch(r"/collections/\w+(\?.*)?", handler.path):
        return ok(True)
    if "/index" in handler.path:
        return ok({"operation_id": 1, "status": "completed"})
    return 404, {"status": {"error": "not scripted"}}


def created_collection(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """The body of the request that creates an index's collection, with these RAG_* set."""
    meta = IndexMeta(
        name="default",
        embed_model="sentence-transformers/all-MiniLM-L6-v2",
        dim=384,
        max_tokens=256,
        chunking=ChunkingSpec(),
        sparse="bm25",
        created_at="2026-12-04T00:00:00+00:00",
    )
    with scripted_server(scripted_qdrant) as (url, seen), monkeypatch.context() as scoped:
        scoped.setenv("RAG_QDRANT_URL", url)
        for name, value in env.items():
            scoped.setenv(name, value)
        store = open_store(Settings(_env_file=None))  # type: ignore[call-arg]
        try:
            store.create_index(meta)
        finally:
            store.close()
        deadline = time.monotonic() + 10  # the client asks the version in a thread of its own
        while not any(path == "/" for _, path, _, _ in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
    (body,) = [b for method, path, _, b in seen if method == "PUT" and "/index" not in path]
    return dict(body)


def test_shards_and_replicas_of_a_qdrant_cluster_reach_the_collection_creation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = created_collection(
        monkeypatch, RAG_QDRANT_SHARD_NUMBER="6", RAG_QDRANT_REPLICATION_FACTOR="2"
    )
    assert (body["shard_number"], body["replication_factor"]) == (6, 2)
    assert body["metadata"]["rag_index"]["name"] == "default"  # the same request as always
    unset = created_collection(monkeypatch)
    assert "shard_number" not in unset  # the server's defaults
    assert "replication_factor" not in unset
