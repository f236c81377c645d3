"""chromadb's client machinery over an in-process Indigo.

`IndigoAPI` is chromadb's `FastAPI` server API with its HTTP session's transport
replaced: requests go to `Core.request` (the gateway's router, in Rust, with the
GIL released) rather than to a socket. One `Core` per data directory per process;
a directory another process holds is refused at once."""
import threading
import uuid
from pathlib import Path
from typing import Dict, Optional, Union

import httpx
from chromadb.api.client import Client as _ChromaClient
from chromadb.api.fastapi import FastAPI
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings

from ._indigo import Core

API_IMPL = "indigo._client.IndigoAPI"
_EPHEMERAL = "ephemeral"
_cores: Dict[str, Core] = {}
_lock = threading.Lock()


def _core_at(path: Optional[Union[str, Path]], allow_reset: bool = False) -> Core:
    """The process's core of `path` (the ephemeral database if None), opened on
    first use."""
    key = str(Path(path).resolve()) if path is not None else _EPHEMERAL
    with _lock:
        core = _cores.get(key)
        if core is None:
            core = Core(None if key == _EPHEMERAL else key, allow_reset)
            _cores[key] = core
        return core


def _core(settings: Settings) -> Core:
    path = settings.persist_directory if settings.is_persistent else None
    return _core_at(path, bool(settings.allow_reset))


def _release(path: Optional[Union[str, Path]] = None) -> None:
    """Forgets the core of `path` (the ephemeral one if None): the database
    closes once no client holds it (for tests, which open many)."""
    key = str(Path(path).resolve()) if path is not None else _EPHEMERAL
    with _lock:
        _cores.pop(key, None)


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
        self._session = httpx.Client(transport=_Transport(self.core), timeout=None, headers=headers)


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
