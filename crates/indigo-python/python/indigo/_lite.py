"""Chroma's client API without chromadb: what `indigo.PersistentClient` gives when
chromadb is not installed. The same methods, arguments, result keys and error
classes (`indigo.errors`) as chromadb's `Client` and `Collection`, over the same
requests to the in-process core; with chromadb installed, chromadb's own client
runs instead (see `_client.py`).

What differs: results are plain dicts (chromadb's `GetResult` and `QueryResult`
are dicts too) whose embeddings are lists of floats, or numpy arrays when numpy is
installed; an embedding function is any callable taking `input` (a list of texts)
and returning vectors, and there is no default one (chromadb's downloads a model):
give embeddings or an `embedding_function`; `search` takes Chroma's search
payloads as dicts, or any object with `to_dict()`."""
import base64
import json
import sys
import urllib.parse
import uuid
from array import array
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from . import errors
from ._cores import core_at, release
from ._indigo import Core

try:
    import numpy as _np
except ImportError:  # numpy is optional here
    _np = None

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
_API = "/api/v2"
_core_at = core_at
_release = release


def _call(core: Core, method: str, path: str, body: Any = None, params: Optional[dict] = None) -> Any:
    target = _API + urllib.parse.quote(path, safe="/")
    if params:
        q = {k: v for k, v in params.items() if v is not None}
        if q:
            target += "?" + urllib.parse.urlencode(q)
    data = b"" if body is None else json.dumps(body).encode()
    status, headers, out = core.request(method, target, data)
    if status >= 400:
        err = None
        try:
            j = json.loads(out)
        except ValueError:
            j = None
        if isinstance(j, dict) and isinstance(j.get("error"), str):
            cls = errors.error_types.get(j["error"])
            if cls is not None:
                err = cls(j.get("message", ""))
        if err is not None:
            raise err
        raise Exception(out.decode(errors="replace"))
    return json.loads(out) if out else None


def _pack(e) -> str:
    """One embedding as the wire's base64 of little-endian f32."""
    if _np is not None and hasattr(e, "__array__"):
        raw = _np.asarray(e, dtype="<f4").tobytes()
    else:
        a = array("f", (float(x) for x in e))
        if sys.byteorder != "little":
            a.byteswap()
        raw = a.tobytes()
    return base64.b64encode(raw).decode("ascii")


def _is_vector(x) -> bool:
    """One embedding (numbers), not a list of them."""
    if _np is not None and isinstance(x, _np.ndarray):
        return x.ndim == 1
    return isinstance(x, (list, tuple)) and (len(x) == 0 or isinstance(x[0], (int, float)))


def _many(x, one) -> Optional[list]:
    """Chroma's "one or many": a single item becomes a list of one."""
    if x is None:
        return None
    if one(x):
        return [x]
    return list(x)


def _strs(x) -> Optional[list]:
    """One string or many: ids, documents, uris, query texts."""
    return _many(x, lambda v: isinstance(v, str))


def _embeddings(x) -> Optional[list]:
    if x is None:
        return None
    if _np is not None and isinstance(x, _np.ndarray) and x.ndim == 2:
        return list(x)
    return _many(x, _is_vector)


def _meta_out(m):
    """Sparse vectors (objects with indices and values) in the wire's form."""
    if m is None:
        return None
    out = {}
    for k, v in m.items():
        if hasattr(v, "indices") and hasattr(v, "values") and not isinstance(v, dict):
            d = {"#type": "sparse_vector", "indices": list(v.indices), "values": list(v.values)}
            if getattr(v, "labels", None) is not None:
                d["tokens"] = list(v.labels)
            v = d
        out[k] = v
    return out


def _arrays(result: dict) -> dict:
    if _np is not None and result.get("embeddings") is not None:
        e = result["embeddings"]
        if e and isinstance(e[0], list) and (not e[0] or not isinstance(e[0][0], list)):
            result["embeddings"] = [_np.asarray(v, dtype=_np.float32) if v is not None else None for v in e]
        else:
            result["embeddings"] = [
                None if b is None else [_np.asarray(v, dtype=_np.float32) if v is not None else None for v in b]
                for b in e
            ]
    return result


class Collection:
    """A collection, as chromadb's `Collection`."""

    def __init__(self, client: "Client", model: dict, embedding_function=None):
        self._client = client
        self._model = model
        self._ef = embedding_function

    def __repr__(self):
        return f"Collection(name={self.name})"

    @property
    def name(self) -> str:
        return self._model["name"]

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self._model["id"])

    @property
    def metadata(self) -> Optional[dict]:
        return self._model.get("metadata")

    @property
    def configuration(self) -> dict:
        return self._model.get("configuration_json") or {}

    @property
    def tenant(self) -> str:
        return self._model.get("tenant", self._client.tenant)

    @property
    def database(self) -> str:
        return self._model.get("database", self._client.database)

    def _path(self, op: str = "") -> str:
        p = f"/tenants/{self.tenant}/databases/{self.database}/collections/{self.id}"
        return p + ("/" + op if op else "")

    def _call(self, method, op, body=None):
        return _call(self._client._core, method, self._path(op), body)

    def _embed(self, texts):
        if self._ef is None:
            raise ValueError(
                "no embeddings were given and the collection has no embedding_function: "
                "pass embeddings=, or embedding_function= when getting the collection"
            )
        return [list(map(float, v)) for v in self._ef(input=list(texts))]

    def _records(self, ids, embeddings, metadatas, documents, uris, need_embeddings):
        ids = _strs(ids)
        embeddings = _embeddings(embeddings)
        metadatas = _many(metadatas, lambda x: isinstance(x, dict))
        documents = _strs(documents)
        uris = _strs(uris)
        if embeddings is None and documents is not None and (need_embeddings or self._ef is not None):
            embeddings = self._embed(documents)
        if embeddings is None and need_embeddings:
            raise ValueError("add and upsert need embeddings, or documents and an embedding_function")
        return {
            "ids": ids,
            "embeddings": None if embeddings is None else [None if e is None else _pack(e) for e in embeddings],
            "metadatas": None if metadatas is None else [_meta_out(m) for m in metadatas],
            "documents": documents,
            "uris": uris,
        }

    def count(self) -> int:
        return self._call("GET", "count")

    def add(self, ids, embeddings=None, metadatas=None, documents=None, images=None, uris=None) -> None:
        self._call("POST", "add", self._records(ids, embeddings, metadatas, documents, uris, True))

    def upsert(self, ids, embeddings=None, metadatas=None, documents=None, images=None, uris=None) -> None:
        self._call("POST", "upsert", self._records(ids, embeddings, metadatas, documents, uris, True))

    def update(self, ids, embeddings=None, metadatas=None, documents=None, images=None, uris=None) -> None:
        self._call("POST", "update", self._records(ids, embeddings, metadatas, documents, uris, False))

    def get(
        self,
        ids=None,
        where=None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        where_document=None,
        include: Sequence[str] = ("metadatas", "documents"),
    ) -> dict:
        body = {
            "ids": _strs(ids),
            "where": where,
            "limit": limit,
            "offset": offset,
            "where_document": where_document,
            "include": list(include),
        }
        r = self._call("POST", "get", body)
        out = {
            "ids": r["ids"],
            "embeddings": r.get("embeddings"),
            "metadatas": r.get("metadatas"),
            "documents": r.get("documents"),
            "data": None,
            "uris": r.get("uris"),
            "included": list(include),
        }
        return _arrays(out)

    def peek(self, limit: int = 10) -> dict:
        return self.get(limit=limit, include=["embeddings", "metadatas", "documents"])

    def query(
        self,
        query_embeddings=None,
        query_texts=None,
        query_images=None,
        query_uris=None,
        ids=None,
        n_results: int = 10,
        where=None,
        where_document=None,
        include: Sequence[str] = ("metadatas", "documents", "distances"),
    ) -> dict:
        q = _embeddings(query_embeddings)
        if q is None:
            if query_texts is None:
                raise ValueError("query needs query_embeddings or query_texts")
            q = self._embed(_strs(query_texts))
        body = {
            "ids": _strs(ids),
            "query_embeddings": [list(map(float, v)) for v in q],
            "n_results": n_results,
            "where": where,
            "where_document": where_document,
            "include": list(include),
        }
        r = self._call("POST", "query", body)
        out = {
            "ids": r["ids"],
            "distances": r.get("distances"),
            "embeddings": r.get("embeddings"),
            "metadatas": r.get("metadatas"),
            "documents": r.get("documents"),
            "uris": r.get("uris"),
            "data": None,
            "included": list(include),
        }
        return _arrays(out)

    def delete(self, ids=None, where=None, where_document=None, limit: Optional[int] = None) -> dict:
        body = {"ids": _strs(ids), "where": where, "where_document": where_document}
        if limit is not None:
            body["limit"] = limit
        r = self._call("POST", "delete", body)
        return {"deleted": (r or {}).get("deleted", 0)}

    def modify(self, name: Optional[str] = None, metadata: Optional[dict] = None, configuration=None) -> None:
        body = {"new_name": name, "new_metadata": metadata, "new_configuration": configuration}
        self._call("PUT", "", body)
        # This collection's database, whatever the client's is now.
        p = f"/tenants/{self.tenant}/databases/{self.database}/collections/{name or self.name}"
        self._model = _call(self._client._core, "GET", p)

    def search(self, searches) -> dict:
        if isinstance(searches, dict) or hasattr(searches, "to_dict"):
            searches = [searches]
        payload = {"searches": [s.to_dict() if hasattr(s, "to_dict") else s for s in searches]}
        return self._call("POST", "search", payload)

    def get_indexing_status(self) -> dict:
        return self._call("GET", "indexing_status")


class Client:
    """A client of one in-process database, as chromadb's `Client` (with the
    tenant and database calls of its `AdminClient`)."""

    def __init__(self, core: Core, tenant: str = DEFAULT_TENANT, database: str = DEFAULT_DATABASE):
        self._core = core
        self.tenant = str(tenant)
        self.database = str(database)
        self.get_tenant(self.tenant)
        self.get_database(self.database, self.tenant)

    def _db_path(self) -> str:
        return f"/tenants/{self.tenant}/databases/{self.database}"

    def _get_model(self, name: str) -> dict:
        return _call(self._core, "GET", f"{self._db_path()}/collections/{name}")

    def heartbeat(self) -> int:
        return _call(self._core, "GET", "/heartbeat")["nanosecond heartbeat"]

    def get_version(self) -> str:
        return _call(self._core, "GET", "/version")

    def set_tenant(self, tenant: str, database: str = DEFAULT_DATABASE) -> None:
        self.get_tenant(tenant)
        self.get_database(database, tenant)
        self.tenant, self.database = tenant, database

    def set_database(self, database: str) -> None:
        self.get_database(database, self.tenant)
        self.database = database

    def list_collections(self, limit: Optional[int] = None, offset: Optional[int] = None) -> List[Collection]:
        ms = _call(self._core, "GET", f"{self._db_path()}/collections", params={"limit": limit, "offset": offset})
        return [Collection(self, m) for m in ms]

    def count_collections(self) -> int:
        return _call(self._core, "GET", f"{self._db_path()}/collections_count")

    def create_collection(
        self,
        name: str,
        configuration: Optional[dict] = None,
        metadata: Optional[dict] = None,
        embedding_function=None,
        data_loader=None,
        get_or_create: bool = False,
        schema: Optional[dict] = None,
    ) -> Collection:
        body = {"name": name, "configuration": configuration, "metadata": metadata, "get_or_create": get_or_create}
        if schema is not None:
            body["schema"] = schema.serialize_to_json() if hasattr(schema, "serialize_to_json") else schema
        m = _call(self._core, "POST", f"{self._db_path()}/collections", body)
        return Collection(self, m, embedding_function)

    def get_or_create_collection(
        self,
        name: str,
        configuration: Optional[dict] = None,
        metadata: Optional[dict] = None,
        embedding_function=None,
        data_loader=None,
        schema: Optional[dict] = None,
    ) -> Collection:
        return self.create_collection(name, configuration, metadata, embedding_function, None, True, schema)

    def get_collection(self, name: str, embedding_function=None, data_loader=None) -> Collection:
        return Collection(self, self._get_model(name), embedding_function)

    def delete_collection(self, name: str) -> None:
        _call(self._core, "DELETE", f"{self._db_path()}/collections/{name}")

    def reset(self) -> bool:
        return _call(self._core, "POST", "/reset")

    # The tenant and database calls of chromadb's AdminClient.
    def create_tenant(self, name: str) -> None:
        _call(self._core, "POST", "/tenants", {"name": name})

    def get_tenant(self, name: str) -> dict:
        return _call(self._core, "GET", f"/tenants/{name}")

    def create_database(self, name: str, tenant: Optional[str] = None) -> None:
        _call(self._core, "POST", f"/tenants/{tenant or self.tenant}/databases", {"name": name})

    def get_database(self, name: str, tenant: Optional[str] = None) -> dict:
        return _call(self._core, "GET", f"/tenants/{tenant or self.tenant}/databases/{name}")

    def delete_database(self, name: str, tenant: Optional[str] = None) -> None:
        _call(self._core, "DELETE", f"/tenants/{tenant or self.tenant}/databases/{name}")

    def list_databases(self, limit=None, offset=None, tenant: Optional[str] = None) -> List[dict]:
        return _call(
            self._core,
            "GET",
            f"/tenants/{tenant or self.tenant}/databases",
            params={"limit": limit, "offset": offset},
        )


def PersistentClient(
    path: Union[str, Path] = "./chroma",
    settings=None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> Client:
    """A client of the database in `path` (created if missing), in this process."""
    allow_reset = bool(getattr(settings, "allow_reset", False))
    return Client(_core_at(path, allow_reset), tenant, database)


def EphemeralClient(settings=None, tenant: str = DEFAULT_TENANT, database: str = DEFAULT_DATABASE) -> Client:
    """A client of a database in a temporary directory, gone when the process ends."""
    allow_reset = bool(getattr(settings, "allow_reset", False))
    return Client(_core_at(None, allow_reset), tenant, database)
