#!/usr/bin/env python3
"""Chroma's embedded mode (chromadb.PersistentClient) on wordnet-minilm-10k, the
workload Indigo's `embedded` benchmark runs: adds in batches of 1000 with documents
and metadata, then k=10 queries (recall against the exact ground truth), then
queries filtered to 10% of the records. Prints one JSON object on stdout.

usage: chroma_embedded.py DATA_DIR WORK_DIR [N_QUERIES]
"""
import json
import sys
import time

from vecs import add_in_batches, load_wordnet, measure_queries


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

    base, queries, truth, recs = load_wordnet(data, nq)
    client = chromadb.PersistentClient(path=work)
    col = client.create_collection("bench", configuration={"hnsw": {"space": "cosine"}})
    t0 = time.perf_counter()
    add_in_batches(col, base, recs)
    acked = time.perf_counter() - t0
    # Local Chroma indexes as it adds; a first query proves the index is usable.
    col.query(query_embeddings=[queries[0].tolist()], n_results=10)
    indexed = time.perf_counter() - t0
    assert col.count() == len(base)
    q = measure_queries(col, queries, truth)
    print(
        json.dumps(
            {
                "engine": "chroma " + chromadb.__version__,
                "records": len(base),
                "ack_seconds": acked,
                "indexed_seconds": indexed,
                **q,
                "rss_bytes": rss(),
            }
        )
    )


if __name__ == "__main__":
    main()
