"""The embedded default: Qdrant Edge (Qdrant's in-process engine), one shard folder per index."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from rag.embed import SparseVector
from rag.errors import IndexNotFoundError, StoreUnavailableError
from rag.indexes import IndexMeta
from rag.store.base import (
    DENSE,
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    SPARSE,
    Hit,
    SearchFilter,
    SearchQuery,
    StoredChunk,
    normalise_prefix,
)
from rag.store.disk import DEFAULT_MIN_FREE_MB, DiskReserve, private_dir

log = logging.getLogger("rag.store")
WRITE_BATCH = 1000
META_FILE = "index.json"


def edge_filter(flt: SearchFilter) -> qe.Filter | None:
    if flt.is_empty():
        return None
    must: list[Any] = []
    if flt.path_prefix:
        prefix = normalise_prefix(flt.path_prefix)
        must.append(
            qe.Filter(
                should=[
                    qe.FieldCondition(key="dirs", match=qe.MatchValue(prefix)),
                    qe.FieldCondition(key="source", match=qe.MatchValue(prefix)),
                ]
            )
        )
    if flt.file_types:
        must.append(qe.FieldCondition(key="type", match=qe.MatchAny(list(flt.file_types))))
    if flt.roots:
        must.append(qe.FieldCondition(key="root", match=qe.MatchAny(list(flt.roots))))
    if flt.modified_after is not None or flt.modified_before is not None:
        must.append(
            qe.FieldCondition(
                key="mtime",
                range=qe.RangeFloat(gte=flt.modified_after, lte=flt.modified_before),
            )
        )
    return qe.Filter(must=must)


def _fusion(query: SearchQuery) -> Any:
    # Fusion's variants are nested classes the stub does not list as query types.
    return qe.Fusion.Dbsf() if query.fusion == "dbsf" else qe.Fusion.Rrf(k=60)


def _sparse(vector: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(vector.indices, vector.values)


PAYLOAD_BATCH = 128


class EdgeStore:
    """Indexes under ``data_dir/indexes/NAME/`` (``shard/`` plus ``index.json``).

    A shard folder can be open in one process at a time (its WAL is locked): while the
    service owns an index, write to it through the service or use a Qdrant server. Every write
    first checks that the file system keeps ``min_free_bytes`` free (rag.store.disk): Edge
    maps its files, and a full file system would kill the process with SIGBUS.
    """

    kind = "edge"

    def __init__(
        self, data_dir: Path, *, min_free_bytes: int = DEFAULT_MIN_FREE_MB * 1_000_000
    ) -> None:
        self.root = data_dir / "indexes"
        self.reserve = DiskReserve(data_dir, min_free_bytes)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock = threading.Lock()

    def _dir(self, index: str) -> Path:
        return self.root / index

    def list_indexes(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / META_FILE).is_file())

    def get_meta(self, index: str) -> IndexMeta | None:
        path = self._dir(index) / META_FILE
        if not path.is_file():
            return None
        return IndexMeta.from_json(json.loads(path.read_text(encoding="utf-8")))

    def create_index(self, meta: IndexMeta) -> None:
        self.reserve.check(f"creating index {meta.name!r}")
        folder = private_dir(self._dir(meta.name))
        shard_dir = folder / "shard"
        shutil.rmtree(shard_dir, ignore_errors=True)  # a create that died before its meta
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=meta.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        shard = qe.EdgeShard.create(str(shard_dir), config)
        for name in KEYWORD_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        for name in FLOAT_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Float))
        shard.flush()
        tmp = folder / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta.to_json(), indent=2), encoding="utf-8")
        tmp.replace(folder / META_FILE)  # the index exists once its meta does
        with self._lock:
            self._shards[meta.name] = shard

    def drop_index(self, index: str) -> bool:
        with self._lock:
            shard = self._shards.pop(index, None)
        if shard is not None:
            shard.close()
        folder = self._dir(index)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        return True

    def _shard(self, index: str) -> qe.EdgeShard:
        with self._lock:
            shard = self._shards.get(index)
            if shard is not None:
                return shard
            if self.get_meta(index) is None:
                raise IndexNotFoundError(f"index {index!r} does not exist")
            try:
                shard = qe.EdgeShard.load(str(self._dir(index) / "shard"))
            except Exception as exc:
                if "WouldBlock" in str(exc):
                    raise StoreUnavailableError(
                        f"index {index!r} is open in another process (its WAL is locked); "
                        "stop that process or use a Qdrant server (RAG_QDRANT_URL)"
                    ) from exc
                raise StoreUnavailableError(f"cannot open index {index!r}: {exc}") from exc
            self._shards[index] = shard
            return shard

    def upsert(self, index: str, chunks: Sequence[StoredChunk]) -> None:
        shard = self._shard(index)
        for i in range(0, len(chunks), WRITE_BATCH):
            self.reserve.check(f"writing to index {index!r}")
            points = []
            for chunk in chunks[i : i + WRITE_BATCH]:
                vectors: dict[str, Any] = {DENSE: chunk.dense.tolist()}
                if chunk.sparse is not None and chunk.sparse.indices:
                    vectors[SPARSE] = _sparse(chunk.sparse)
                points.append(qe.Point(chunk.id, vectors, chunk.payload))
            shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, index: str, ids: Sequence[str]) -> None:
        shard = self._shard(index)
        for i in range(0, len(ids), WRITE_BATCH):
            self.reserve.check(f"deleting from index {index!r}")  # the WAL grows too
            shard.update(qe.UpdateOperation.delete_points(list(ids[i : i + WRITE_BATCH])))

    def scan(
        self, index: str, fields: Sequence[str], where: SearchFilter | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        shard = self._shard(index)
        flt = edge_filter(where) if where is not None else None
        offset: Any = None
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=2000, filter=flt, with_payload=list(fields))
            )
            for record in records:
                yield str(record.id), dict(record.payload or {})
            if offset is None:
                return

    def retrieve(self, index: str, ids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        shard = self._shard(index)
        found = []
        for i in range(0, len(ids), PAYLOAD_BATCH):
            for record in shard.retrieve(list(ids[i : i + PAYLOAD_BATCH]), True, False):
                found.append((str(record.id), dict(record.payload or {})))
        return found

    def search(self, index: str, query: SearchQuery) -> list[Hit]:
        shard = self._shard(index)
        flt = edge_filter(query.filter)
        params = qe.SearchParams(exact=query.exact)
        dense = None if query.dense is None else query.dense.tolist()
        request: qe.QueryRequest
        # Edge holds the GIL inside each call: for many hits the payloads come afterwards in
        # short batches, which keeps the event loop (and /healthz) answering while a
        # long-context ask retrieves thousands of passages; a few come with the query itself.
        inline = query.limit <= PAYLOAD_BATCH
        if query.mode == "hybrid" and dense is not None and query.sparse is not None:
            request = qe.QueryRequest(
                limit=query.limit,
                prefetches=[
                    qe.Prefetch(
                        limit=query.candidates,
                        query=qe.Query.Nearest(dense, using=DENSE),
                        filter=flt,
                        params=params,
                    ),
                    qe.Prefetch(
                        limit=query.candidates,
                        query=qe.Query.Nearest(_sparse(query.sparse), using=SPARSE),
                        filter=flt,
                    ),
                ],
                query=_fusion(query),
                with_payload=inline,
            )
        elif query.mode == "sparse" and query.sparse is not None:
            request = qe.QueryRequest(
                limit=query.limit,
                query=qe.Query.Nearest(_sparse(query.sparse), using=SPARSE),
                filter=flt,
                with_payload=inline,
            )
        elif dense is not None:
            request = qe.QueryRequest(
                limit=query.limit,
                query=qe.Query.Nearest(dense, using=DENSE),
                filter=flt,
                params=params,
                with_payload=inline,
            )
        else:
            raise ValueError(f"search mode {query.mode!r} needs its query vector")
        scored = shard.query(request)
        if inline:
            return [
                Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                for p in scored
            ]
        payloads: dict[str, dict[str, Any]] = {}
        ids = [p.id for p in scored]
        for i in range(0, len(ids), PAYLOAD_BATCH):
            for record in shard.retrieve(ids[i : i + PAYLOAD_BATCH], True, False):
                payloads[str(record.id)] = dict(record.payload or {})
        # A point deleted between the query and the fetch (an ingestion job) is left out.
        return [
            Hit(id=str(p.id), score=float(p.score), payload=payloads[str(p.id)])
            for p in scored
            if str(p.id) in payloads
        ]

    def count(self, index: str) -> int:
        return int(self._shard(index).count(qe.CountRequest(exact=True)))

    def size_bytes(self, index: str) -> int | None:
        # Allocated blocks, not apparent sizes: Edge preallocates sparse files.
        folder = self._dir(index)
        return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())

    def optimize(self, index: str) -> None:
        """Flush and merge segments; the merge is left for a later run when the file system
        could not take a second copy of the index above the reserve."""
        shard = self._shard(index)
        self.reserve.check(f"writing index {index!r}")
        shard.flush()
        size = self.size_bytes(index) or 0
        if not self.reserve.has_room(size):
            log.warning(
                "index %r not optimized: merging its segments may need %.0f MB, and the file "
                "system would then keep less than RAG_MIN_FREE_MB free",
                index,
                size / 1e6,
            )
            return
        shard.optimize()

    def flush(self, index: str) -> None:
        self._shard(index).flush()

    def ping(self) -> None:
        private_dir(self.root)

    def close(self) -> None:
        with self._lock:
            shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            shard.flush()
            shard.close()
