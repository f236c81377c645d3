"""LangChain's `langchain_chroma.Chroma` and LlamaIndex's `ChromaVectorStore` on an
Indigo client, embedded (`indigo.PersistentClient`) and over HTTP: each takes the
client where it takes a Chroma client. Fake deterministic embeddings (character
trigrams hashed into 64 dimensions), no network."""
import math
import zlib

import pytest

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a journey of a thousand miles begins with a single step",
    "to be or not to be, that is the question",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "actions speak louder than words",
    "a picture is worth a thousand words",
    "when in rome, do as the romans do",
]


def fake_embed(text, dim=64):
    v = [0.0] * dim
    t = f"  {text.lower()}  "
    for i in range(len(t) - 2):
        v[zlib.crc32(t[i : i + 3].encode()) % dim] += 1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def test_langchain_chroma_on_an_indigo_client(server):
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    class Fake(Embeddings):
        def embed_documents(self, texts):
            return [fake_embed(t) for t in texts]

        def embed_query(self, text):
            return fake_embed(text)

    store = Chroma(client=server.client(), collection_name="langchain", embedding_function=Fake())
    ids = store.add_documents([Document(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS)])
    assert len(ids) == len(TEXTS)
    assert store.similarity_search(TEXTS[3], k=2)[0].page_content == TEXTS[3]
    scored = store.similarity_search_with_score(TEXTS[1], k=3, filter={"n": {"$gte": 4}})
    assert len(scored) == 3 and all(d.metadata["n"] >= 4 for d, _ in scored)
    assert len(store.max_marginal_relevance_search(TEXTS[0], k=2, fetch_k=5)) == 2
    store.delete(ids=[ids[3]])
    assert TEXTS[3] not in [d.page_content for d in store.similarity_search(TEXTS[3], k=3)]
    got = store.get(where={"n": 5})
    assert got["documents"] == [TEXTS[5]]


def test_llamaindex_chroma_vector_store_on_an_indigo_client(server):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import (
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
    )
    from llama_index.vector_stores.chroma import ChromaVectorStore

    class Fake(BaseEmbedding):
        def _get_text_embedding(self, text):
            return fake_embed(text)

        def _get_query_embedding(self, query):
            return fake_embed(query)

        async def _aget_query_embedding(self, query):
            return fake_embed(query)

    client = server.client()
    vs = ChromaVectorStore(chroma_collection=client.get_or_create_collection("llamaindex"))
    nodes = [
        TextNode(text=t, id_=f"n{i}", metadata={"n": i}, embedding=fake_embed(t)) for i, t in enumerate(TEXTS)
    ]
    assert len(vs.add(nodes)) == len(TEXTS)
    r = vs.query(VectorStoreQuery(query_embedding=fake_embed(TEXTS[2]), similarity_top_k=2))
    assert r.nodes[0].get_content() == TEXTS[2]
    flt = MetadataFilters(filters=[MetadataFilter(key="n", value=5, operator=FilterOperator.GTE)])
    r = vs.query(VectorStoreQuery(query_embedding=fake_embed(TEXTS[0]), similarity_top_k=3, filters=flt))
    assert len(r.nodes) == 3 and all(n.metadata["n"] >= 5 for n in r.nodes)
    vs.delete(ref_doc_id="n2")  # a node without a source document is its own
    retriever = VectorStoreIndex.from_vector_store(vs, embed_model=Fake()).as_retriever(similarity_top_k=2)
    got = retriever.retrieve(TEXTS[6])
    assert got[0].node.get_content() == TEXTS[6]
    assert client.get_collection("llamaindex").count() in (len(TEXTS), len(TEXTS) - 1)
