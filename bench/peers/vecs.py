"""Helpers the Python benchmark drivers share: the fvecs/ivecs formats of
$INDIGO_DATA_DIR (or the repository's fixture without it), a free port, a latency
quantile, and the wordnet workload through a chromadb collection (load, batched
adds, measured queries)."""
import numpy as np


def fvecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].view(np.float32).copy()


def ivecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].copy()


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def quantile(xs, q):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * q)]


def load_fixture(nq):
    """The repository's own copy of the wordnet vectors (`testdata/wordnet/
    vectors.bf16`, format in docs/format.md) unless INDIGO_DATA_DIR names the original files: the
    same embeddings in bfloat16, exact top-100 computed here, and stand-in
    documents and metadata (`bucket` as in the original: row % 10)."""
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "wordnet", "vectors.bf16")
    b = open(path, "rb").read()
    assert b[:8] == b"IDGVBF16", f"{path}: not the wordnet fixture"
    version, dim, nb, nqa = np.frombuffer(b[8:24], dtype="<u4")
    assert version == 1
    raw = np.frombuffer(b[24:-4], dtype="<u2").astype(np.uint32) << 16
    rows = raw.view(np.float32).reshape(int(nb + nqa), int(dim))
    base, queries = rows[:nb].copy(), rows[nb : nb + nq].copy()
    bn = base / np.linalg.norm(base, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(qn @ bn.T), axis=1)[:, :100]
    recs = [
        {"id": f"wn{i}", "document": f"wordnet gloss {i}", "metadata": {"bucket": i % 10, "n_words": 3}}
        for i in range(len(base))
    ]
    return base, queries, truth, recs


def load_wordnet(data, nq):
    """wordnet-minilm-10k: base vectors, the first `nq` queries with their exact
    top-100, and the records (id, document, metadata) of the base; from
    the directory INDIGO_DATA_DIR names, or the repository's fixture."""
    import json
    import os

    if not os.path.exists(os.path.join(data, "base.fvecs")):
        return load_fixture(nq)
    base = fvecs(os.path.join(data, "base.fvecs"))
    queries = fvecs(os.path.join(data, "query.fvecs"))[:nq]
    truth = ivecs(os.path.join(data, "groundtruth.ivecs"))[:nq]
    recs = [json.loads(l) for l in open(os.path.join(data, "base.jsonl"))]
    return base, queries, truth, recs


def add_in_batches(col, base, recs, batch=1000):
    """Adds the records through a chromadb collection, `batch` at a time."""
    for i in range(0, len(base), batch):
        chunk = recs[i : i + batch]
        col.add(
            ids=[r["id"] for r in chunk],
            embeddings=base[i : i + batch],
            documents=[r["document"] for r in chunk],
            metadatas=[r["metadata"] for r in chunk],
        )


def measure_queries(col, queries, truth):
    """k=10 queries through a chromadb collection: latencies, p50/p99, recall@10
    against the ground truth, and the p50 of the same queries filtered to 10%."""
    import time

    lat, hits = [], 0
    for q, t in zip(queries, truth):
        s = time.perf_counter()
        r = col.query(query_embeddings=[q.tolist()], n_results=10)
        lat.append(time.perf_counter() - s)
        hits += len({int(i[2:]) for i in r["ids"][0]} & set(t[:10].tolist()))
    flat = []
    for q in queries:
        s = time.perf_counter()
        r = col.query(query_embeddings=[q.tolist()], n_results=10, where={"bucket": 3})
        flat.append(time.perf_counter() - s)
        assert len(r["ids"][0]) == 10
    return {
        "latencies": lat,
        "query_p50": quantile(lat, 0.5),
        "query_p99": quantile(lat, 0.99),
        "recall10": hits / (10 * len(queries)),
        "filtered_p50": quantile(flat, 0.5),
    }
