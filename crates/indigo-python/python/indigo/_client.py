"""chromadb's client machinery over an in-process Indigo.

`IndigoAPI` is chromadb's `FastAPI` server API with its HTTP session's transport
replaced: requests go to `Core.request` (the gateway's router, in Rust, with the
GIL released) rather than to a socket. One `Core` per data directory per process;
a directory another process holds is refused at once."""
from pathlib import Path
from typing import Optional, Union

import urllib.parse

import httpx
import numpy as np
import orjson
import pybase64
from chromadb.api.types import serialize_metadata
from overrides import override
from chromadb.api.base_http_client import BaseHTTPClient
from chromadb.api.client import Client as _ChromaClient
from chromadb.api.fastapi import FastAPI
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings

from ._cores import core_at, release
from ._indigo import Core

API_IMPL = "indigo._client.IndigoAPI"
_EPHEMERAL = "ephemeral"
_core_at = core_at
_release = release


def _core(settings: Settings) -> Core:
    path = settings.persist_directory if settings.is_persistent else None
    return _core_at(path, bool(settings.allow_reset))


class _Transport(httpx.BaseTransport):
    def __init__(self, core: Core):
        self.core = core

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        status, headers, body = self.core.request(request.method, request.url.raw_path.decode("ascii"), request.read())
        return httpx.Response(status, content=body, headers=headers, request=request)


class IndigoAPI(FastAPI):
    """chromadb's server API, answered by Indigo in this process."""

    def __init__(self, system):
        super().__init__(system)
        self.core = _core(system.settings)
        headers = dict(self._session.headers)
        self._session.close()
        # For anything that still goes through the session (none of chromadb's
        # calls do: see _make_request).
        self._session = httpx.Client(transport=_Transport(self.core), timeout=None, headers=headers)

    @override
    def _make_request(self, method, path, **kwargs):
        return _request(self.core, self._api_url, method, path, **kwargs)

    @override
    def _submit_batch(self, batch, url):
        # FastAPI's, with each embedding packed by numpy rather than by a
        # Python loop over its floats (most of the client's time in an add).
        ids, embeddings, metadatas, documents, uris = batch
        data = {
            "ids": ids,
            "embeddings": _pack(embeddings),
            "metadatas": None
            if metadatas is None
            else [serialize_metadata(m) if m is not None else None for m in metadatas],
            "documents": documents,
            "uris": uris,
        }
        self._make_request("post", url, json=data)


def _pack(embeddings):
    """Embeddings as the wire's base64 of little-endian f32 (what chromadb's
    `optional_embeddings_to_base64_strings` makes)."""
    if embeddings is None:
        return None
    return [
        None if e is None else pybase64.b64encode_as_string(np.asarray(e, dtype="<f4").tobytes())
        for e in embeddings
    ]


def _request(core: Core, api_url: str, method: str, path: str, **kwargs):
    """FastAPI's `_make_request` without httpx's request and response objects
    (a third of an in-process call's time): the same body, path and query
    string, answered by `core`; errors raised as chromadb raises them."""
    if "json" in kwargs:
        body = orjson.dumps(kwargs.pop("json"), option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        body = kwargs.pop("content", None) or b""
    target = urllib.parse.urlsplit(api_url).path.rstrip("/") + urllib.parse.quote(path, safe="/")
    params = kwargs.pop("params", None)
    if params:
        target += "?" + str(httpx.QueryParams(params))
    status, headers, out = core.request(method.upper(), target, body)
    if status >= 400:
        req = httpx.Request(method.upper(), "http://indigo.embedded" + target)
        BaseHTTPClient._raise_chroma_error(httpx.Response(status, content=out, headers=headers, request=req))
    return orjson.loads(out)


_original_identifier = SharedSystemClient._get_identifier_from_settings


def _identifier(settings: Settings) -> str:
    # chromadb keys its shared systems by implementation; Indigo's by path, as
    # chromadb's own local clients are.
    if settings.chroma_api_impl == API_IMPL:
        if settings.is_persistent:
            return "indigo:" + str(Path(settings.persist_directory).resolve())
        return "indigo:" + _EPHEMERAL
    return _original_identifier(settings)


SharedSystemClient._get_identifier_from_settings = staticmethod(_identifier)


def _settings(settings: Optional[Settings], path: Optional[Union[str, Path]]) -> Settings:
    s = settings.model_copy() if settings is not None else Settings()
    s.chroma_api_impl = API_IMPL
    s.is_persistent = path is not None
    if path is not None:
        s.persist_directory = str(path)
    # chromadb's HTTP client wants an address; nothing listens on it.
    s.chroma_server_host = "indigo.embedded"
    s.chroma_server_http_port = 8000
    s.anonymized_telemetry = False
    return s


def PersistentClient(
    path: Union[str, Path] = "./chroma",
    settings: Optional[Settings] = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> _ChromaClient:
    """A client of the database in `path` (created if missing), in this process."""
    return _ChromaClient(tenant=str(tenant), database=str(database), settings=_settings(settings, path))


def EphemeralClient(
    settings: Optional[Settings] = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> _ChromaClient:
    """A client of a database in a temporary directory, gone when the process ends
    (all ephemeral clients of a process share it, as chromadb's do)."""
    return _ChromaClient(tenant=str(tenant), database=str(database), settings=_settings(settings, None))
