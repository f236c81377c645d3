"""Indigo embedded in Python: Chroma's client API in-process, with no server.

    import indigo
    client = indigo.PersistentClient(path="./data")   # or indigo.EphemeralClient()
    col = client.get_or_create_collection("docs")
    col.add(ids=["a"], documents=["hello"], embeddings=[[0.1, 0.2]])

With chromadb installed (`pip install indigo-db[chroma]`), the clients are
chromadb's own `Client` (a `ClientAPI`): collections, the search API, embedding
functions and errors behave as with chromadb, and LangChain or LlamaIndex take
them where they take a Chroma client. Underneath, chromadb's HTTP client sends
each request to Indigo in this process (`indigo._indigo.Core`) instead of over a
socket. Without chromadb, the same API comes from `indigo._lite`, with
`indigo.errors` holding equivalents of chromadb's error classes.
"""
try:
    import chromadb  # noqa: F401
except ImportError:
    from ._lite import EphemeralClient, PersistentClient

    CHROMADB = False
else:
    from ._client import EphemeralClient, PersistentClient

    CHROMADB = True

from . import errors  # noqa: E402

__all__ = ["PersistentClient", "EphemeralClient", "errors", "CHROMADB"]
