"""Command-line shells: `rag-ingest` syncs folders into an index, `rag-index` inspects indexes.

Exit status of rag-ingest: 0 every file was ingested (or unchanged), 1 at least one file failed
and was skipped (the others were ingested), 2 usage error (bad path, incompatible index),
3 the store is unavailable.

When a running rag-api holds the embedded store (its record in the data dir says so), the
sync is handed to it over HTTP (ingest/handoff.py), with the same progress, report and codes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ingest.exit_codes import EXIT_FILES_FAILED, EXIT_STORE, EXIT_USAGE
from rag.config import Settings
from rag.embed import EmbedServiceError
from rag.errors import IndexMismatchError, IndexNotFoundError, RagError, StoreUnavailableError
from rag.guard import ServiceRecord, running_service
from rag.store import VectorStore

if TYPE_CHECKING:
    from rag.ingest import IngestLimits

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="RAG_DATA_DIR",
    help="Folder of the embedded store (env RAG_DATA_DIR).",
)
qdrant_url_option = click.option(
    "--qdrant-url", envvar="RAG_QDRANT_URL", help="Qdrant server URL (env RAG_QDRANT_URL)."
)


def _settings(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def ingest_limits(settings: Settings) -> IngestLimits:
    """What rag-ingest may read and how it parses, from the settings."""
    from rag.ingest import ingest_limits as limits

    return limits(settings)


def _log_to(path: Path) -> None:
    """Unexpected errors (with their tracebacks) go to the ingest log; stderr stays readable."""
    from rag.store import private_dir

    private_dir(path.parent)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("rag")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _open_store(settings: Settings) -> VectorStore:
    from rag.store import open_store

    try:
        store = open_store(settings)
        store.ping()
    except StoreUnavailableError as exc:
        _fail(str(exc), EXIT_STORE)
    return store


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--index", "index", envvar="RAG_INDEX", help="Index name (default: default).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--no-delete", is_flag=True, help="Keep chunks of files gone from the folders.")
@click.option(
    "--follow-links",
    is_flag=True,
    help="Follow symlinks that lead out of PATHS (off: such links are skipped, 'outside the "
    "ingest roots'; a share others can write may link to anything this user can read).",
)
@click.option("--embed-model", envvar="RAG_EMBED_MODEL", help="Embedder: HF id or local path.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    envvar="RAG_INGEST_WORKERS",
    help="Parse worker processes (env RAG_INGEST_WORKERS; default: one per core but one).",
)
@data_dir_option
@qdrant_url_option
@click.option(
    "--api-key",
    envvar="RAG_API_KEY",
    help="Key of the running service to hand the sync to (env RAG_API_KEY).",
)
def ingest_main(
    paths: tuple[Path, ...],
    index: str | None,
    as_json: bool,
    no_delete: bool,
    follow_links: bool,
    embed_model: str | None,
    workers: int | None,
    data_dir: Path | None,
    qdrant_url: str | None,
    api_key: str | None,
) -> None:
    """Sync the documents under PATHS into an index (PDF, Markdown, text, HTML)."""
    from rag.embed import embedder_from
    from rag.indexes import IndexSpec
    from rag.ingest import FolderSync
    from rag.store import keep_files_private

    keep_files_private()  # the store's files hold the documents' text: 0700/0600
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:
        raise click.UsageError(f"no such file or folder: {', '.join(missing)}")
    settings = _settings(
        index=index, data_dir=data_dir, qdrant_url=qdrant_url, ingest_workers=workers
    )
    _log_to(settings.data_dir / "logs" / "ingest.log")
    served = None if settings.qdrant_url else running_service(settings.data_dir)
    if served is not None:  # the service owns the embedded store: it syncs for us
        _refuse_local_options(served)
        handed = _hand_off(served, settings.index, paths, not no_delete, follow_links, api_key)
        _report(handed, as_json)
    try:
        spec = IndexSpec.load(settings.index, settings.indexes_dir, embed_model)
    except (RagError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    store = _open_store(settings)
    try:
        embedder = embedder_from(settings.embed_options(), spec.embed_model)
        sync = FolderSync(store, embedder, spec, limits=ingest_limits(settings))
        within = None if follow_links else list(paths)  # links stay inside the folders named
        with _progress_bar() as progress:
            report = sync.run(list(paths), delete=not no_delete, progress=progress, within=within)
    except IndexMismatchError as exc:
        _fail(str(exc), EXIT_USAGE)
    except (StoreUnavailableError, EmbedServiceError) as exc:
        _fail(str(exc), EXIT_STORE)
    except RagError as exc:
        _fail(str(exc), EXIT_USAGE)
    finally:
        store.close()
        _changed(settings)
    _report(report.to_json(), as_json)


def _changed(settings: Settings) -> None:
    """Tell the API replicas sharing RAG_REDIS_URL that the index changed: the answers they
    cached for it are not served again (rag/shared/generations.py)."""
    if settings.redis_url:
        from rag.shared import IndexGenerations, SharedState

        shared = SharedState(settings.redis_url, timeout_s=2.0)
        try:
            IndexGenerations(shared).bump(settings.index)
        finally:
            shared.sync.close()


def _refuse_local_options(served: ServiceRecord) -> None:
    """--embed-model and --workers shape a sync this process runs; the service syncs with its
    own settings, so naming them on the command line while it holds the store is a mistake."""
    ctx = click.get_current_context()
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("embed_model", "workers")
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(
            f"{' and '.join(given)} cannot be used while the service at {served.url} "
            f"(pid {served.pid}) holds this data dir: it runs the sync with its own embedder "
            "and workers (the index's, RAG_INGEST_WORKERS). Leave the option out, or stop "
            "the service first."
        )


def _hand_off(
    served: ServiceRecord,
    index: str,
    paths: tuple[Path, ...],
    delete: bool,
    follow_links: bool,
    key: str | None,
) -> dict[str, Any]:
    from ingest.handoff import Handoff, HandoffError

    click.echo(f"The service at {served.url} holds this data dir: it runs the sync.", err=True)
    try:
        with Handoff(served, key) as handoff, _progress_bar() as progress:
            return handoff.sync(
                index, paths, delete=delete, follow_links=follow_links, progress=progress
            )
    except HandoffError as exc:
        _fail(str(exc), exc.code)
        raise  # not reached: _fail exits


def _report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_summary(report)
    sys.exit(EXIT_FILES_FAILED if report["failed"] else 0)


class _progress_bar:
    """A tqdm bar over bytes with ETA on a terminal; nothing at all otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="B", unit_scale=True, desc="ingest", file=sys.stderr)

        def update(_file: Any, size: int, total: int) -> None:
            if self.bar.total != total:
                self.bar.total = total
            self.bar.update(size)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(report: dict[str, Any]) -> None:
    click.echo(
        f"{report['files_seen']} files: {report['added']} added, {report['updated']} updated, "
        f"{report['unchanged']} unchanged, {report['deleted']} deleted, "
        f"{report['skipped']} skipped, {len(report['failed'])} failed"
    )
    dropped = report["unrepresentable"]
    click.echo(
        f"{report['chunks_written']} chunks written, {report['chunks_deleted']} deleted "
        f"in {report['seconds']:.1f} s"
        + (
            f" ({dropped['runs']} unreadable runs of {dropped['chars']} characters left out)"
            if dropped["runs"]
            else ""
        )
    )
    for entry in report["skipped_files"]:
        if not entry["reason"].startswith(("not a document type", "hidden")):
            click.echo(f"  skipped: {entry['path']}: {entry['reason']}", err=True)
    for failure in report["failed"]:
        click.echo(f"  failed: {failure['path']}: {failure['reason']}", err=True)


@click.group()
@data_dir_option
@qdrant_url_option
@click.pass_context
def index_main(ctx: click.Context, data_dir: Path | None, qdrant_url: str | None) -> None:
    """List, inspect and drop indexes."""
    from rag.store import keep_files_private

    keep_files_private()
    ctx.obj = _settings(data_dir=data_dir, qdrant_url=qdrant_url)


@index_main.command("list")
@click.pass_obj
def list_indexes(settings: Settings) -> None:
    """Names of the indexes in the store."""
    store = _open_store(settings)
    try:
        for name in store.list_indexes():
            click.echo(name)
    finally:
        store.close()


@index_main.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show_index(settings: Settings, name: str, as_json: bool) -> None:
    """Embedder, chunking, size and files of index NAME."""
    from rag.ingest import summarise

    store = _open_store(settings)
    try:
        summary = summarise(store, name).to_json()
    except IndexNotFoundError as exc:
        _fail(str(exc), EXIT_USAGE)
    except StoreUnavailableError as exc:
        _fail(str(exc), EXIT_STORE)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    size = summary["size_bytes"]
    click.echo(f"index     {summary['name']} ({summary['store']})")
    click.echo(f"embedder  {summary['embedder']['model']} ({summary['embedder']['dim']} dims)")
    chunking = summary["chunking"]
    click.echo(f"chunking  {chunking['chunk_tokens']} tokens, {chunking['overlap_tokens']} overlap")
    click.echo(f"files     {summary['files']}")
    click.echo(f"chunks    {summary['chunks']}")
    click.echo(f"size      {'n/a' if size is None else f'{size / 1e6:.1f} MB'}")
    for entry in summary["file_list"]:
        ocr = f"  (OCR: {entry['ocr_pages']} pages)" if entry.get("ocr_pages") else ""
        click.echo(f"  {entry['sha256'][:12]}  {entry['chunks']:>6}  {entry['path']}{ocr}")
        for member in entry.get("members", []):
            click.echo(f"  {'':12}  {member['chunks']:>6}    {entry['path']}/{member['path']}")
        if entry.get("locations"):
            click.echo(f"  {'':12}  {'':>6}    in: {', '.join(entry['locations'])}")


@index_main.command("drop")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def drop_index(settings: Settings, name: str, yes: bool) -> None:
    """Delete index NAME and everything in it."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Drop index {name!r} and all its chunks?", abort=True)
    store = _open_store(settings)
    try:
        dropped = store.drop_index(name)
    finally:
        store.close()
    if not dropped:
        _fail(f"index {name!r} does not exist", EXIT_USAGE)
    click.echo(f"dropped {name}")
