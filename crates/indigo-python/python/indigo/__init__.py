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
from . import _indigo  # noqa: F401  (the native module: its own error if it fails)

try:
    import chromadb
except ImportError:
    chromadb = None
except Exception as e:  # e.g. chromadb's own refusal of an old sqlite3
    import warnings

    warnings.warn(
        f"indigo: chromadb is installed but failed to import ({type(e).__name__}: {e}); "
        "using Indigo's own client API instead",
        stacklevel=2,
    )
    chromadb = None

CHROMADB = False
if chromadb is not None:
    try:
        from ._client import EphemeralClient, PersistentClient

        CHROMADB = True
    except Exception as e:  # a chromadb whose internals differ from 1.5's
        import warnings

        warnings.warn(
            f"indigo: chromadb {getattr(chromadb, '__version__', '?')} cannot carry Indigo's "
            f"client ({type(e).__name__}: {e}); using Indigo's own client API instead. "
            "Install the version Indigo supports for chromadb's: pip install 'indigo-db[chroma]'",
            stacklevel=2,
        )
if not CHROMADB:
    from ._lite import EphemeralClient, PersistentClient

from . import errors  # noqa: E402

__all__ = ["PersistentClient", "EphemeralClient", "errors", "CHROMADB"]
