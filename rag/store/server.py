"""The server adapter: qdrant-client against a Qdrant server (or its local mode, for tests)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from rag.embed import SparseVector
from rag.errors import DiskFullError, IndexNotFoundError, StoreUnavailableError
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

WRITE_BATCH = 512
META_KEY = "rag_index"


def server_filter(flt: SearchFilter) -> qm.Filter | None:
    if flt.is_empty():
        return None
    must: list[qm.Condition] = []
    if flt.path_prefix:
        prefix = normalise_prefix(flt.path_prefix)
        must.append(
            qm.Filter(
                should=[
                    qm.FieldCondition(key="dirs", match=qm.MatchValue(value=prefix)),
                    qm.FieldCondition(key="source", match=qm.MatchValue(value=prefix)),
                ]
            )
        )
    if flt.file_types:
        must.append(qm.FieldCondition(key="type", match=qm.MatchAny(any=list(flt.file_types))))
    if flt.roots:
        must.append(qm.FieldCondition(key="root", match=qm.MatchAny(any=list(flt.roots))))
    if flt.modified_after is not None or flt.modified_before is not None:
        must.append(
            qm.FieldCondition(
                key="mtime", range=qm.Range(gte=flt.modified_after, lte=flt.modified_before)
            )
        )
    return qm.Filter(must=must)


def _sparse(vector: SparseVector) -> qm.SparseVector:
    return qm.SparseVector(indices=vector.indices, values=vector.values)


class ServerStore:
    """Indexes are collections; each carries its IndexMeta in the collection's metadata.

    The server keeps its files on its own disk: there is nothing local to check before a
    write, but a server that answers "No space left on device" is reported as DiskFullError.
    On a cluster, new collections get ``shard_number`` shards of ``replication_factor`` copies
    each (None: the server's defaults).
    """

    kind = "server"

    def __init__(
        self,
        client: QdrantClient,
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
    ) -> None:
        self.client = client
        self.shard_number = shard_number
        self.replication_factor = replication_factor

    @classmethod
    def connect(
        cls,
        url: str,
        api_key: str | None = None,
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
    ) -> ServerStore:
        client = QdrantClient(url=url, api_key=api_key, timeout=30)
        return cls(client, shard_number=shard_number, replication_factor=replication_factor)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConnectionError, OSError) as exc:
            raise StoreUnavailableError(f"Qdrant unavailable during {what}: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ in {"ResponseHandlingException", "ConnectError"}:
                raise StoreUnavailableError(f"Qdrant unavailable during {what}: {exc}") from exc
            if "No space left on device" in str(exc):
                raise DiskFullError(f"the Qdrant server's disk is full ({what}): {exc}") from exc
            raise

    def list_indexes(self) -> list[str]:
        collections = self._call("list", self.client.get_collections).collections
        return sorted(c.name for c in collections if self.get_meta(c.name) is not None)

    def get_meta(self, index: str) -> IndexMeta | None:
        if not self._call("lookup", self.client.collection_exists, index):
            return None
        metadata = self.client.get_collection(index).config.metadata or {}
        data = metadata.get(META_KEY)
        return IndexMeta.from_json(data) if isinstance(data, dict) else None

    def create_index(self, meta: IndexMeta) -> None:
        if self.client.collection_exists(meta.name):
            self.client.delete_collection(meta.name)  # a create that died before its meta
        self._call(
            "create",
            self.client.create_collection,
            meta.name,
            vectors_config={DENSE: qm.VectorParams(size=meta.dim, distance=qm.Distance.COSINE)},
            sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            shard_number=self.shard_number,
            replication_factor=self.replication_factor,
            metadata={META_KEY: meta.to_json()},
        )
        if self.client._client.__class__.__name__ == "QdrantLocal":
            return  # local mode has no payload indexes (and warns about each)
        for name in KEYWORD_FIELDS:
            self.client.create_payload_index(meta.name, name, qm.PayloadSchemaType.KEYWORD)
        for name in FLOAT_FIELDS:
            self.client.create_payload_index(meta.name, name, qm.PayloadSchemaType.FLOAT)

    def drop_index(self, index: str) -> bool:
        if not self._call("drop", self.client.collection_exists, index):
            return False
        self.client.delete_collection(index)
        return True

    def _require(self, index: str) -> None:
        if not self._call("lookup", self.client.collection_exists, index):
            raise IndexNotFoundError(f"index {index!r} does not exist")

    def upsert(self, index: str, chunks: Sequence[StoredChunk]) -> None:
        for i in range(0, len(chunks), WRITE_BATCH):
            points = []
            for chunk in chunks[i : i + WRITE_BATCH]:
                vectors: dict[str, Any] = {DENSE: chunk.dense.tolist()}
                if chunk.sparse is not None and chunk.sparse.indices:
                    vectors[SPARSE] = _sparse(chunk.sparse)
                points.append(qm.PointStruct(id=chunk.id, vector=vectors, payload=chunk.payload))
            self._call("upsert", self.client.upsert, index, points=points, wait=True)

    def delete(self, index: str, ids: Sequence[str]) -> None:
        for i in range(0, len(ids), WRITE_BATCH):
            selector = qm.PointIdsList(points=list(ids[i : i + WRITE_BATCH]))
            self._call("delete", self.client.delete, index, points_selector=selector, wait=True)

    def scan(
        self, index: str, fields: Sequence[str], where: SearchFilter | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        self._require(index)
        flt = server_filter(where) if where is not None else None
        offset: Any = None
        while True:
            records, offset = self._call(
                "scroll",
                self.client.scroll,
                index,
                limit=2000,
                offset=offset,
                with_payload=list(fields),
                with_vectors=False,
                scroll_filter=flt,
            )
            for record in records:
                yield str(record.id), dict(record.payload or {})
            if offset is None:
                return

    def retrieve(self, index: str, ids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        self._require(index)
        found = []
        for i in range(0, len(ids), WRITE_BATCH):
            records = self._call(
                "retrieve",
                self.client.retrieve,
                index,
                ids=list(ids[i : i + WRITE_BATCH]),
                with_payload=True,
                with_vectors=False,
            )
            found += [(str(r.id), dict(r.payload or {})) for r in records]
        return found

    def search(self, index: str, query: SearchQuery) -> list[Hit]:
        self._require(index)
        flt = server_filter(query.filter)
        params = qm.SearchParams(exact=query.exact)
        dense = None if query.dense is None else query.dense.tolist()
        kwargs: dict[str, Any]
        if query.mode == "hybrid" and dense is not None and query.sparse is not None:
            kwargs = {
                "prefetch": [
                    qm.Prefetch(
                        query=dense, using=DENSE, limit=query.candidates, filter=flt, params=params
                    ),
                    qm.Prefetch(
                        query=_sparse(query.sparse),
                        using=SPARSE,
                        limit=query.candidates,
                        filter=flt,
                    ),
                ],
                "query": (
                    qm.FusionQuery(fusion=qm.Fusion.DBSF)
                    if query.fusion == "dbsf"
                    else qm.RrfQuery(rrf=qm.Rrf(k=60))
                ),
            }
        elif query.mode == "sparse" and query.sparse is not None:
            kwargs = {"query": _sparse(query.sparse), "using": SPARSE, "query_filter": flt}
        elif dense is not None:
            kwargs = {"query": dense, "using": DENSE, "query_filter": flt, "search_params": params}
        else:
            raise ValueError(f"search mode {query.mode!r} needs its query vector")
        result = self._call(
            "search",
            self.client.query_points,
            index,
            limit=query.limit,
            with_payload=True,
            **kwargs,
        )
        return [
            Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
            for p in result.points
        ]

    def count(self, index: str) -> int:
        self._require(index)
        return int(self._call("count", self.client.count, index, exact=True).count)

    def size_bytes(self, index: str) -> int | None:
        return None  # a server does not report a collection's size on disk through the API

    def optimize(self, index: str) -> None:
        return None  # the server's optimizers index in the background

    def ping(self) -> None:
        self._call("ping", self.client.get_collections)

    def close(self) -> None:
        self.client.close()
