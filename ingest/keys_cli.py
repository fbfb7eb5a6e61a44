"""`rag-keys`: create, list and revoke the service's API keys (rag/guard/keys.py: the file).

`rag-keys create NAME` prints the new key alone on stdout (so `KEY=$(rag-keys create ...)`
works); it is shown this once and stored only as a salted hash. Exit status: 0 done, 2 usage
error (bad name, duplicate, unknown key, a key file that is corrupt, unreadable or read-only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ingest.cli import data_dir_option
from ingest.exit_codes import EXIT_USAGE
from rag.config import Settings
from rag.guard import KeyStore, KeyStoreError, keys_path
from rag.store import keep_files_private


def _store(data_dir: Path | None, keys_file: Path | None) -> KeyStore:
    values = {k: v for k, v in {"data_dir": data_dir, "keys_file": keys_file}.items() if v}
    try:
        settings = Settings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if settings.redis_url:  # the keys every API replica reads (rag/guard/shared_keys.py)
        from rag.guard import SharedKeyStore
        from rag.shared import SharedState

        store = SharedKeyStore(SharedState(settings.redis_url, timeout_s=2.0), keys_path(settings))
        store.import_file()
        return store
    return KeyStore(keys_path(settings))


def _fail(exc: KeyStoreError) -> None:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(EXIT_USAGE)


keys_file_option = click.option(
    "--keys-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="RAG_KEYS_FILE",
    help="The key file (env RAG_KEYS_FILE; default: keys.json in the data dir).",
)


@click.group()
def main() -> None:
    """Manage the API keys of the rag service."""
    keep_files_private()  # the key file and its folder: 0600/0700


@main.command()
@click.argument("name")
@click.option("--index", "indexes", multiple=True, help="An index the key may read (repeat).")
@click.option("--all-indexes", is_flag=True, help="The key may read every index.")
@click.option("--admin", is_flag=True, help="The key may use admin routes and write every index.")
@click.option("--write", is_flag=True, help="The key may sync, upload and delete in its indexes.")
@click.option("--rps", type=click.FloatRange(min=0, min_open=True), help="Own requests/s.")
@click.option(
    "--tokens-per-minute", type=click.IntRange(min=1), help="Own prompt tokens per minute."
)
@data_dir_option
@keys_file_option
def create(
    name: str,
    indexes: tuple[str, ...],
    all_indexes: bool,
    admin: bool,
    write: bool,
    rps: float | None,
    tokens_per_minute: int | None,
    data_dir: Path | None,
    keys_file: Path | None,
) -> None:
    """Create a key NAME and print it (shown once)."""
    try:
        key = _store(data_dir, keys_file).create(
            name,
            indexes,
            all_indexes=all_indexes,
            admin=admin,
            write=write,
            rps=rps,
            tokens_per_minute=tokens_per_minute,
        )
    except KeyStoreError as exc:
        _fail(exc)
    click.echo(key)
    click.echo(f"Key {name!r} created; store it now, it is not shown again.", err=True)


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@data_dir_option
@keys_file_option
def list_keys(as_json: bool, data_dir: Path | None, keys_file: Path | None) -> None:
    """List the keys (names and scopes; never the keys themselves)."""
    try:
        records = _store(data_dir, keys_file).list()
    except KeyStoreError as exc:
        _fail(exc)
    for r in records:
        scope = "all indexes" if r.all_indexes else ", ".join(r.indexes) or "no index"
        row = {
            "name": r.name,
            "id": r.id,
            "indexes": "*" if r.all_indexes else list(r.indexes),
            "admin": r.admin,
            "write": r.write,
            "rps": r.limits.rps,
            "tokens_per_minute": r.limits.tokens_per_minute,
            "created_at": r.created_at,
        }
        if as_json:
            click.echo(json.dumps(row))
            continue
        limits = [f"{r.limits.rps:g} rps" if r.limits.rps else ""]
        limits.append(f"{r.limits.tokens_per_minute} tok/min" if r.limits.tokens_per_minute else "")
        scopes = ["write" if r.write else "", "admin" if r.admin else ""]
        extra = ", ".join(x for x in [*limits, *scopes] if x)
        click.echo(f"{r.name}\t{r.id}\t{scope}\t{extra or '-'}\t{r.created_at}")


@main.command()
@click.argument("name")
@data_dir_option
@keys_file_option
def revoke(name: str, data_dir: Path | None, keys_file: Path | None) -> None:
    """Revoke the key NAME; a running service refuses it from its next request."""
    try:
        left = _store(data_dir, keys_file).revoke(name)
    except KeyStoreError as exc:
        _fail(exc)
    click.echo(f"Key {name!r} revoked.", err=True)
    if left == 0:
        click.echo(
            "No key is left, and the service stays closed: no key can open it (RAG_AUTH=auto "
            "stays closed once keys have existed). Create a key, or set RAG_AUTH=off to open it.",
            err=True,
        )
