"""Scale-out bench: vLLM engines behind vllm-router, `rag-api` replicas sharing Redis behind nginx,
driven by bench.load through nginx.

    python -m bench.scale --folder ../shared/data/sec-10q --max-files 3 --engines 2 --apis 2 \
        --questions ../shared/data/sec-10q/qna_data.csv --users 4 --rate 0.5 --duration 30

It starts, each on a free loopback port (bench/scale_stack.py), and stops on the way out, Ctrl-C
and errors included:
1. --engines vLLM engines as rag starts its own (EngineProcess: SmolLM2 on the CPU build here),
   each with --kv-cache-gib of KV cache and its own share of the cores (of the GPUs, on a GPU
   host); or none: --engine-url, repeated, names engines already running (the GPU machine).
2. vllm-router in front of them, --router-policy (cache_aware, as docker-compose's scale profile).
3. redis-server, without persistence.
4. The index: --folder (its first --max-files files) synced by `rag-ingest` into --data-dir (by
   default the cache dir's bench/scale-data, so a re-run only hashes), or into the Qdrant server
   of --qdrant-url. Qdrant Edge is one process's store: each API replica gets its own copy.
5. --apis `rag-api` replicas: RAG_LLM_URL the router, RAG_ENGINE_METRICS_URLS the engines,
   RAG_REDIS_URL, RAG_ANSWER_CACHE with --answer-cache, RAG_AUTH=off.
6. nginx in front of them with deploy/nginx.conf's settings (least_conn, nothing buffered).
Then bench.load runs through nginx (every option not listed by -h here goes to it, see
`python -m bench.load -h`), and the pool's facts follow its table: per API replica its asks,
answer-cache hits, admission rejections, learned capacity (`rag_engine_capacity_tokens`, its
share of the pool's) and `rag_api_replicas`; per engine its KV cache, requests and prefix-cache
hit ratio over the run (read from the engines, since the balanced /metrics is one replica's).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx

from bench import load
from bench.scale_stack import (
    Child,
    StackError,
    executable,
    free_port,
    nginx,
    rag_api,
    redis_server,
    vllm_router,
)
from rag.config import Settings, default_cache_dir
from rag.engine import EngineProcess, local_engine_config, prefix_cache_counters
from rag.engine.pool import kv_tokens_from_metrics
from rag.errors import RagError
from rag.store import open_store

INDEX = "bench-scale"
POLICIES = ("cache_aware", "round_robin", "power_of_two", "random")
ENGINE_REQUESTS = "vllm:request_success_total"


@dataclasses.dataclass
class Pool:
    """What was started, for the facts: engine URLs, the router and the API replicas."""

    engines: list[str]
    router: str = ""
    apis: list[str] = dataclasses.field(default_factory=list)
    model: str | None = None  # the served name and tokenizer, when the engines were started here
    tokenizer: str | None = None


def placement(i: int, count: int, cores: Sequence[int], gpus: Sequence[str]) -> dict[str, str]:
    """Engine ``i`` of ``count``'s own share of the cores (the CPU build's OpenMP threads, when
    there is at least one core each) and its own GPU (a GPU build, when there are GPUs)."""
    env = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {}
    share = len(cores) // count
    if share:
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores[i * share : (i + 1) * share]))
    return env


def start_engines(
    count: int, kv_gib: int, workdir: Path, stack: contextlib.ExitStack
) -> tuple[list[EngineProcess], Pool]:
    """``count`` engines started (not yet ready), each stopped when ``stack`` closes."""
    cores = sorted(os.sched_getaffinity(0))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(count)]
    if not visible and not Path("/dev/nvidiactl").exists():
        gpus = []  # the CPU build: cores only
    engines = []
    for i in range(count):
        config = local_engine_config(Settings(engine_port=free_port(), engine_kv_cache_gib=kv_gib))
        env = {**config.env, **placement(i, count, cores, gpus)}
        engine = EngineProcess(dataclasses.replace(config, env=env), workdir / f"engine-{i}.log")
        stack.callback(engine.stop)
        engine.start()
        engines.append(engine)
    return engines, Pool([e.url for e in engines], model=config.served_name, tokenizer=config.model)


def sync_index(args: argparse.Namespace, data_dir: Path) -> None:
    """--folder (its first --max-files files) into the index, by `rag-ingest`."""
    if args.max_files:
        paths = sorted(p for p in args.folder.iterdir() if p.is_file())[: args.max_files]
    else:
        paths = [args.folder]
    command = [executable("rag-ingest") or "rag-ingest", *map(str, paths), "--index", args.index]
    command += ["--json", "--data-dir", str(data_dir)]
    if args.qdrant_url:
        command += ["--qdrant-url", args.qdrant_url]
    env = {k: v for k, v in os.environ.items() if k not in ("RAG_QDRANT_URL", "RAG_REDIS_URL")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise StackError(f"rag-ingest failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    print(
        f"index {args.index}: {report['added'] + report['updated']} files ingested, "
        f"{report['unchanged']} unchanged, {report['chunks_written']} chunks written, "
        f"{report['seconds']:.0f} s",
        flush=True,
    )


def check_index(args: argparse.Namespace, data_dir: Path) -> None:
    """StackError unless the index is in the store the replicas will open."""
    if not args.qdrant_url and not data_dir.is_dir():
        raise StackError(f"no data dir {data_dir}: give --folder to make the index")
    store = open_store(Settings(data_dir=data_dir, qdrant_url=args.qdrant_url))
    try:
        found = store.get_meta(args.index) is not None
    finally:
        store.close()
    if not found:
        raise StackError(f"no index {args.index!r} in {args.qdrant_url or data_dir}: give --folder")


def api_env(args: argparse.Namespace, pool: Pool, redis_url: str, data_dir: Path) -> dict[str, str]:
    """The RAG_* settings of an API replica over ``data_dir``."""
    env = {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_API_HOST": "127.0.0.1",
        "RAG_API_PORT": str(free_port()),
        "RAG_INDEX": args.index,
        "RAG_LLM_URL": pool.router,
        "RAG_ENGINE_METRICS_URLS": ",".join(pool.engines),
        "RAG_REDIS_URL": redis_url,
        "RAG_ANSWER_CACHE": "true" if args.answer_cache else "false",
        "RAG_AUTH": "off",  # one trusted client on the loopback: no keys, no rate limits
        "HF_HUB_OFFLINE": "1",
    }
    optional = {
        "RAG_LLM_MODEL": pool.model,  # known when the engines were started here
        "RAG_LLM_TOKENIZER": pool.tokenizer,
        "RAG_QDRANT_URL": args.qdrant_url,
        "RAG_TORCH_THREADS": str(args.torch_threads) if args.torch_threads else None,
    }
    return env | {name: value for name, value in optional.items() if value}


def start_api(
    i: int, args: argparse.Namespace, pool: Pool, redis_url: str, seed: Path, workdir: Path
) -> tuple[Child, str]:
    """API replica ``i``, started over its own copy of ``seed`` (or the Qdrant server);
    (child, URL)."""
    data_dir = workdir / f"api-{i}-data"
    if args.qdrant_url:
        data_dir.mkdir()
    else:
        shutil.copytree(seed, data_dir, ignore=shutil.ignore_patterns("logs"))
    env = api_env(args, pool, redis_url, data_dir)
    return rag_api(f"rag-api-{i}", env, workdir), f"http://127.0.0.1:{env['RAG_API_PORT']}"


def metrics(url: str) -> str | None:
    try:
        r = httpx.get(f"{url}/metrics", timeout=10)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def engine_reading(text: str | None) -> dict[str, float | None]:
    """An engine's KV-cache tokens, finished requests and prefix-cache counters, from /metrics."""
    if text is None:
        return {"kv_tokens": None, "requests": None, "hits": None, "queries": None}
    hits, queries = prefix_cache_counters(text)
    return {
        "kv_tokens": kv_tokens_from_metrics(text),
        "requests": load.metric_sum(text, ENGINE_REQUESTS),
        "hits": hits,
        "queries": queries,
    }


def api_reading(text: str | None) -> dict[str, float | None]:
    """An API replica's asks, answer-cache hits, rejections and capacity, from /metrics."""
    if text is None:
        return dict.fromkeys(("asks", "cache_hits", "rejections", "capacity", "replicas"))
    asks = load.metric_by_label(text, "rag_requests_total", "route").get("/ask", 0.0)
    return {
        "asks": asks,
        "cache_hits": load.metric_sum(text, "rag_answer_cache_hits_total"),
        "rejections": load.metric_sum(text, load.ADMISSION_METRIC),
        "capacity": load.metric_sum(text, "rag_engine_capacity_tokens"),
        "replicas": load.metric_sum(text, "rag_api_replicas"),
    }


def ratio(hits: float, queries: float) -> float | None:
    return round(hits / queries, 3) if queries > 0 else None


def pool_facts(
    pool: Pool,
    before: Sequence[dict[str, float | None]],
    after: Sequence[dict[str, float | None]],
    apis: Sequence[dict[str, float | None]],
    policy: str,
) -> dict[str, Any]:
    """The pool over the run: each engine's change of counters, each API replica's state."""
    engines: list[dict[str, Any]] = []
    for url, old, new in zip(pool.engines, before, after, strict=True):
        change = {
            k: (new[k] or 0.0) - (old[k] or 0.0)
            for k in ("requests", "hits", "queries")
            if new[k] is not None
        }
        engines.append(
            {
                "url": url,
                "kv_tokens": new["kv_tokens"],
                "requests": change.get("requests"),
                "prefix_cache_hit_ratio": ratio(change.get("hits", 0), change.get("queries", 0)),
                "prefix_cache_hits": change.get("hits"),
                "prefix_cache_queries": change.get("queries"),
            }
        )
    hits = sum(e["prefix_cache_hits"] or 0.0 for e in engines)
    queries = sum(e["prefix_cache_queries"] or 0.0 for e in engines)
    kv = [e["kv_tokens"] for e in engines if e["kv_tokens"] is not None]
    return {
        "router": {"url": pool.router, "policy": policy},
        "engines": engines,
        "apis": [{"url": url, **reading} for url, reading in zip(pool.apis, apis, strict=True)],
        "kv_tokens": sum(kv) if kv else None,
        "prefix_cache_hit_ratio": ratio(hits, queries),
    }


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render_facts(facts: dict[str, Any]) -> str:
    """The pool's facts as Markdown, to follow bench.load's table."""
    lines = [
        "| API replica | asks | answer-cache hits | admission rejections "
        "| rag_engine_capacity_tokens | rag_api_replicas |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for a in facts["apis"]:
        lines.append(
            f"| {a['url']} | {_n(a['asks'])} | {_n(a['cache_hits'])} | {_n(a['rejections'])} "
            f"| {_n(a['capacity'])} | {_n(a['replicas'])} |"
        )
    lines += ["", "| engine | KV-cache tokens | requests | prefix-cache hit ratio |"]
    lines.append("| --- | --- | --- | --- |")
    for e in facts["engines"]:
        hit = e["prefix_cache_hit_ratio"]
        lines.append(
            f"| {e['url']} | {_n(e['kv_tokens'])} | {_n(e['requests'])} "
            f"| {'-' if hit is None else f'{hit:.2f}'} |"
        )
    hit = facts["prefix_cache_hit_ratio"]
    lines += [
        "",
        f"pool: {len(facts['engines'])} engines behind vllm-router "
        f"(policy {facts['router']['policy']}), KV-cache tokens {_n(facts['kv_tokens'])}, "
        f"prefix-cache hit ratio over the run {'-' if hit is None else f'{hit:.2f}'}; "
        f"{len(facts['apis'])} rag-api replicas behind nginx (least_conn), one Redis",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, load_args: argparse.Namespace, workdir: Path) -> None:
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        if args.engine_url:
            engines: list[EngineProcess] = []
            pool = Pool([u.rstrip("/") for u in args.engine_url], tokenizer=args.tokenizer)
        else:
            print(f"starting {args.engines} engines (about 100 s each on 2 cores)", flush=True)
            engines, pool = start_engines(args.engines, args.kv_cache_gib, workdir, stack)
        seed = args.data_dir or default_cache_dir() / "bench" / "scale-data"
        if args.folder:
            sync_index(args, seed)
        check_index(args, seed)
        for engine in engines:
            engine.wait_ready(timeout=900)
        waited = time.monotonic() - started
        print(f"engines ready: {', '.join(pool.engines)} ({waited:.0f} s)", flush=True)
        redis, redis_url = redis_server(workdir)
        stack.callback(redis.stop)
        router, pool.router = vllm_router(pool.engines, args.router_policy, workdir)
        stack.callback(router.stop)
        apis = []
        for i in range(args.apis):
            api, url = start_api(i, args, pool, redis_url, seed, workdir)
            stack.callback(api.stop)
            apis.append(api)
            pool.apis.append(url)
        for api, url in zip(apis, pool.apis, strict=True):
            api.wait_http(f"{url}/readyz", timeout=600)
        balancer, balanced = nginx([u.removeprefix("http://") for u in pool.apis], workdir)
        stack.callback(balancer.stop)
        load_args.url = balanced
        print(
            f"stack ready in {time.monotonic() - started:.0f} s: router {pool.router} "
            f"({args.router_policy}), {len(apis)} APIs behind nginx {load_args.url}, "
            f"answer cache {'on' if args.answer_cache else 'off'}",
            flush=True,
        )
        before = [engine_reading(metrics(u)) for u in pool.engines]
        summary = load.execute(load_args)
        after = [engine_reading(metrics(u)) for u in pool.engines]
        readings = [api_reading(metrics(u)) for u in pool.apis]
        facts = pool_facts(pool, before, after, readings, args.router_policy)
        facts["answer_cache"] = args.answer_cache
        print()
        print(render_facts(facts))
        if load_args.json_out:
            load.write_json(load_args, {**summary, "scale": facts})
        print("stopping the stack", flush=True)


def _exit_on_signal(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds run(): every process is stopped


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """This bench's options, and bench.load's from the rest of the command line."""
    p = argparse.ArgumentParser(
        prog="bench.scale",
        description=__doc__.splitlines()[0],
        epilog="Every other option goes to bench.load (python -m bench.load -h) but --url.",
        allow_abbrev=False,
    )
    p.add_argument("--engines", type=int, default=2, help="vLLM engines to start here")
    p.add_argument(
        "--engine-url", action="append", help="a running engine instead (repeat for each)"
    )
    p.add_argument("--tokenizer", help="with --engine-url: the served model's tokenizer folder")
    p.add_argument("--kv-cache-gib", type=int, default=1, help="KV cache of each CPU engine")
    p.add_argument("--router-policy", choices=POLICIES, default="cache_aware")
    p.add_argument("--apis", type=int, default=2, help="rag-api replicas behind nginx")
    p.add_argument("--answer-cache", action="store_true", help="RAG_ANSWER_CACHE=true")
    p.add_argument("--folder", type=Path, help="documents to sync into the index first")
    p.add_argument("--max-files", type=int, help="only the folder's first N files (by name)")
    p.add_argument("--data-dir", type=Path, help="the index's data dir (copied per replica)")
    p.add_argument("--qdrant-url", help="a Qdrant server for the index, shared by the replicas")
    p.add_argument("--index", default=INDEX)
    p.add_argument("--torch-threads", type=int, help="RAG_TORCH_THREADS of each API replica")
    p.add_argument("--work-dir", type=Path, help="keep the logs here (default: a temp dir)")
    args, rest = p.parse_known_args(argv)
    if any(a == "--url" or a.startswith("--url=") for a in rest):
        p.error("--url: bench.scale drives the balancer it starts")
    if args.engines < 1 or args.apis < 1:
        p.error("--engines and --apis must be at least 1")
    if args.folder is not None and not args.folder.is_dir():
        p.error(f"--folder {args.folder} is not a folder")
    load_args = load.parse_args([*rest, "--url", "http://127.0.0.1"])  # nginx's, once it runs
    load_args.api_key = None  # RAG_AUTH=off
    return args, load_args


def main() -> None:
    args, load_args = parse_args()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    with contextlib.ExitStack() as stack:
        workdir = args.work_dir
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            run(args, load_args, workdir)
        except (StackError, RagError) as exc:  # RagError: an engine that did not start
            print(f"bench.scale: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("bench.scale: interrupted, everything it started is stopped", file=sys.stderr)
            raise SystemExit(130) from None


if __name__ == "__main__":
    main()
