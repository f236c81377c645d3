#!/usr/bin/env python3
"""Chroma's embedded mode (chromadb.PersistentClient) on wordnet-minilm-10k, the
workload Indigo's `embedded` benchmark runs: adds in batches of 1000 with documents
and metadata, then k=10 queries (recall against the exact ground truth), then
queries filtered to 10% of the records. Prints one JSON object on stdout.

usage: chroma_embedded.py DATA_DIR WORK_DIR [N_QUERIES]
"""
import json
import os
import sys
import time

from vecs import fvecs, ivecs, quantile


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    data, work = sys.argv[1], sys.argv[2]
    nq = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    import chromadb

    base = fvecs(os.path.join(data, "base.fvecs"))
    queries = fvecs(os.path.join(data, "query.fvecs"))[:nq]
    truth = ivecs(os.path.join(data, "groundtruth.ivecs"))[:nq]
    recs = [json.loads(l) for l in open(os.path.join(data, "base.jsonl"))]
    client = chromadb.PersistentClient(path=work)
    col = client.create_collection("bench", configuration={"hnsw": {"space": "cosine"}})
    t0 = time.perf_counter()
    for i in range(0, len(base), 1000):
        chunk = recs[i : i + 1000]
        col.add(
            ids=[r["id"] for r in chunk],
            embeddings=base[i : i + 1000],
            documents=[r["document"] for r in chunk],
            metadatas=[r["metadata"] for r in chunk],
        )
    acked = time.perf_counter() - t0
    # Local Chroma indexes as it adds; a first query proves the index is usable.
    col.query(query_embeddings=[queries[0].tolist()], n_results=10)
    indexed = time.perf_counter() - t0
    assert col.count() == len(base)

    lat, hits = [], 0
    for q, t in zip(queries, truth):
        s = time.perf_counter()
        r = col.query(query_embeddings=[q.tolist()], n_results=10)
        lat.append(time.perf_counter() - s)
        got = {int(i[2:]) for i in r["ids"][0]}
        hits += len(got & set(t[:10].tolist()))
    flat = []
    for q in queries:
        s = time.perf_counter()
        r = col.query(query_embeddings=[q.tolist()], n_results=10, where={"bucket": 3})
        flat.append(time.perf_counter() - s)
        assert len(r["ids"][0]) == 10
    print(
        json.dumps(
            {
                "engine": "chroma " + chromadb.__version__,
                "latencies": lat,
                "records": len(base),
                "ack_seconds": acked,
                "indexed_seconds": indexed,
                "query_p50": quantile(lat, 0.5),
                "query_p99": quantile(lat, 0.99),
                "recall10": hits / (10 * len(queries)),
                "filtered_p50": quantile(flat, 0.5),
                "rss_bytes": rss(),
            }
        )
    )


if __name__ == "__main__":
    main()
