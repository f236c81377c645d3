"""The embedded Python package beyond what the shared API tests cover: the client
it offers without chromadb, the process lock, and Ctrl-C during a long call.
Each case runs a child Python (chromadb hidden from it where it says so), so a
hang or a crash fails the test instead of the test run."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import have_embedded

pytestmark = pytest.mark.skipif(not have_embedded(), reason="the indigo package is not built")

# Makes `import chromadb` fail in the child, as on a machine without it.
NO_CHROMADB = "import sys; sys.modules['chromadb'] = None\n"


def child(code, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(r):
    assert r.returncode == 0, f"child failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


LITE = NO_CHROMADB + """
import sys
import numpy as np
import indigo
from indigo import errors

assert not indigo.CHROMADB
assert errors.NotFoundError.__module__ == "indigo.errors"
path = sys.argv[1]
client = indigo.PersistentClient(path=path)
assert client.heartbeat() > 0

# Embedding functions: any callable of `input`.
def ef(input):
    return [[float(len(t)), float(t.count("a")), 1.0] for t in input]

col = client.create_collection("docs", metadata={"topic": "test"}, embedding_function=ef,
                               configuration={"hnsw": {"space": "l2"}})
assert col.name == "docs" and col.metadata == {"topic": "test"}
assert col.configuration["hnsw"]["space"] == "l2"
col.add(ids=["a", "b"], documents=["banana", "kiwi"], metadatas=[{"n": 1}, {"n": 2}])
col.add(ids="c", embeddings=[7.0, 0.0, 1.0], documents="cherry", metadatas={"n": 3})
col.add(ids=["d", "e"], embeddings=np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
assert col.count() == 5

got = col.get(ids=["a", "c"], include=["embeddings", "documents", "metadatas"])
assert got["ids"] == ["a", "c"], got
assert got["documents"] == ["banana", "cherry"]
assert got["metadatas"] == [{"n": 1}, {"n": 3}]
assert np.allclose(got["embeddings"][0], [6.0, 3.0, 1.0])
assert set(got["included"]) == {"embeddings", "documents", "metadatas"}

q = col.query(query_texts=["papaya"], n_results=2, where={"n": {"$gte": 2}})
assert q["ids"] == [["c", "b"]], q  # papaya (6, 3, 1): cherry at 10, kiwi at 13
assert len(q["distances"][0]) == 2 and q["distances"][0][0] <= q["distances"][0][1]
q = col.query(query_embeddings=[1.0, 2.0, 3.0], n_results=1, include=[])
assert q["ids"] == [["d"]]

col.update(ids="b", metadatas={"n": 20}, documents="kiwifruit")
col.upsert(ids=["b", "f"], embeddings=[[0.0, 0.0, 1.0], [9.0, 9.0, 9.0]], metadatas=[{"n": 21}, {"n": 6}])
assert col.get(ids="b")["metadatas"] == [{"n": 21}]
assert col.get(where_document={"$contains": "cherry"})["ids"] == ["c"]
assert len(col.peek(limit=2)["ids"]) == 2

deleted = col.delete(where={"n": {"$gte": 6}})  # b (21) and f (6)
assert deleted["deleted"] == 2, deleted
col.delete(ids=["e"])
assert col.count() == 3

# The search API with a dict payload.
r = col.search({"rank": {"$knn": {"query": [6.0, 3.0, 1.0], "limit": 2}}, "limit": {"limit": 1},
                "select": {"keys": ["#document"]}})
assert r["ids"] == [["a"]], r

# Errors are Chroma's, by class.
for call, cls in [
    (lambda: client.get_collection("missing"), errors.NotFoundError),
    (lambda: client.create_collection("docs"), errors.UniqueConstraintError),
    (lambda: col.add(ids=["x"], embeddings=[[1.0, 2.0]]), errors.InvalidArgumentError),
    (lambda: col.add(ids=["y"], embeddings=[[1.0, 2.0, 3.0]], metadatas=[{"bad": {"nested": 1}}]),
     errors.InvalidArgumentError),
]:
    try:
        call()
    except cls as e:
        assert isinstance(e, errors.ChromaError) and e.message()
    else:
        raise AssertionError(f"no {cls.__name__}")
assert col.count() == 3

col.modify(name="docs2", metadata={"topic": "renamed"})
assert client.get_collection("docs2").metadata == {"topic": "renamed"}
assert [c.name for c in client.list_collections()] == ["docs2"]
assert client.count_collections() == 1

# Tenants and databases.
client.create_tenant("tenant1")
client.create_database("db1", tenant="tenant1")
client.set_tenant("tenant1", "db1")
assert client.list_collections() == []
client.get_or_create_collection("other").add(ids="z", embeddings=[[1.0]], metadatas={"k": "v"})
assert client.get_or_create_collection("other").count() == 1
client.set_tenant("default_tenant", "default_database")
print("ok")
"""


def test_client_api_without_chromadb(tmp_path):
    assert ok(child(LITE, tmp_path / "data")).strip().endswith("ok")
    # The data is there for the next process (with chromadb this time).
    out = ok(
        child(
            """
            import sys, indigo
            assert indigo.CHROMADB
            c = indigo.PersistentClient(path=sys.argv[1]).get_collection("docs2")
            print(c.count(), sorted(c.get()["ids"]))
            """,
            tmp_path / "data",
        )
    )
    assert out.strip() == "3 ['a', 'c', 'd']"


@pytest.mark.parametrize(
    "init, says",
    [
        # Internals Indigo's chromadb flavour cannot use (no `chromadb.api`).
        ("__version__ = '0.3.0'\n", "0.3.0"),
        # An import that fails with something other than ImportError, as
        # chromadb's own check of the sqlite3 version does.
        ("raise RuntimeError('sqlite3 too old')\n", "sqlite3 too old"),
    ],
)
def test_an_unusable_chromadb_falls_back_to_the_own_client(tmp_path, init, says):
    # `import indigo` warns and offers its own client.
    fake = tmp_path / "fake" / "chromadb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(init)
    out = ok(
        child(
            f"""
            import sys, warnings
            sys.path.insert(0, {str(tmp_path / "fake")!r})
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                import indigo
            assert not indigo.CHROMADB
            assert any({says!r} in str(x.message) for x in w), [str(x.message) for x in w]
            c = indigo.PersistentClient(path=sys.argv[1]).create_collection("docs")
            c.add(ids=["a"], embeddings=[[1.0, 2.0]])
            print(c.count())
            """,
            tmp_path / "data",
        )
    )
    assert out.strip() == "1"


HOLD = """
import sys, indigo
c = indigo.PersistentClient(path=sys.argv[1]).get_or_create_collection("held")
c.add(ids=["a"], embeddings=[[1.0, 2.0]])
print("open", flush=True)
sys.stdin.read()
"""

OPEN_TOO = """
import sys, indigo
try:
    indigo.PersistentClient(path=sys.argv[1])
except Exception as e:
    print(type(e).__name__, e)
else:
    print("opened")
"""


@pytest.mark.parametrize("flavour", ["chromadb", "lite"])
def test_a_second_process_on_the_same_path_is_refused_at_once(tmp_path, flavour):
    prefix = NO_CHROMADB if flavour == "lite" else ""
    holder = subprocess.Popen(
        [sys.executable, "-c", prefix + HOLD, str(tmp_path / "data")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        # A hang would end in the timeout (a failure), not a pass.
        out = ok(child(prefix + OPEN_TOO, tmp_path / "data", timeout=120))
        assert "in use by another process" in out, out
        assert "opened" not in out
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # Once the holder is gone, the path opens.
    assert ok(child(prefix + OPEN_TOO, tmp_path / "data", timeout=120)).strip() == "opened"


INTERRUPTED = """
import signal, sys, time, numpy as np, indigo
# As in a terminal: a runner that started this in the background may have left
# SIGINT ignored, and Python then installs no handler of its own.
signal.signal(signal.SIGINT, signal.default_int_handler)
c = indigo.PersistentClient(path=sys.argv[1]).create_collection("big")
n = int(sys.argv[2])
rng = np.random.default_rng(1)
# One large add into an empty backlog is acknowledged once logged; the next
# waits (in the core, GIL released) until indexing has brought the backlog
# under its bound (4096 records).
c.add(ids=[f"r{j}" for j in range(n)], embeddings=rng.random((n, 32), dtype=np.float32))
try:
    # Inside the try: the interrupt may come as soon as this is out.
    print("waiting", flush=True)
    c.add(ids=["last"], embeddings=rng.random((1, 32), dtype=np.float32))
    print("returned", c.count(), flush=True)
except KeyboardInterrupt:
    # Interrupted while it waited: not yet logged (it still may be, later:
    # the request itself runs on, and is written whole or not at all).
    print("interrupted", c.count(), flush=True)
"""


def test_ctrl_c_interrupts_a_waiting_call(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(tmp_path / "data"), "60000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        assert line.strip() == "waiting", line + p.stderr.read()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    word, count = out.split()
    # The call returns only once indexing has folded the 60000 records (the
    # backlog's bound is 4096) and "last" is logged: an interrupt noticed only
    # then would count it.
    assert word == "interrupted", out + err
    assert int(count) == 60000, out
