"""pytest plugin for `run.py --server embedded`: every chromadb HTTP client the
suite makes (sync and async) sends its requests to Indigo embedded in the test
process (the `indigo` package's `Core`, on the data directory
INDIGO_EMBEDDED_PATH) instead of to a socket: the same transport
`indigo.PersistentClient` uses, so the suite exercises the embedded client."""
import asyncio
import os

import httpx
import chromadb.api.async_fastapi as afa
import chromadb.api.fastapi as fa
from indigo._client import _Transport, _core_at, _request


def _core():
    return _core_at(os.environ["INDIGO_EMBEDDED_PATH"], allow_reset=True)


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, core):
        self.core = core

    async def handle_async_request(self, request):
        body = await request.aread()
        status, headers, out = await asyncio.to_thread(
            self.core.request, request.method, request.url.raw_path.decode("ascii"), body
        )
        return httpx.Response(status, content=out, headers=headers, request=request)


_init = fa.FastAPI.__init__


def _embedded_init(self, system):
    _init(self, system)
    headers = dict(self._session.headers)
    self._session.close()
    self._session = httpx.Client(transport=_Transport(_core()), timeout=None, headers=headers)


fa.FastAPI.__init__ = _embedded_init
# As indigo.PersistentClient's server API does: straight to the core.
fa.FastAPI._make_request = lambda self, method, path, **kw: _request(_core(), self._api_url, method, path, **kw)

_get_client = afa.AsyncFastAPI._get_client


def _embedded_get_client(self):
    c = _get_client(self)
    if getattr(c, "_indigo", False):
        return c
    new = httpx.AsyncClient(transport=_AsyncTransport(_core()), timeout=None, headers=c.headers)
    new._indigo = True
    for k, v in list(self._clients.items()):
        if v is c:
            self._clients[k] = new
    return new


afa.AsyncFastAPI._get_client = _embedded_get_client
