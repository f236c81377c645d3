"""Helpers the Python benchmark drivers share: the fvecs/ivecs formats of
../shared/data, a latency quantile, and the wordnet workload through a chromadb
collection (load, batched adds, measured queries)."""
import numpy as np


def fvecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].view(np.float32).copy()


def ivecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].copy()


def quantile(xs, q):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * q)]


def load_wordnet(data, nq):
    """wordnet-minilm-10k: base vectors, the first `nq` queries with their exact
    top-100, and the records (id, document, metadata) of the base."""
    import json
    import os

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
