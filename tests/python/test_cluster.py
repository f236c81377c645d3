"""The distributed mode under failures, through the official client: processes of
`indigo serve` are killed (SIGKILL) while clients read and write, and nothing
acknowledged is lost, no batch is half there, and reads move to the next node.
(The API itself runs against a cluster in test_api.py.)"""
import re
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


def http_client(port):
    return chromadb.HttpClient(host="127.0.0.1", port=port,
                               settings=chromadb.config.Settings(anonymized_telemetry=False))


class Load:
    """4 writers adding batches of 10 records and 2 readers querying, through the
    frontend, recording what was acknowledged and what failed (with the phase)."""

    def __init__(self, cl, cols):
        self.cl, self.cols = cl, cols
        self.acked, self.write_errors, self.read_errors, self.reads = [], [], [], 0
        self.phase = "start"
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.writer, args=(w,)) for w in range(4)]
        self.threads += [threading.Thread(target=self.reader, args=(r,)) for r in range(2)]
        for t in self.threads:
            t.start()

    def writer(self, w):
        n = 0
        while not self.stop.is_set():
            ids = [f"w{w}-{n}-{k}" for k in range(10)]
            name = self.cols[(w + n) % len(self.cols)]
            try:
                col = http_client(self.cl.port).get_collection(name)
                col.add(ids=ids, embeddings=[vec(w * 100000 + n * 10 + k) for k in range(10)],
                        documents=[f"doc {i}" for i in ids], metadatas=[{"w": w, "n": n}] * 10)
                with self.lock:
                    self.acked.append((name, ids))
            except Exception as e:  # unanswered: its outcome is unknown
                with self.lock:
                    self.write_errors.append((self.phase, str(e)))
            n += 1

    def reader(self, r):
        i = 0
        while not self.stop.is_set():
            name = self.cols[i % len(self.cols)]
            try:
                col = http_client(self.cl.port).get_collection(name)
                col.query(query_embeddings=[vec(i)], n_results=3)
                col.count()
                with self.lock:
                    self.reads += 1
            except Exception as e:
                with self.lock:
                    self.read_errors.append((self.phase, str(e)))
            i += 1

    def progress(self, what, batches=20):
        before = len(self.acked)
        wait_for(what, lambda: len(self.acked) >= before + batches)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def check_acknowledged(client, cols, acked):
    """Every acknowledged batch is there with its content; every batch is whole."""
    for name in cols:
        got = client.get_collection(name).get(include=["documents"])
        have = dict(zip(got["ids"], got["documents"]))
        for n, ids in acked:
            if n != name:
                continue
            for i in ids:
                assert have.get(i) == f"doc {i}", f"acknowledged record {i} lost"
        batches = {}
        for i in have:
            w, b, _ = i.split("-")
            batches[(w, b)] = batches.get((w, b), 0) + 1
        assert all(v == 10 for v in batches.values()), "a batch is half there"


def test_each_role_killed_in_turn_under_writers_and_readers(make_cluster):
    cl = make_cluster(nodes=[
        ("log1", ["log"]), ("log2", ["log"]), ("q1", ["query"]), ("q2", ["query"]),
        ("bg1", ["compactor"]), ("bg2", ["compactor", "gc"]),
    ])
    client = cl.client()
    cols = [client.create_collection(f"writes{i}").name for i in range(4)]
    roles = {"log1": ["log"], "log2": ["log"], "q1": ["query"], "q2": ["query"],
             "bg1": ["compactor"], "bg2": ["compactor", "gc"]}
    load = Load(cl, cols)
    try:
        load.progress("writes before any kill")
        for victim in ["frontend", "log1", "q1", "bg1", "log2", "q2", "bg2"]:
            load.phase = victim
            cl.kill(victim)
            if victim == "frontend":
                cl.start_node("frontend", ["frontend"], port=cl.port, env=cl.env)
            else:
                load.progress(f"writes with {victim} dead")
                cl.start_node(victim, roles[victim])
            load.progress(f"writes after {victim} came back")
        load.phase = "end"
    finally:
        load.finish()
    print(f"{len(load.acked)} batches acknowledged, {len(load.write_errors)} unknown, "
          f"{load.reads} reads, {len(load.read_errors)} failed reads")
    # Reads kept answering while a query node lived: only the frontend's own
    # death may have cut them.
    assert all(p == "frontend" for p, _ in load.read_errors), load.read_errors[:5]
    check_acknowledged(client, cols, load.acked)
    # Collections were compacted along the way, and the versions read back whole.
    assert all(version_of(cl, client.get_collection(c)) >= 1 for c in cols)


def test_two_log_nodes_or_compactors_claiming_one_collection_are_fenced(make_cluster):
    """A log node or compactor that stalls past its lease (SIGSTOP) is replaced;
    when it wakes, it and its replacement both work on the collections they held:
    the log's conditional writes fence the writer that is behind, the catalogue's
    compare-and-swap refuses the stale compactor's version, and nothing
    acknowledged is lost."""
    cl = make_cluster(nodes=[("log1", ["log"]), ("log2", ["log"]), ("q", ["query"]),
                             ("bg1", ["compactor"]), ("bg2", ["compactor", "gc"])],
                      env={"INDIGO_REQUEST_TIMEOUT_SECS": "2"})
    client = cl.client()
    cols = [client.create_collection(f"fence{i}").name for i in range(4)]
    load = Load(cl, cols)
    try:
        load.progress("writes before the stall")
        for victim in ["log1", "bg1", "log2", "bg2", "log1"]:
            load.phase = f"{victim} stopped"
            cl.procs[victim].send_signal(signal.SIGSTOP)
            load.progress(f"writes with {victim} stalled")  # its lease ran out
            cl.procs[victim].send_signal(signal.SIGCONT)
            load.phase = f"{victim} woke"
            load.progress(f"writes with {victim} awake again", batches=40)
    finally:
        load.finish()
    print(f"{len(load.acked)} batches acknowledged, {len(load.write_errors)} unknown")
    check_acknowledged(client, cols, load.acked)
    stale = sum(open(cl.tmp / f"{n}.log").read().count("committed this version first")
                for n in ["bg1", "bg2"])
    print(f"{stale} compactions refused as stale")
    # Versions went on being committed, and each reads back whole.
    for c in cols:
        col = client.get_collection(c)
        v = version_of(cl, col)
        total = col.count()
        col.add(ids=["last"], embeddings=[vec(424242)])
        wait_for("a new version", lambda: version_of(cl, col) > v)
        assert col.count() == total + 1


def test_a_query_node_with_its_cache_wiped_answers_from_object_storage(make_cluster):
    cl = make_cluster()
    col = cl.client().create_collection("wiped")
    col.add(ids=[f"r{i}" for i in range(500)], embeddings=[vec(i) for i in range(500)],
            documents=[f"d{i}" for i in range(500)])
    wait_for("an index version", lambda: version_of(cl, col) >= 1)
    want = col.query(query_embeddings=[vec(3)], n_results=5, include=["documents"])
    for node in ["node1", "node2"]:
        for f in (cl.tmp / node / "cache").rglob("*"):
            if f.is_file():
                f.unlink()
    got = col.query(query_embeddings=[vec(3)], n_results=5, include=["documents"])
    assert got["ids"] == want["ids"] and got["documents"] == want["documents"]
    assert col.count() == 500


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
    # Folded: nothing left unindexed (the version may already be the one that
    # folded the last writes, so waiting for a newer one could wait forever).
    wait_for("the replacement compactor to fold the log",
             lambda: col.get_indexing_status().num_unindexed_ops == 0 and col.count() == total)
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


def test_concurrent_first_reads_of_new_collections_are_never_refused(make_cluster):
    """Reads of a collection with no index version yet open an empty segment on
    the query node; many at once (Chroma's test_multithreaded does this) once
    raced on one directory and were refused with 503s."""
    from concurrent.futures import ThreadPoolExecutor

    cl = make_cluster()
    client = cl.client()
    cols = [client.create_collection(f"fresh{i}") for i in range(6)]

    def hammer(col, t):
        for j in range(5):
            col.add(ids=[f"{t}-{j}"], embeddings=[[float(t), float(j)]])
            r = col.query(query_embeddings=[[float(t), float(j)]], n_results=1)
            assert r["ids"][0], r

    with ThreadPoolExecutor(max_workers=12) as ex:
        for f in [ex.submit(hammer, c, t) for c in cols for t in range(4)]:
            f.result()
    for c in cols:
        assert c.count() == 20
    logs = "".join((cl.tmp / f"{n}.log").read_text() for n, roles in cl.nodes if "query" in roles)
    assert "read refused" not in logs, logs[-2000:]


def s3_keys(cluster, under):
    """Object keys under `under` (inside the cluster's prefix), listed straight
    from the S3 test server (moto answers unsigned requests)."""
    endpoint = cluster.common["INDIGO_S3_ENDPOINT"]
    bucket = cluster.common["INDIGO_S3_BUCKET"]
    prefix = f"{cluster.common['INDIGO_S3_PREFIX']}/{under}"
    r = httpx.get(f"{endpoint}/{bucket}", params={"list-type": "2", "prefix": prefix})
    r.raise_for_status()
    return re.findall(r"<Key>([^<]+)</Key>", r.text)


def test_a_fork_under_writes_outlives_its_deleted_source(make_cluster):
    # Garbage collection every 200 ms with a short grace, so the test sees it
    # remove what only the deleted source named (and keep what the fork names).
    gc_env = {"INDIGO_GC_INTERVAL_MS": "200", "INDIGO_GC_GRACE_SECS": "3",
              "INDIGO_GC_KEEP_WINDOW_SECS": "0", "INDIGO_GC_KEEP_VERSIONS": "2",
              "INDIGO_LOG_GRACE_SECS": "3"}
    cl = make_cluster(nodes=[("log", ["log"]), ("q1", ["query"])])
    cl.start_node("bg", ["compactor", "gc"], env=gc_env)
    client = cl.client()
    src = client.create_collection("src")
    src.add(ids=[f"base-{i}-{k}" for i in range(30) for k in range(10)],
            embeddings=[vec(i * 10 + k) for i in range(30) for k in range(10)],
            documents=[f"doc base-{i}-{k}" for i in range(30) for k in range(10)])
    wait_for("a first index version", lambda: version_of(cl, src) >= 1)

    load = Load(cl, ["src"])
    load.progress("writes before the fork")
    with load.lock:
        acked_before = list(load.acked)
    fork = src.fork("fork")
    load.progress("writes after the fork")
    load.finish()
    assert not load.write_errors and not load.read_errors, (load.write_errors, load.read_errors)

    # The fork holds everything acknowledged before it began, and only whole
    # batches of what came while it was made; nothing written after it.
    check_acknowledged(client, ["fork"], [("fork", ids) for _, ids in acked_before])
    got = fork.get(include=["documents"])
    have = dict(zip(got["ids"], got["documents"]))
    assert set(have) <= set(src.get()["ids"])
    assert src.fork_count() == 1 and fork.fork_count() == 1

    # Apart: the fork takes writes, the source goes. (The version is read before
    # the write: read after, it may already be the one that indexed it.)
    v = version_of(cl, fork)
    fork.add(ids=["mine"], embeddings=[vec(10**6)], documents=["doc mine"])
    before = fork.count()
    src_id = str(src.id)
    src_objects = len(s3_keys(cl, f"col/{src_id}/"))
    client.delete_collection("src")
    wait_for("the fork's writes indexed",
             lambda: version_of(cl, fork) > v and fork.get_indexing_status().num_unindexed_ops == 0)
    # Garbage collection removes the source's log and every object of it that
    # no version of the fork names; what remains, the fork's version names.
    wait_for("the source's log removed",
             lambda: not s3_keys(cl, f"log/{src_id.replace('-', '')}/"), timeout=300)
    wait_for("the source's objects the fork does not name removed",
             lambda: len(s3_keys(cl, f"col/{src_id}/")) < src_objects, timeout=300)
    # A query node with an empty cache reads the fork from S3 alone.
    cl.kill("q1")
    cl.start_node("q2", ["query"])
    wait_for("a fresh query node to serve the fork", lambda: fork.count() == before)
    got = fork.get(include=["documents"])
    assert dict(zip(got["ids"], got["documents"])) == {**have, "mine": "doc mine"}
    assert fork.query(query_embeddings=[vec(10**6)], n_results=1)["ids"] == [["mine"]]


def test_writes_wait_for_the_compactor_past_the_backlog_bound(make_cluster):
    """Backpressure as on a single node: past the bound on unindexed record
    operations a write waits for the compactor, and with none running it is
    refused with 429 and Chroma's error JSON, changing nothing."""
    cl = make_cluster(
        nodes=[("log", ["log"]), ("q1", ["query"])],
        env={"INDIGO_MAX_UNINDEXED_RECORDS": "100", "INDIGO_BACKLOG_WAIT_SECS": "1"},
    )
    client = cl.client()
    col = client.create_collection("backlog")
    batch = lambda lo: dict(ids=[f"b{i}" for i in range(lo, lo + 60)],
                            embeddings=[vec(i) for i in range(lo, lo + 60)])
    col.add(**batch(0))  # into an empty backlog: admitted whatever its size
    r = httpx.post(f"{cl.url}{C}/{col.id}/add", json=batch(60), timeout=60)
    assert r.status_code == 429, r.text
    assert "waiting to be indexed" in r.json()["message"]
    assert col.count() == 60, "the refused write changed nothing"
    # Concurrent writers through the frontend are admitted one at a time and
    # counted before they are logged: of four 30-record writes exactly one
    # fits under the bound (60 + 30 <= 100 < 60 + 60).
    codes = []
    def write(k):
        r = httpx.post(f"{cl.url}{C}/{col.id}/add", timeout=60,
                       json=dict(ids=[f"c{k}-{i}" for i in range(30)],
                                 embeddings=[vec(1000 + 30 * k + i) for i in range(30)]))
        codes.append(r.status_code)
    ts = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(codes) == [201, 429, 429, 429], codes
    assert col.count() == 90
    cl.start_node("bg", ["compactor"])

    def added():
        col.add(**batch(60))
        return True

    wait_for("the compactor to make room", added)
    assert col.count() == 150
    wait_for("everything indexed", lambda: version_of(cl, col) >= 1)
