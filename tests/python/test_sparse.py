"""Sparse vectors, BM25 and hybrid search through the official Python client,
against `indigo run` and a cluster: sparse vectors stored as metadata values come
back as they went in; `Knn` on a sparse key ranks by 1 − dot product exactly as a
brute-force reference here does (with a filter applied before ranking); `Rrf`
fuses dense and sparse rankings as its arithmetic says; a BM25 key embedded by
Chroma's own `ChromaBm25EmbeddingFunction` scores as a reference BM25 written
here (Chroma's definition: the document side's saturated term frequencies, the
query side's weights times IDF over the collection)."""
import math
import random

import pytest
from chromadb import Schema, SparseVectorIndexConfig
from chromadb.base_types import SparseVector
from chromadb.execution.expression import K, Knn, Rrf, Search
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction


def rand_sparse(rng, dims=60):
    idx = sorted(set(int(rng.random() ** 2 * dims) for _ in range(rng.randint(1, 8))))
    # Multiples of 1/8: exact in f32, so they come back equal.
    return SparseVector(indices=idx, values=[rng.randint(1, 24) / 8 for _ in idx])


def dot(a, b):
    w = dict(zip(b.indices, b.values))
    return sum(v * w.get(i, 0.0) for i, v in zip(a.indices, a.values))


def make(client, name, bm25=False, ef=None, source_key=None):
    schema = Schema()
    schema.create_index(
        key="sp",
        config=SparseVectorIndexConfig(bm25=bm25, embedding_function=ef, source_key=source_key),
    )
    return client.create_collection(name, schema=schema)


def fill(col, rng, n=300):
    ids, embs, metas = [], [], []
    for i in range(n):
        ids.append(f"r{i}")
        embs.append([rng.random(), rng.random(), rng.random()])
        metas.append({"g": i % 3, "sp": rand_sparse(rng)})
    col.add(ids=ids, embeddings=embs, metadatas=metas)
    return dict(zip(ids, zip(embs, metas)))


def expected(data, q, k, where_g=None):
    rows = [
        (1.0 - dot(m["sp"], q), i)
        for i, (_, m) in data.items()
        if (where_g is None or m["g"] == where_g) and set(m["sp"].indices) & set(q.indices)
    ]
    rows.sort()
    return rows


def check_ranking(got_ids, got_scores, full, k):
    """`full` is the whole expected ranking; the top `k` must match it (a record
    whose score ties another's, within or beyond the cut, may swap with it)."""
    want = full[:k]
    assert len(got_ids) == len(want), (got_ids, want)
    for gi, gs, (ws, wi) in zip(got_ids, got_scores, want):
        assert math.isclose(gs, ws, rel_tol=1e-4, abs_tol=1e-4), (gi, gs, wi, ws)
    # Where scores are distinct the records are the same.
    for j, (ws, wi) in enumerate(want):
        if all(abs(ws - o) > 1e-4 for o, _ in full[:j] + full[j + 1:]):
            assert got_ids[j] == wi


def test_sparse_knn_equals_brute_force_and_values_round_trip(client):
    rng = random.Random(15)
    col = make(client, "sparse")
    data = fill(col, rng)
    got = col.get(ids=["r0", "r7"], include=["metadatas"])
    for i, m in zip(got["ids"], got["metadatas"]):
        assert m["sp"] == data[i][1]["sp"]
        assert m["g"] == data[i][1]["g"]
    for t in range(20):
        q = rand_sparse(rng)
        k = rng.randint(1, 20)
        where_g = t % 3 if t % 2 else None
        s = Search().rank(Knn(key="sp", query=q, limit=k)).limit(k).select(K.SCORE)
        if where_g is not None:
            s = s.where(K("g") == where_g)
        r = col.search(s)
        check_ranking(r["ids"][0], r["scores"][0], expected(data, q, k, where_g), k)


def test_sparse_knn_with_group_by_and_select(client):
    from chromadb.execution.expression import GroupBy, MinK

    rng = random.Random(17)
    col = make(client, "grouped")
    data = fill(col, rng, 200)
    q = rand_sparse(rng)
    r = col.search(
        Search()
        .rank(Knn(key="sp", query=q, limit=30))
        .group_by(GroupBy(keys=[K("g")], aggregate=MinK(keys=[K.SCORE], k=2)))
        .limit(6)
        .select(K.SCORE, "g")
    )
    top = expected(data, q, 30)[:30]
    best = {}
    for score, i in top:
        best.setdefault(data[i][1]["g"], []).append((score, i))
    want = sorted(x for g in best.values() for x in sorted(g)[:2])[:6]
    assert [round(x, 4) for x in r["scores"][0]] == [round(w[0], 4) for w in want]
    assert all(set(m) == {"g"} for m in r["metadatas"][0]), r["metadatas"]
    counts = {}
    for m in r["metadatas"][0]:
        counts[m["g"]] = counts.get(m["g"], 0) + 1
    assert max(counts.values()) <= 2


def test_rrf_fuses_dense_and_sparse(client):
    rng = random.Random(16)
    col = make(client, "hybrid")
    data = fill(col, rng, 200)
    dense_q, sparse_q = [0.5, 0.2, 0.9], rand_sparse(rng)
    limit = 30
    fused = Rrf(
        [
            Knn(query=dense_q, return_rank=True, limit=limit, default=1000.0),
            Knn(key="sp", query=sparse_q, return_rank=True, limit=limit, default=1000.0),
        ],
        k=60,
    )
    r = col.search(Search().rank(fused).limit(10).select(K.SCORE))
    # The reference: each list's ranks, then −Σ 1/(k + rank).
    dense = sorted((sum((a - b) ** 2 for a, b in zip(e, dense_q)), i) for i, (e, _) in data.items())[:limit]
    sparse = expected(data, sparse_q, limit)[:limit]
    rank_d = {i: n for n, (_, i) in enumerate(dense)}
    rank_s = {i: n for n, (_, i) in enumerate(sparse)}
    cands = set(rank_d) | set(rank_s)
    want = sorted((-(1 / (60 + rank_d.get(i, 1000.0)) + 1 / (60 + rank_s.get(i, 1000.0))), i) for i in cands)[:10]
    assert len(r["ids"][0]) == 10
    for gs, (ws, _) in zip(r["scores"][0], want):
        assert math.isclose(gs, ws, rel_tol=1e-6), (r, want)


def test_a_sparse_query_on_a_key_without_a_sparse_index_is_refused(server):
    client = server.client()
    col = make(client, "refuse")
    col.add(ids=["a"], embeddings=[[1.0, 0.0]], metadatas=[{"other": SparseVector(indices=[1], values=[1.0])}])
    with pytest.raises(Exception, match="indexing is disabled"):
        col.search(Search().rank(Knn(key="other", query=SparseVector(indices=[1], values=[1.0]))))
    # A malformed sparse vector (the client would refuse to send it) gets a 400
    # with Chroma's error JSON, and nothing of its request is written.
    url = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{col.id}/add"
    for bad in [
        {"indices": [2, 1], "values": [1.0, 1.0]},
        {"indices": [1], "values": [1.0, 2.0]},
        {"#type": "sparse_vector", "indices": [-1], "values": [1.0]},
    ]:
        r = server.http.post(url, json={"ids": ["b", "c"], "embeddings": [[0.0, 1.0], [1.0, 1.0]],
                                  "metadatas": [{"sp": bad}, {"g": 1}]})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "InvalidArgumentError", r.text
    assert col.count() == 1


TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a fox is a small omnivorous mammal",
    "dogs and foxes are canids",
    "the dog barked at the mailman all morning",
    "quantum entanglement of photons",
    "brown bears eat fish in the river",
    "the lazy afternoon sun warmed the porch",
    "foxes hunt rodents at night, quick and quiet",
    "a brown dog and a brown fox",
    "photons carry electromagnetic force",
]


def reference_bm25(ef, docs, query, k1=1.2, b=0.75, avgdl=256.0):
    """BM25 as Chroma defines it, written out from tokens (not from the
    embedding function's vectors): document weight tf·(k1+1)/(tf + k1·(1−b+b·len/avgdl)),
    query weight the same of the query's tokens, times ln(1 + (n − n_t + 0.5)/(n_t + 0.5))."""
    from chromadb.utils.embedding_functions.schemas.bm25_tokenizer import (
        Bm25Tokenizer,
        DEFAULT_CHROMA_BM25_STOPWORDS,
        get_english_stemmer,
    )

    tok = Bm25Tokenizer(get_english_stemmer(), DEFAULT_CHROMA_BM25_STOPWORDS, 40)

    def weights(text):
        toks = tok.tokenize(text)
        out = {}
        for t in set(toks):
            tf = toks.count(t)
            out[t] = tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(toks) / avgdl))
        return out

    dw = {i: weights(d) for i, d in docs.items()}
    n = len(docs)
    qw = weights(query)
    scores = {}
    for i, w in dw.items():
        if not set(w) & set(qw):
            continue
        s = 0.0
        for t, q in qw.items():
            nt = sum(1 for x in dw.values() if t in x)
            idf = math.log(1 + (n - nt + 0.5) / (nt + 0.5))
            s += q * idf * w.get(t, 0.0)
        scores[i] = 1 - s
    return sorted((s, i) for i, s in scores.items())


def test_bm25_through_chromas_embedding_function(client):
    ef = ChromaBm25EmbeddingFunction()
    col = make(client, "bm25", bm25=True, ef=ef, source_key="#document")
    docs = {f"d{i}": t for i, t in enumerate(TEXTS)}
    col.add(ids=list(docs), documents=list(docs.values()), embeddings=[[float(i), 1.0] for i in range(len(docs))])
    # The client embedded each document into "sp" (kept as f32, as Chroma keeps it).
    stored = col.get(ids=["d0"], include=["metadatas"])["metadatas"][0]["sp"]
    sent = ef([TEXTS[0]])[0]
    assert stored.indices == sent.indices
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(stored.values, sent.values))
    for query in ["brown fox", "lazy dog", "photons", "quick fox at night"]:
        r = col.search(Search().rank(Knn(key="sp", query=query, limit=5)).limit(5).select(K.SCORE))
        check_ranking(r["ids"][0], r["scores"][0], reference_bm25(ef, docs, query), 5)
    # Deleting documents changes document frequencies, and so the scores.
    col.delete(ids=["d0", "d8"])
    del docs["d0"], docs["d8"]
    r = col.search(Search().rank(Knn(key="sp", query="brown fox", limit=5)).limit(5).select(K.SCORE))
    check_ranking(r["ids"][0], r["scores"][0], reference_bm25(ef, docs, "brown fox"), 5)
