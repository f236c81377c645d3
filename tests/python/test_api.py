"""Every route and semantic of Chroma's HTTP API v2 (the project's API notes), through the official
`chromadb.HttpClient` (and raw HTTP where the client would stop a bad request first)."""
import base64
import math
import struct
import time

import chromadb
import httpx
import numpy as np
import pytest
from conftest import Server
from chromadb.errors import (
    AuthorizationError,
    ChromaError,
    InvalidArgumentError,
    NotFoundError,
    UniqueConstraintError,
)

C = "/api/v2/tenants/default_tenant/databases/default_database/collections"


def test_handshake_routes(server, client):
    assert client.heartbeat() > 0
    r = server.http.get("/api/v2/healthcheck").json()
    assert r == {"is_executor_ready": True, "is_log_client_ready": True}
    assert isinstance(server.http.get("/api/v2/version").json(), str)
    pf = server.http.get("/api/v2/pre-flight-checks").json()
    assert pf["supports_base64_encoding"] is True and pf["max_batch_size"] > 0
    ident = server.http.get("/api/v2/auth/identity").json()
    assert ident == {"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]}
    assert client.get_version()


def test_v1_is_gone(server):
    r = server.http.get("/api/v1/heartbeat")
    assert r.status_code == 410
    assert set(r.json()) == {"error", "message"}


def test_tenants_and_databases(server, client):
    admin = chromadb.AdminClient(settings=client.get_settings())
    admin.create_tenant("acme")
    assert admin.get_tenant("acme")["name"] == "acme"
    admin.create_database("prod", tenant="acme")
    admin.create_database("dev", tenant="acme")
    assert admin.get_database("prod", tenant="acme")["name"] == "prod"
    names = [d["name"] for d in admin.list_databases(tenant="acme")]
    assert names == ["prod", "dev"]
    assert [d["name"] for d in admin.list_databases(tenant="acme", limit=1, offset=1)] == ["dev"]
    with pytest.raises(UniqueConstraintError):
        admin.create_database("prod", tenant="acme")
    with pytest.raises(NotFoundError):
        admin.get_tenant("nobody")
    scoped = server.client(tenant="acme", database="prod")
    col = scoped.create_collection("in-prod")
    col.add(ids=["x"], embeddings=[[1.0, 2.0]])
    assert scoped.get_collection("in-prod").count() == 1
    assert client.list_collections() == []
    admin.delete_database("prod", tenant="acme")
    with pytest.raises(NotFoundError):
        admin.get_database("prod", tenant="acme")


def test_collections(server, client):
    col = client.create_collection("docs", metadata={"topic": "t", "hnsw:space": "cosine"})
    assert col.name == "docs"
    assert col.configuration_json["hnsw"]["space"] == "cosine"
    with pytest.raises(UniqueConstraintError):
        client.create_collection("docs")
    again = client.get_or_create_collection("docs", metadata={"other": 1})
    assert again.id == col.id and again.metadata["topic"] == "t"
    client.create_collection("two", configuration={"hnsw": {"space": "ip", "ef_search": 50}})
    assert [c.name for c in client.list_collections()] == ["docs", "two"]
    assert [c.name for c in client.list_collections(limit=1, offset=1)] == ["two"]
    assert client.count_collections() == 2
    got = client.get_collection("two")
    assert got.configuration_json["hnsw"]["space"] == "ip"
    assert got.configuration_json["hnsw"]["ef_search"] == 50
    by_id = server.http.get(f"{C}/by-id/{got.id}").json()
    assert by_id["name"] == "two" and by_id["tenant"] == "default_tenant"
    got.modify(name="deux", metadata={"m": 2}, configuration={"hnsw": {"ef_search": 80}})
    renamed = client.get_collection("deux")
    assert renamed.metadata == {"m": 2}
    assert renamed.configuration_json["hnsw"]["ef_search"] == 80
    with pytest.raises(NotFoundError):
        client.get_collection("two")
    for bad in ["ab", "-abc", "abc-", "a b c", "x" * 513]:
        with pytest.raises((InvalidArgumentError, ValueError)):
            client.create_collection(bad)
    client.delete_collection("deux")
    with pytest.raises(NotFoundError):
        client.delete_collection("deux")
    assert client.count_collections() == 1


def add_sample(col):
    col.add(
        ids=["a", "b", "c", "d", "e"],
        embeddings=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [2, 0, 0]],
        documents=["the quick brown fox", "jumps over", None, "the lazy dog", "Fox News"],
        metadatas=[
            {"n": 1, "tag": "x", "l": [1, 2]},
            {"n": 2.5, "tag": "y", "ok": True},
            None,
            {"n": 4, "tag": "x", "ok": False},
            {"n": 5, "l": ["p", "q"]},
        ],
        uris=["u://a", None, None, None, None],
    )


def test_records_crud(client):
    col = client.create_collection("crud")
    add_sample(col)
    assert col.count() == 5
    # Adding an existing id changes nothing.
    col.add(ids=["a"], embeddings=[[9, 9, 9]], documents=["changed?"])
    r = col.get(ids=["a"], include=["embeddings", "documents", "metadatas", "uris"])
    assert r["documents"] == ["the quick brown fox"]
    assert r["uris"] == ["u://a"]
    assert r["metadatas"] == [{"n": 1, "tag": "x", "l": [1, 2]}]
    assert np.allclose(r["embeddings"][0], [1, 0, 0])
    # Defaults: documents and metadatas, never embeddings.
    r = col.get()
    assert r["ids"] == ["a", "b", "c", "d", "e"]
    assert r["embeddings"] is None and r["documents"][2] is None and r["metadatas"][2] is None
    assert col.get(limit=2, offset=1)["ids"] == ["b", "c"]
    assert col.peek(2)["ids"] == ["a", "b"]
    # Update merges metadata; None removes a key; unknown ids are ignored.
    col.update(ids=["a", "zzz"], metadatas=[{"tag": None, "new": "v"}, {"x": 1}])
    assert col.get(ids=["a"])["metadatas"] == [{"n": 1, "l": [1, 2], "new": "v"}]
    assert col.count() == 5
    col.update(ids=["b"], embeddings=[[0, 5, 0]], documents=["jumped"])
    r = col.get(ids=["b"], include=["embeddings", "documents"])
    assert r["documents"] == ["jumped"] and np.allclose(r["embeddings"][0], [0, 5, 0])
    # Upsert inserts or updates.
    col.upsert(ids=["b", "f"], embeddings=[[0, 1, 0], [3, 3, 3]], metadatas=[{"tag": "z"}, {"tag": "z"}])
    assert col.count() == 6
    assert col.get(where={"tag": "z"})["ids"] == ["b", "f"]
    # Delete by id and by filter.
    col.delete(ids=["f", "nope"])
    col.delete(where={"tag": "x"})
    assert col.get()["ids"] == ["a", "b", "c", "e"]
    col.delete(where_document={"$contains": "fox"})
    assert col.get()["ids"] == ["b", "c", "e"]
    assert col.count() == 3


def test_delete_answers_the_number_deleted(server, client):
    col = client.create_collection("del")
    add_sample(col)
    r = server.http.post(f"{C}/{col.id}/delete", json={"where": {"tag": "x"}})
    assert r.status_code == 200 and r.json() == {"deleted": 2}


def test_where_operators(client):
    col = client.create_collection("filters")
    add_sample(col)

    def ids(**kw):
        return col.get(**kw)["ids"]

    assert ids(where={"tag": "x"}) == ["a", "d"]
    assert ids(where={"tag": {"$eq": "x"}}) == ["a", "d"]
    # $ne / $nin match records that lack the key.
    assert ids(where={"tag": {"$ne": "x"}}) == ["b", "c", "e"]
    assert ids(where={"tag": {"$nin": ["x", "y"]}}) == ["c", "e"]
    assert ids(where={"tag": {"$in": ["x", "y"]}}) == ["a", "b", "d"]
    # Ints and floats compare as numbers.
    assert ids(where={"n": {"$gt": 2}}) == ["b", "d", "e"]
    assert ids(where={"n": {"$gte": 4.0}}) == ["d", "e"]
    assert ids(where={"n": {"$lt": 2.5}}) == ["a"]
    assert ids(where={"n": {"$lte": 2.5}}) == ["a", "b"]
    assert ids(where={"n": 1.0}) == ["a"]
    assert ids(where={"n": {"$in": [4.0, 5.0]}}) == ["d", "e"]
    assert ids(where={"ok": True}) == ["b"]
    assert ids(where={"ok": False}) == ["d"]
    # $contains on list metadata.
    assert ids(where={"l": {"$contains": 2}}) == ["a"]
    assert ids(where={"l": {"$contains": "q"}}) == ["e"]
    assert ids(where={"l": {"$not_contains": 2}}) == ["b", "c", "d", "e"]
    assert ids(where={"$and": [{"tag": "x"}, {"n": {"$gt": 1}}]}) == ["d"]
    assert ids(where={"$or": [{"tag": "y"}, {"n": 5}]}) == ["b", "e"]
    assert ids(where={"#document": {"$contains": "lazy"}}) == ["d"]
    # where_document: exact substrings, regexes; no document → $contains false.
    assert ids(where_document={"$contains": "the"}) == ["a", "d"]
    assert ids(where_document={"$contains": "Fox"}) == ["e"]
    assert ids(where_document={"$not_contains": "the"}) == ["b", "c", "e"]
    assert ids(where_document={"$regex": "^j.*r$"}) == ["b"]
    assert ids(where_document={"$not_regex": "o"}) == ["c"]
    assert ids(where_document={"$or": [{"$contains": "jumps"}, {"$contains": "dog"}]}) == ["b", "d"]
    assert ids(where_document={"$and": [{"$contains": "the"}, {"$contains": "dog"}]}) == ["d"]
    assert ids(where={"tag": "x"}, where_document={"$contains": "quick"}) == ["a"]
    assert ids(ids=["a", "b", "d"], where={"tag": "x"}) == ["a", "d"]


def test_query_distances_and_filters(client):
    for space in ["l2", "cosine", "ip"]:
        col = client.create_collection(f"q-{space}", configuration={"hnsw": {"space": space}})
        add_sample(col)
        q = [1.0, 0.5, 0.0]
        r = col.query(query_embeddings=[q], n_results=5, include=["distances", "embeddings"])
        emb = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1], "d": [1, 1, 0], "e": [2, 0, 0]}

        def dist(v):
            v = np.array(v, dtype=np.float64)
            qq = np.array(q)
            if space == "l2":
                return float(((v - qq) ** 2).sum())
            if space == "ip":
                return float(1 - v @ qq)
            return float(1 - v @ qq / (np.linalg.norm(v) * np.linalg.norm(qq)))

        want = sorted(emb, key=lambda i: dist(emb[i]))
        assert r["ids"][0] == want, space
        for i, d in zip(r["ids"][0], r["distances"][0]):
            assert math.isclose(d, dist(emb[i]), abs_tol=1e-5), (space, i)
        assert r["documents"] is None and len(r["embeddings"][0]) == 5
    col = client.get_collection("q-l2")
    r = col.query(query_embeddings=[[1, 0, 0], [0, 0, 1]], n_results=2, where={"tag": "x"})
    assert r["ids"] == [["a", "d"], ["a", "d"]]
    assert r["metadatas"][0][0]["tag"] == "x" and r["documents"][0][1] == "the lazy dog"
    r = col.query(query_embeddings=[[0, 0, 1]], n_results=10, where_document={"$contains": "o"})
    assert sorted(r["ids"][0]) == ["a", "b", "d", "e"]
    r = col.query(query_embeddings=[[0, 0, 1]], n_results=2, ids=["b", "e"])
    assert sorted(r["ids"][0]) == ["b", "e"]


def test_float_and_base64_embeddings_on_the_wire(server, client):
    col = client.create_collection("wire")
    vec = [0.25, -1.5, 3.0]
    b64 = base64.b64encode(struct.pack("<3f", *vec)).decode()
    r = server.http.post(f"{C}/{col.id}/add", json={"ids": ["f", "b"], "embeddings": [vec, b64]})
    assert r.status_code == 201 and r.json() == {}
    got = col.get(include=["embeddings"])
    assert np.allclose(got["embeddings"][0], vec) and np.allclose(got["embeddings"][1], vec)
    assert server.http.get(f"{C}/{col.id}/count").json() == 2


def test_bad_input_is_a_400_with_chroma_error_json_and_changes_nothing(server, client):
    col = client.create_collection("bad")
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    with pytest.raises(InvalidArgumentError):
        col.add(ids=["b"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidArgumentError):
        col.query(query_embeddings=[[1.0]], n_results=1)
    nan = base64.b64encode(struct.pack("<2f", float("nan"), 1.0)).decode()
    bad_bodies = [
        {"ids": ["n"], "embeddings": [nan]},
        {"ids": ["d", "d"], "embeddings": [[1, 2], [1, 2]]},
        {"ids": ["m"], "embeddings": [[1, 2]], "metadatas": [{"k": {"nested": 1}}]},
        {"ids": ["m"], "embeddings": [[1, 2]], "metadatas": [{"k": None}]},
        {"ids": ["m"], "embeddings": [[1, 2]], "metadatas": [{"k": [1, "a"]}]},
        {"ids": ["m"], "embeddings": [[1, 2], [3, 4]]},
        {"ids": [""], "embeddings": [[1, 2]]},
        {"ids": ["m"]},
        {"embeddings": [[1, 2]]},
    ]
    for body in bad_bodies:
        r = server.http.post(f"{C}/{col.id}/add", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"] == "InvalidArgumentError" and r.json()["message"], body
    deep = {"n": 1}
    for _ in range(40):
        deep = {"$and": [deep]}
    for body in [{"where": {"n": {"$bogus": 1}}}, {"where": deep}, {"where_document": {"$contains": ""}},
                 {"where_document": {"$regex": "("}}, {"include": ["data"]}, {"limit": -1}]:
        r = server.http.post(f"{C}/{col.id}/get", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"] == "InvalidArgumentError", body
    r = server.http.post(f"{C}/{col.id}/add", content=b"{not json")
    assert r.status_code == 400
    assert col.count() == 1
    r = server.http.get(f"{C}/00000000-0000-0000-0000-000000000000/count")
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError"


def test_fork_through_the_official_client(server, client):
    col = client.create_collection("src", metadata={"k": "v"})
    col.add(ids=[f"r{i}" for i in range(300)], embeddings=[[i, 1.0, 2.0] for i in range(300)],
            documents=[f"doc {i}" for i in range(300)])
    # Both modes: one node hard-links files, a cluster shares version objects.
    assert col.fork_count() == 0
    fork = col.fork("fork")
    assert fork.name == "fork" and fork.id != col.id and fork.metadata == {"k": "v"}
    assert fork.count() == 300
    assert fork.get(ids=["r7"])["documents"] == ["doc 7"]
    assert fork.query(query_embeddings=[[42.0, 1.0, 2.0]], n_results=1)["ids"] == [["r42"]]
    assert col.fork_count() == 1 and fork.fork_count() == 1
    # Independent afterwards.
    fork.add(ids=["new"], embeddings=[[0.5, 0.5, 0.5]])
    col.delete(ids=["r1"])
    assert fork.count() == 301 and col.count() == 299
    assert fork.get(ids=["r1"])["ids"] == ["r1"]
    # Deleting the source leaves the fork whole.
    client.delete_collection("src")
    assert fork.count() == 301
    # Errors: an unknown source, a name in use, no name.
    r = server.http.post(f"{C}/{col.id}/fork", json={"new_name": "yyy"})
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError"
    r = server.http.post(f"{C}/{fork.id}/fork", json={"new_name": "fork"})
    assert r.status_code == 409
    r = server.http.post(f"{C}/{fork.id}/fork", json={})
    assert r.status_code == 400 and r.json()["error"] == "InvalidArgumentError"


def test_indexing_status_and_metrics(server, client):
    col = client.create_collection("ops")
    col.add(ids=[str(i) for i in range(100)], embeddings=[[i, 1.0] for i in range(100)])
    st = server.http.get(f"{C}/{col.id}/indexing_status").json()
    # Counted in record operations, as Chroma does: 100 records are 100 ops.
    assert st["total_ops"] == 100 and 0 <= st["op_indexing_progress"] <= 1
    assert st["num_indexed_ops"] + st["num_unindexed_ops"] == 100
    col.upsert(ids=["1", "new"], embeddings=[[0.5, 1.0], [7.0, 1.0]])
    deadline = time.time() + 120
    while True:
        st = server.http.get(f"{C}/{col.id}/indexing_status").json()
        if st["num_indexed_ops"] == 102 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert st == {"num_indexed_ops": 102, "num_unindexed_ops": 0, "total_ops": 102, "op_indexing_progress": 1.0}
    m = server.http.get("/metrics").text
    assert 'indigo_requests_total{method="POST"' in m
    if getattr(server, "procs", None) is None:
        assert "indigo_records 101" in m
    else:
        # A cluster's frontend counts the nodes it routes to, not the records.
        assert "indigo_cluster_query_nodes 2" in m and "indigo_cluster_log_nodes 1" in m


def test_reset(server, make_server, client):
    client.create_collection("gone")
    assert client.reset() is True
    assert client.list_collections() == []
    locked = make_server(name="noreset")
    with pytest.raises((AuthorizationError, ChromaError)):
        locked.client().reset()
    r = httpx.post(locked.url + "/api/v2/reset")
    assert r.status_code == 403 and "allow_reset" in r.json()["message"]


def test_large_batches_are_accepted(client):
    # 2000 x 384 floats: about 4 MB as base64, over common default body limits.
    col = client.create_collection("large")
    vecs = np.random.default_rng(1).standard_normal((2000, 384)).astype(np.float32)
    col.add(ids=[str(i) for i in range(2000)], embeddings=vecs, documents=["d"] * 2000)
    assert col.count() == 2000
    assert col.query(query_embeddings=[vecs[7]], n_results=1)["ids"] == [["7"]]


def test_search_api(server, client):
    from chromadb.execution.expression import K, Knn, Rrf, Search

    col = client.create_collection("search")
    add_sample(col)
    # KNN rank with a filter, limit/offset and selected keys.
    s = (
        Search()
        .where(K("tag") == "x")
        .rank(Knn(query=[1.0, 0.0, 0.0]))
        .limit(5)
        .select(K.DOCUMENT, K.SCORE, "n")
    )
    r = col.search(s)
    assert r["ids"] == [["a", "d"]]
    assert r["documents"] == [["the quick brown fox", "the lazy dog"]]
    assert r["scores"][0][0] == pytest.approx(0.0) and r["scores"][0][1] == pytest.approx(1.0)
    assert r["metadatas"] == [[{"n": 1}, {"n": 4}]]
    # Document conditions in the filter; no rank: collection order.
    r = col.search(Search().where(K.DOCUMENT.contains("the")).select(K.METADATA))
    assert r["ids"] == [["a", "d"]]
    assert r["metadatas"][0][0] == {"n": 1, "tag": "x", "l": [1, 2]}
    # Reciprocal rank fusion of two KNNs, several searches in one request.
    # Ranks for [1, .1, 0]: a d e b c; for [.1, 1, 0]: b d a c e. With k=60,
    # a scores 1/60 + 1/62, d 2/61, b 1/63 + 1/60: a, d, b.
    fused = Search().rank(Rrf([Knn(query=[1.0, 0.1, 0.0], return_rank=True),
                               Knn(query=[0.1, 1.0, 0.0], return_rank=True)])).limit(2)
    r = col.search([fused, Search().limit(1)])
    assert r["ids"] == [["a", "d"], ["a"]]
    # group_by: top k per tag (records without a tag form a group of their own),
    # then ranked by score again. Distances to [1, .1, 0]: a .01, d .81, e 1.01,
    # b 1.81, c 2.01.
    from chromadb.execution.expression import GroupBy, MaxK, MinK
    q = Knn(query=[1.0, 0.1, 0.0])
    best = Search().rank(q).group_by(GroupBy(keys=[K("tag")], aggregate=MinK(keys=[K.SCORE], k=1)))
    assert col.search(best)["ids"] == [["a", "e", "b"]]
    # The record with the largest n per tag; c has no n and loses to e.
    most = Search().rank(q).group_by(GroupBy(keys=[K("tag")], aggregate=MaxK(keys=[K("n")], k=1)))
    assert col.search(most)["ids"] == [["d", "e", "b"]]
    two = Search().rank(q).group_by(GroupBy(keys=[K("tag")], aggregate=MinK(keys=[K.SCORE], k=2))).limit(2)
    r = col.search(two.select(K.SCORE))
    assert r["ids"] == [["a", "d"]] and r["scores"][0][1] == pytest.approx(0.81)
    # Bad rank expressions and groupings are 400s.
    knn = {"$knn": {"query": [1.0, 0.0, 0.0]}}
    for bad in [{"rank": {"$bogus": 1}}, {"rank": {"$knn": {"query": "text"}}}, {"filter": {"n": {"$gt": "x"}}},
                {"rank": knn, "group_by": {"keys": ["tag"]}},
                {"rank": knn, "group_by": {"keys": [], "aggregate": {"$min_k": {"keys": ["#score"], "k": 1}}}},
                {"rank": knn, "group_by": {"keys": ["tag"], "aggregate": {"$top": {"keys": ["#score"], "k": 1}}}},
                {"rank": knn, "group_by": {"keys": ["tag"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 0}}}},
                {"group_by": {"keys": ["tag"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 1}}}}]:
        r = server.http.post(f"{C}/{col.id}/search", json={"searches": [bad]})
        assert r.status_code == 400 and r.json()["error"] == "InvalidArgumentError", bad


def test_chroma_error_texts_and_trace_ids(server, client):
    """Clients match on Chroma's words; every answer carries a chroma-trace-id."""
    r = server.http.get(C + "/missing-one")
    assert r.status_code == 404
    assert r.json() == {"error": "NotFoundError", "message": "Collection [missing-one] does not exist"}
    assert len(r.headers["chroma-trace-id"]) == 32
    assert server.http.get("/api/v2/heartbeat").headers["chroma-trace-id"] != r.headers["chroma-trace-id"]
    assert server.http.get("/api/v2/tenants/no-such").json()["message"] == "Tenant [no-such] not found"
    r = server.http.get("/api/v2/tenants/default_tenant/databases/no-such")
    assert r.json()["message"] == "Database [no-such] not found"
    client.create_collection("texts")
    with pytest.raises(UniqueConstraintError, match=r"^Collection \[texts\] already exists$"):
        client.create_collection("texts")
    c = client.get_collection("texts")
    c.add(ids=["a"], embeddings=[[1.0, 2.0]])
    with pytest.raises(InvalidArgumentError, match="Collection expecting embedding with dimension of 2, got 3"):
        c.add(ids=["b"], embeddings=[[1.0, 2.0, 3.0]])
    client.delete_collection("texts")
    with pytest.raises(NotFoundError, match=r"Collection .* does not exist"):
        c.add(ids=["c"], embeddings=[[1.0, 2.0]])
    # The async client's heartbeat asks for /api/v2 itself.
    assert server.http.get("/api/v2").status_code == 200


def test_names_and_metadata_are_checked_as_chroma_does(server, client):
    before = server.http.get("/api/v2/tenants/default_tenant/databases").json()
    for path, body in [
        ("/api/v2/tenants", {"name": "ab"}),
        ("/api/v2/tenants/default_tenant/databases", {"name": "a"}),
        ("/api/v2/tenants/default_tenant/databases", {"name": "-bad-"}),
        (C, {"name": "empty-meta", "metadata": {}}),
        (C, {"name": "empty-meta", "metadata": {}, "get_or_create": True}),
    ]:
        r = server.http.post(path, json=body)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["error"] == "InvalidArgumentError"
    assert server.http.get("/api/v2/tenants/default_tenant/databases").json() == before
    assert client.list_collections() == []
    # An existing collection is no excuse for bad metadata in get_or_create.
    client.create_collection("meta-ok", metadata={"k": 1})
    r = server.http.post(C, json={"name": "meta-ok", "metadata": {}, "get_or_create": True})
    assert r.status_code == 400
    c = client.get_collection("meta-ok")
    for key in ["$op", "#document"]:
        r = server.http.post(
            C + f"/{c.id}/add",
            json={"ids": ["x"], "embeddings": [[1.0]], "metadatas": [{key: 1}]},
        )
        assert r.status_code == 400 and "reserved" in r.json()["message"], r.text
    assert c.count() == 0


def test_delete_with_limit(server, client):
    c = client.create_collection("dlimit")
    c.add(
        ids=[f"r{i}" for i in range(5)],
        embeddings=[[float(i), 1.0] for i in range(5)],
        metadatas=[{"cat": "a"}] * 3 + [{"cat": "b"}] * 2,
    )
    assert c.delete(where={"cat": "a"}, limit=2) == {"deleted": 2}
    assert c.count() == 3
    assert len(c.get(where={"cat": "a"})["ids"]) == 1
    assert c.delete(where={"cat": "b"}, limit=0) == {"deleted": 0}
    assert c.count() == 3
    r = server.http.post(C + f"/{c.id}/delete", json={"ids": ["r4"], "limit": 1})
    assert r.status_code == 400 and "limit can only be specified" in r.json()["message"]
    assert c.count() == 3


def test_query_restricted_to_missing_ids_is_refused(server, client):
    c = client.create_collection("qids")
    c.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    c.delete(ids=["b"])
    assert c.query(query_embeddings=[[1.0, 0.0]], ids=["a"], n_results=2)["ids"] == [["a"]]
    for ids in (["b"], ["a", "zz"]):
        with pytest.raises(ChromaError, match="Error finding id"):
            c.query(query_embeddings=[[1.0, 0.0]], ids=ids, n_results=2)
    assert c.get(ids=["b"])["ids"] == []


def test_spann_configuration_is_served_by_hnsw(server, client):
    c = client.create_collection("spann-c", configuration={"spann": {"space": "cosine", "search_nprobe": 5}})
    h = c.configuration_json["hnsw"]
    assert h["space"] == "cosine" and h["ef_search"] == 100 and h["max_neighbors"] == 16
    c.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    assert c.query(query_embeddings=[[2.0, 0.1]], n_results=1)["ids"] == [["a"]]
    r = server.http.post(
        C, json={"name": "both", "configuration": {"spann": {}, "hnsw": {"space": "l2"}}}
    )
    assert r.status_code == 400


def test_concurrent_get_or_create_and_delete(server, client):
    """Chroma's api/test_collection.py race: get_or_create never fails because a
    delete removed what it found."""
    from concurrent.futures import ThreadPoolExecutor

    def work(i):
        try:
            assert client.get_or_create_collection("racy").name == "racy"
        except ChromaError as e:
            if "concurrent" not in e.message():
                raise
        if i % 2 == 0:
            try:
                client.delete_collection("racy")
            except NotFoundError:
                pass

    with ThreadPoolExecutor(max_workers=16) as ex:
        for f in [ex.submit(work, i) for i in range(48)]:
            f.result()


def test_schema_keys_are_checked_as_chroma_does(server, client):
    def create(schema):
        return server.http.post(f"/api/v2/tenants/default_tenant/databases/default_database/collections",
                          json={"name": "schemed", "schema": schema})
    bad = {"keys": {"#invalid_key": {"string": {"string_inverted_index": {"enabled": True, "config": {}}}}}}
    r = create(bad)
    assert r.status_code == 400 and "#invalid_key" in r.json()["message"]
    bad = {"keys": {"sp": {"sparse_vector": {"sparse_vector_index": {
        "enabled": True, "config": {"source_key": "#embedding"}}}}}}
    r = create(bad)
    assert r.status_code == 400 and "source_key" in r.json()["message"]
    assert client.list_collections() == []
    ok = {"keys": {"#document": {"string": {"fts_index": {"enabled": True, "config": {}}}},
                   "tag": {"string": {"string_inverted_index": {"enabled": True, "config": {}}}}}}
    assert create(ok).status_code == 200
