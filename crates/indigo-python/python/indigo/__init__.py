"""Indigo embedded in Python: Chroma's client API in-process, with no server.

    import indigo
    client = indigo.PersistentClient(path="./data")   # or indigo.EphemeralClient()
    col = client.get_or_create_collection("docs")
    col.add(ids=["a"], documents=["hello"], embeddings=[[0.1, 0.2]])

The clients are chromadb's own `Client` (a `ClientAPI`): collections, the search
API, embedding functions and errors behave as with chromadb, and LangChain or
LlamaIndex take them where they take a Chroma client. Underneath, chromadb's HTTP
client sends each request to Indigo in this process (`indigo._indigo.Core`)
instead of over a socket.
"""
from ._client import EphemeralClient, PersistentClient

__all__ = ["PersistentClient", "EphemeralClient"]
