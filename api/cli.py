"""Commands around the service: `rag-api` serves it, `rag-engine` runs an engine in the
foreground, `rag-ask` asks a running service from a terminal, `rag-mcp` bridges an MCP client
that speaks only stdio to a running service."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
import httpx

from rag.config import Settings


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def limit_torch_threads(settings: Settings) -> None:
    """RAG_TORCH_THREADS, before torch loads, so that every thread of its pool obeys."""
    if settings.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(settings.torch_threads)


@click.command()
@click.option("--host", envvar="RAG_API_HOST", help="Bind address (env RAG_API_HOST).")
@click.option("--port", type=int, envvar="RAG_API_PORT", help="Port (env RAG_API_PORT).")
@click.option("--index", envvar="RAG_INDEX", help="Default index (env RAG_INDEX).")
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="RAG_DATA_DIR")
def api_main(host: str | None, port: int | None, index: str | None, data_dir: Path | None) -> None:
    """Serve POST /ask. With no RAG_LLM_URL it starts its own engine; with no RAG_QDRANT_URL it
    uses the embedded store. Ctrl-C or SIGTERM stops the engine too."""
    import uvicorn

    from api.app import create_app
    from api.server import server_options
    from rag.store import keep_files_private

    keep_files_private()  # the data dir holds the documents' text and the keys: 0700/0600
    settings = _settings(api_host=host, api_port=port, index=index, data_dir=data_dir)
    limit_torch_threads(settings)
    configure_logging()
    uvicorn.run(create_app(settings, announce=True), **server_options(settings))


def configure_logging() -> None:
    """INFO for the service's own loggers; httpx's line per request (the engine's health
    probe every second) only from WARNING up."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("mcp").setLevel(logging.WARNING)  # not a line per MCP request


@click.command()
@click.option("--port", type=int, envvar="RAG_ENGINE_PORT", help="Port (env RAG_ENGINE_PORT).")
def engine_main(port: int | None) -> None:
    """Start the local vLLM engine in the foreground (the one rag-api would start), keyed with
    RAG_LLM_API_KEY, else with a random key it prints once: clients send it as a bearer key."""
    from rag.engine import EngineProcess, EngineStartError, engine_key, local_engine_config
    from rag.store import keep_files_private

    keep_files_private()
    settings = _settings(engine_port=port)
    key = settings.llm_api_key or engine_key()
    config = local_engine_config(settings, api_key=key)
    process = EngineProcess(config, settings.data_dir / "logs" / "engine.log")

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    click.echo(f"starting {config.served_name} (max-model-len {config.max_model_len})", err=True)
    click.echo(f"log: {process.log_path}", err=True)
    process.start()
    try:
        process.wait_ready(settings.engine_start_timeout)
        click.echo(f"engine ready at {config.url}/v1  (Ctrl-C stops it)", err=True)
        shown = "$RAG_LLM_API_KEY" if settings.llm_api_key else key
        click.echo(
            f"every request needs its key, 'Authorization: Bearer <key>'; a service uses it "
            f"with RAG_LLM_URL={config.url} RAG_LLM_API_KEY={shown}",
            err=True,
        )
        while process.running():
            time.sleep(1)
        click.echo(f"the engine exited:\n{process.log_tail()}", err=True)
        sys.exit(1)
    except EngineStartError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("stopping the engine", err=True)
    finally:
        process.stop()


@click.command()
@click.argument("question")
@click.option("--url", envvar="RAG_API_URL", default="http://127.0.0.1:8000", show_default=True)
@click.option("--top-k", help="Passages to use, or 'auto' to fill the context window.")
@click.option("--index", help="Index to ask (default: the service's).")
@click.option("--path-prefix", help="Only cite files under this folder of the index.")
@click.option("--max-tokens", type=int, help="Longest answer, in tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole JSON response.")
@click.option("--api-key", envvar="RAG_API_KEY", help="The service's API key (env RAG_API_KEY).")
def ask_main(
    question: str,
    url: str,
    top_k: str | None,
    index: str | None,
    path_prefix: str | None,
    max_tokens: int | None,
    as_json: bool,
    api_key: str | None,
) -> None:
    """Ask a running rag-api and print the answer with numbered sources."""
    body: dict[str, Any] = {"question": question}
    if max_tokens:
        body["max_tokens"] = max_tokens
    if top_k:
        body["top_k"] = top_k if top_k == "auto" else int(top_k)
    if index:
        body["index"] = index
    if path_prefix:
        body["filters"] = {"path_prefix": path_prefix}
    stream = sys.stdout.isatty() and not as_json
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(600, connect=5)
        with httpx.Client(base_url=url, timeout=timeout, headers=headers) as client:
            if stream:
                _ask_streaming(client, body)
            else:
                _ask_once(client, body, as_json)
    except httpx.TransportError as exc:
        click.echo(f"Error: cannot reach the service at {url} ({exc})", err=True)
        sys.exit(3)


def _fail_on_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        response.read()
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError):
            message = response.text
        click.echo(f"Error ({response.status_code}): {message}", err=True)
        sys.exit(1)


def _print_sources(citations: list[dict[str, Any]]) -> None:
    if citations:
        click.echo("\nSources:")
    for c in citations:
        page = f", page {c['page']}" if c.get("page") is not None else ""
        click.echo(f"  [{c['n']}] {c['source']}{page}")


def _ask_once(client: httpx.Client, body: dict[str, Any], as_json: bool) -> None:
    response = client.post("/ask", json=body)
    _fail_on_error(response)
    data = response.json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(data["answer"].strip())
    _print_sources(data["citations"])


def _ask_streaming(client: httpx.Client, body: dict[str, Any]) -> None:
    citations: list[dict[str, Any]] = []
    with client.stream("POST", "/ask", json={**body, "stream": True}) as response:
        _fail_on_error(response)
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "citations":
                    citations = data["citations"]
                elif event == "token":
                    click.echo(data["text"], nl=False)
                elif event == "error":
                    click.echo(f"\nError: {data['message']}", err=True)
                    sys.exit(1)
    click.echo()
    _print_sources(citations)


@click.command()
@click.option(
    "--url",
    envvar="RAG_API_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The running service (its /mcp endpoint is used).",
)
@click.option("--api-key", envvar="RAG_API_KEY", help="The service's API key (env RAG_API_KEY).")
def mcp_main(url: str, api_key: str | None) -> None:
    """Serve the service's MCP tools on stdin/stdout, for MCP clients that start a command
    (desktop apps): each tool listing and call is forwarded to the service at --url."""
    import anyio

    from api.mcp_bridge import serve

    # stdout carries the protocol: everything else goes to stderr, the client's log.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="rag-mcp: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):  # the client stopped the bridge
        anyio.run(serve, url, api_key)
