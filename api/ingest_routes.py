"""Ingestion over HTTP: sync server folders, upload files, list and delete documents, follow jobs.

Every route needs a key that may write the index (`rag-keys create NAME --index A --write`, or
an admin key; 403 otherwise), except the document list, which needs read. A caller without a
key gets 401 even on a service without keys, unless it holds the service record's local token
(`rag-ingest` on this machine). Work that changes an
index is a job (rag/ingest/jobs.py): 202 with `Location: /v1/jobs/{id}`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Header, Path, Query, UploadFile
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr

from api.auth import AdmittedDep, require_read, require_write
from api.deps import Services, ServicesDep
from api.media import JsonBody, MultipartBody
from api.openapi import _error
from rag.errors import IndexNotFoundError
from rag.guard import ANONYMOUS, TOKEN_HEADER
from rag.indexes import INDEX_NAME_PATTERN, check_index_name
from rag.ingest import (
    DocumentNotFoundError,
    Job,
    JobNotFoundError,
    JobRunner,
    save_uploads,
    source_roots,
    summarise,
    sync_paths,
    sync_roots,
    upload_dir,
    upload_limits,
    uploaded_copy,
)

router = APIRouter(prefix="/v1", tags=["ingestion"])

IndexName = Annotated[
    str,
    Path(
        description="The index.",
        examples=["default"],
        json_schema_extra={"pattern": INDEX_NAME_PATTERN},
    ),
    AfterValidator(check_index_name),
]
LocalToken = Annotated[
    str | None,
    Header(
        alias=TOKEN_HEADER,
        description="The token of the service record in the data dir (rag-ingest sends it): "
        "lifts the RAG_INGEST_ROOTS restriction for callers on this machine.",
    ),
]


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folders: list[Annotated[StrictStr, Field(json_schema_extra={"pattern": "^/"})]] = Field(
        min_length=1,
        max_length=100,
        description="Absolute folders (or files) on the server.",
        examples=[["/srv/docs/handbook"]],
    )
    delete: StrictBool = Field(
        default=True, description="Remove the passages of files gone from these folders."
    )
    follow_links: StrictBool = Field(
        default=False,
        description="Follow symlinks out of the named folders (`rag-ingest --follow-links`); "
        "only for an admin key or the local token: other callers stay inside "
        "RAG_INGEST_ROOTS whatever they ask.",
    )


JOB_RESPONSE = {
    "description": "The job: state, progress, and its report (rag-ingest --json's) when done.",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
ACCESS: dict[int | str, dict[str, Any]] = {
    400: _error("The body cannot be read."),
    401: _error(
        "No valid API key was sent: writing needs one (or the local token) even while the "
        "service has no keys."
    ),
    403: _error("The key may not write the index, or the folder is outside RAG_INGEST_ROOTS."),
    404: _error("No such index, document or job."),
    422: _error("Invalid request: a relative or missing path, a bad file name or index name."),
    429: _error("The key is over its requests per second."),
    503: _error("The service is shutting down."),
}
CREATED: dict[int | str, dict[str, Any]] = {202: JOB_RESPONSE, **ACCESS}
# What a route with a body may also answer.
SYNC_RESPONSES: dict[int | str, dict[str, Any]] = {
    **CREATED,
    413: _error("The body is larger than RAG_MAX_REQUEST_BYTES (`body_too_large`)."),
    415: _error("The body is not sent as `application/json` (`unsupported_media_type`)."),
}
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **CREATED,
    413: _error(
        "The body is larger than RAG_MAX_FILE_MB (plus the multipart framing) "
        "(`body_too_large`), or the index's uploads would pass RAG_UPLOADS_MAX_MB "
        "(`upload_quota_exceeded`)."
    ),
    415: _error(
        "The body is not sent as `multipart/form-data`, or a file is not a document type the "
        "service reads; the message lists those (`unsupported_media_type`)."
    ),
    507: _error("The data dir's file system would keep less than RAG_MIN_FREE_MB free."),
}


def _runner(services: Services) -> JobRunner:
    assert services.jobs is not None, "lifespan builds the job runner"
    return services.jobs


def _accepted(job: Job) -> JSONResponse:
    location = f"/v1/jobs/{job.id}"
    return JSONResponse(job.to_json(), status_code=202, headers={"Location": location})


def _local(services: Services, token: str | None) -> bool:
    """Whether the caller holds the service record's token (runs on this machine)."""
    return services.record is not None and services.record.accepts(token)


@router.post(
    "/indexes/{index}/sync", status_code=202, responses=SYNC_RESPONSES, dependencies=[JsonBody]
)
async def sync_folders(
    index: IndexName,
    body: SyncRequest,
    services: ServicesDep,
    caller: AdmittedDep,
    token: LocalToken = None,
) -> JSONResponse:
    """Sync folders on the server into the index (as `rag-ingest` does), as a job."""
    local = _local(services, token)
    require_write(caller, index, local=local)
    s = services.settings
    uploads = upload_dir(s.data_dir, index)
    # Admin keys and callers on this machine may sync any folder; others stay in the roots,
    # at request time and, for symlinks met during the walk or swapped in later, in the job.
    anywhere = local or (caller.admin and caller is not ANONYMOUS)
    paths = sync_paths(body.folders, s.ingest_roots, anywhere=anywhere, uploads=uploads)
    within = sync_roots(
        paths, s.ingest_roots, anywhere=anywhere, follow_links=body.follow_links, uploads=uploads
    )
    return _accepted(_runner(services).sync(index, paths, delete=body.delete, within=within))


@router.post(
    "/indexes/{index}/documents",
    status_code=202,
    responses=UPLOAD_RESPONSES,
    dependencies=[MultipartBody],
)
async def upload_documents(
    index: IndexName,
    files: Annotated[list[UploadFile], File(min_length=1, description="One or more files.")],
    services: ServicesDep,
    caller: AdmittedDep,
    token: LocalToken = None,
) -> JSONResponse:
    """Keep the uploaded files under the data dir and sync them into the index, as a job."""
    require_write(caller, index, local=_local(services, token))
    folder = FilePath(os.path.realpath(upload_dir(services.settings.data_dir, index)))
    named = [(upload.filename or "", upload.file) for upload in files]
    await asyncio.to_thread(save_uploads, folder, named, upload_limits(services.settings))
    return _accepted(_runner(services).sync(index, [folder], within=[folder]))


@router.get("/indexes/{index}/documents", responses=ACCESS)
async def list_documents(
    index: IndexName, services: ServicesDep, caller: AdmittedDep
) -> dict[str, Any]:
    """The index's files with their passage counts."""
    require_read(caller, index)
    summary = await asyncio.to_thread(summarise, services.store, index)
    documents = [
        {"root": f.root, "source": f.source, "sha256": f.sha256, "chunks": f.chunks}
        for f in summary.files
    ]
    return {"index": index, "documents": documents, "chunks": summary.chunks}


@router.delete("/indexes/{index}/documents/{source:path}", status_code=202, responses=CREATED)
async def delete_document(
    index: IndexName,
    source: str,
    services: ServicesDep,
    caller: AdmittedDep,
    root: Annotated[str | None, Query(description="Only the file under this root.")] = None,
    token: LocalToken = None,
) -> JSONResponse:
    """Remove a file's passages (and an uploaded file's copy) from the index, as a job."""
    require_write(caller, index, local=_local(services, token))
    if await asyncio.to_thread(services.store.get_meta, index) is None:
        raise IndexNotFoundError(f"index {index!r} does not exist")
    roots = await asyncio.to_thread(source_roots, services.store, index, source, root)
    # An uploaded file goes too, indexed or not (one that failed to parse is kept until then).
    unlink = uploaded_copy(upload_dir(services.settings.data_dir, index), source, root)
    if not roots and unlink is None:
        raise DocumentNotFoundError(f"index {index!r} has no document {source!r}")
    return _accepted(_runner(services).delete(index, source, root, unlink=unlink))


@router.get("/jobs/{job_id}", responses={200: JOB_RESPONSE, **ACCESS})
async def get_job(
    job_id: str, services: ServicesDep, caller: AdmittedDep, token: LocalToken = None
) -> dict[str, Any]:
    """A job's state, progress and, once done, its report or error."""
    runner = _runner(services)
    index = runner.index_of(job_id)
    if index is None:
        raise JobNotFoundError(f"no job {job_id!r} (unknown, or finished long ago)")
    require_write(caller, index, local=_local(services, token))
    job = runner.get(job_id)
    assert job is not None
    return job
