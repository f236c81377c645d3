"""The distributed mode under failures, through the official client: processes of
`indigo serve` are killed (SIGKILL) while clients read and write, and nothing
acknowledged is lost, no batch is half there, and reads move to the next node.
(The API itself runs against a cluster in test_api.py.)"""
import signal
import threading
import time

import chromadb
import httpx
import numpy as np
import pytest

C = "/api/v2/tenants/default_tenant/databases/default_database/collections"


def wait_for(what, check, timeout=180):
    """Waits for an outcome (never a fixed time): CI machines are slow and loaded."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception as e:  # the cluster may be between states
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def version_of(cluster, col):
    return httpx.get(f"{cluster.url}{C}/{col.id}").json()["version"]


def vec(i):
    rng = np.random.default_rng(i)
    return rng.standard_normal(8).astype(np.float32).tolist()


def test_reads_move_to_the_next_query_node_and_come_back(make_cluster):
    cl = make_cluster(
        nodes=[("log", ["log"]), ("q1", ["query"]), ("q2", ["query"]), ("bg", ["compactor", "gc"])]
    )
    client = cl.client()
    col = client.create_collection("reads")
    col.add(ids=[f"r{i}" for i in range(300)], embeddings=[vec(i) for i in range(300)],
            metadatas=[{"i": i} for i in range(300)])
    wait_for("a first index version", lambda: version_of(cl, col) >= 1)
    col.add(ids=["tail"], embeddings=[vec(1000)])  # in the log only, for now
    want = col.query(query_embeddings=[vec(7)], n_results=5, where={"i": {"$lt": 100}})["ids"]
    assert want[0][0] == "r7"
    for victim in ["q1", "q2"]:
        cl.kill(victim)
        # Whichever node held the collection, the answer is the same: the read
        # plan names the version and the log offset, not a node.
        got = col.query(query_embeddings=[vec(7)], n_results=5, where={"i": {"$lt": 100}})
        assert got["ids"] == want
        assert col.count() == 301
        assert col.get(ids=["tail"])["ids"] == ["tail"]
        cl.start_node(victim, ["query"])
    # With no query node at all, reads fail clearly and writes still work.
    cl.kill("q1")
    cl.kill("q2")
    with pytest.raises(Exception) as e:
        col.count()
    assert "query node" in str(e.value)
    col.add(ids=["while-down"], embeddings=[vec(2000)])
    cl.start_node("q3", ["query"])
    wait_for("a new query node to serve", lambda: col.count() == 302)


def test_a_killed_log_node_loses_no_acknowledged_write(make_cluster):
    cl = make_cluster(
        nodes=[("log1", ["log"]), ("log2", ["log"]), ("q", ["query"]), ("bg", ["compactor", "gc"])]
    )
    client = cl.client()
    cols = [client.create_collection(f"writes{i}") for i in range(4)]
    acked, failed = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        c = chromadb.HttpClient(host="127.0.0.1", port=cl.port,
                                settings=chromadb.config.Settings(anonymized_telemetry=False))
        col = c.get_collection(cols[w % len(cols)].name)
        n = 0
        while not stop.is_set():
            ids = [f"w{w}-{n}-{k}" for k in range(10)]
            try:
                col.add(ids=ids, embeddings=[vec(w * 100000 + n * 10 + k) for k in range(10)],
                        documents=[f"doc {i}" for i in ids])
                with lock:
                    acked.append((col.name, n, ids))
            except Exception as e:  # the outcome of an unanswered write is unknown
                with lock:
                    failed.append(str(e))
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    wait_for("writes before the kill", lambda: len(acked) >= 40)
    cl.kill("log1")
    before = len(acked)
    wait_for("writes after the kill", lambda: len(acked) >= before + 40)
    cl.start_node("log1", ["log"])
    cl.kill("log2")
    before = len(acked)
    wait_for("writes after the second kill", lambda: len(acked) >= before + 40)
    stop.set()
    for t in threads:
        t.join()
    print(f"{len(acked)} batches acknowledged, {len(failed)} failed: {failed[:3]}")
    # Every acknowledged batch is there, whole, with its content; every batch is
    # all there or not at all.
    for c in cols:
        col = client.get_collection(c.name)
        mine = [a for a in acked if a[0] == c.name]
        got = col.get(include=["documents"])
        have = dict(zip(got["ids"], got["documents"]))
        for _, _, ids in mine:
            for i in ids:
                assert have.get(i) == f"doc {i}", f"acknowledged record {i} lost"
        batches = {}
        for i in have:
            w, n, _ = i.split("-")
            batches.setdefault((w, n), 0)
            batches[(w, n)] += 1
        assert all(v == 10 for v in batches.values()), "a batch is half there"
        assert len(have) >= 10 * len(mine)


def test_a_killed_compactor_is_replaced_and_reads_stay_whole(make_cluster):
    cl = make_cluster(
        nodes=[("node", ["log", "query"]), ("bg1", ["compactor"]), ("bg2", ["compactor", "gc"])]
    )
    client = cl.client()
    col = client.create_collection("compacted")
    total = 0
    for round_ in range(6):
        ids = [f"c{round_}-{k}" for k in range(200)]
        col.add(ids=ids, embeddings=[vec(round_ * 1000 + k) for k in range(200)])
        total += 200
        if round_ == 2:
            cl.kill("bg1")
        if round_ == 4:
            cl.kill("bg2")
            cl.start_node("bg3", ["compactor", "gc"])
        # Reads always cover every acknowledged write: version plus log tail.
        assert col.count() == total
    v = version_of(cl, col)
    wait_for("the replacement compactor to fold the log",
             lambda: version_of(cl, col) > v and col.count() == total)
    got = col.query(query_embeddings=[vec(5 * 1000 + 3)], n_results=1)
    assert got["ids"] == [["c5-3"]]


def test_frontends_are_stateless(make_cluster):
    cl = make_cluster()
    other = cl.start_node("frontend2", ["frontend"])
    host, port = other.rsplit(":", 1)
    a = cl.client().create_collection("shared")
    b = chromadb.HttpClient(host=host, port=int(port),
                            settings=chromadb.config.Settings(anonymized_telemetry=False))
    for i in range(20):
        a.add(ids=[f"s{i}"], embeddings=[vec(i)])
        # Read-your-writes through another frontend: the read covers the log head.
        assert b.get_collection("shared").count() == i + 1
    cl.kill("frontend", signal.SIGKILL)
    assert b.get_collection("shared").get(ids=["s19"])["ids"] == ["s19"]
