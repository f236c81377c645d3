#!/usr/bin/env python3
"""Hybrid search through the HTTP API: `indigo run` driven by the official Python
client on wordnet-minilm-10k (10k glosses with their MiniLM embeddings; 500 held-out
glosses as queries). The collection's schema declares a BM25 key (`bm25`, from
`#document` by Chroma's `ChromaBm25EmbeddingFunction`, which the client runs on
each add and each text query). Per query, k=10, one client thread:

- dense `Knn` on the embedding (recall@10 against the exact top 10),
- BM25 `Knn` on the key (the query's gloss as text),
- hybrid: `Rrf` of the two (each `Knn` limit 50, k=60),

each as p50/p99 of the whole round trip (client-side BM25 embedding of the query
text included; it is also timed alone), plus the add time of the 10k records.
Chroma's single node refuses sparse indexes ("Sparse vector indexing is not enabled
in local"), so there is no peer on one node to compare with; the dense-only row is
the baseline the hybrid adds to.

usage: INDIGO_DATA_DIR=../shared/data/wordnet-minilm-10k \\
       bench/.venv/bin/python bench/hybrid.py [--indigo-bin target/release/indigo]
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "peers"))
sys.path.insert(0, str(ROOT / "bench"))
from vecs import free_port, load_wordnet, quantile  # noqa: E402
from server import wait_up  # noqa: E402

DATA = Path(os.environ.get("INDIGO_DATA_DIR", "fixture"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--indigo-bin", default=str(ROOT / "target" / "release" / "indigo"))
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    if not (DATA / "query.jsonl").exists():
        raise SystemExit("hybrid search needs the real glosses: set INDIGO_DATA_DIR to wordnet-minilm-10k")
    import json

    import chromadb
    from chromadb import Schema, SparseVectorIndexConfig, VectorIndexConfig
    from chromadb.config import Settings
    from chromadb.execution.expression import Knn, Rrf, Search
    from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction

    base, queries, truth, recs = load_wordnet(str(DATA), args.queries)
    qtexts = [json.loads(l)["document"] for l in open(DATA / "query.jsonl")][: len(queries)]
    tmp = tempfile.mkdtemp(prefix="indigo-hybrid-")
    port = free_port()
    proc = subprocess.Popen(
        [args.indigo_bin, "run", "--path", tmp, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_up(f"http://127.0.0.1:{port}", proc, "indigo")
        client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
        ef = ChromaBm25EmbeddingFunction()
        schema = Schema()
        schema.create_index(config=VectorIndexConfig(space="cosine"))
        schema.create_index(
            key="bm25", config=SparseVectorIndexConfig(source_key="#document", embedding_function=ef, bm25=True)
        )
        col = client.create_collection("hybrid", schema=schema)
        t0 = time.perf_counter()
        for i in range(0, len(base), 1000):
            chunk = recs[i : i + 1000]
            col.add(
                ids=[r["id"] for r in chunk],
                embeddings=base[i : i + 1000],
                documents=[r["document"] for r in chunk],
                metadatas=[r["metadata"] for r in chunk],
            )
        add_s = time.perf_counter() - t0

        def timed(fn):
            lat, out = [], []
            for i in range(len(queries)):
                s = time.perf_counter()
                out.append(fn(i))
                lat.append(time.perf_counter() - s)
            return lat, out

        dense_lat, dense = timed(
            lambda i: col.search(Search().rank(Knn(query=queries[i].tolist(), limit=10)).limit(10))["ids"][0]
        )
        recall = sum(len({int(x[2:]) for x in d} & set(t[:10].tolist())) for d, t in zip(dense, truth)) / (
            10 * len(queries)
        )
        embed_lat, _ = timed(lambda i: ef.embed_query([qtexts[i]]))
        bm25_lat, bm25 = timed(
            lambda i: col.search(Search().rank(Knn(key="bm25", query=qtexts[i], limit=10)).limit(10))["ids"][0]
        )

        def hybrid(i):
            fused = Rrf(
                [
                    Knn(query=queries[i].tolist(), return_rank=True, limit=50),
                    Knn(key="bm25", query=qtexts[i], return_rank=True, limit=50),
                ],
                k=60,
            )
            return col.search(Search().rank(fused).limit(10))["ids"][0]

        hybrid_lat, hyb = timed(hybrid)
        # How often each ranking finds the query's own gloss neighbour set: the
        # overlap of the hybrid top 10 with the dense exact top 10.
        hyb_recall = sum(len({int(x[2:]) for x in h} & set(t[:10].tolist())) for h, t in zip(hyb, truth)) / (
            10 * len(queries)
        )
        print(f"wordnet-minilm-10k: {len(base)} records, {len(queries)} queries, k=10, one client thread")
        print(f"add (batches of 1000, client-side BM25 embedding included): {add_s:.2f} s")
        print("| query | p50 | p99 | top-10 vs exact dense top-10 |")
        print("|---|---|---|---|")

        def row(name, lat, r=""):
            print(f"| {name} | {quantile(lat, 0.5) * 1e3:.2f} ms | {quantile(lat, 0.99) * 1e3:.2f} ms | {r} |")

        row("dense Knn", dense_lat, f"{recall:.3f}")
        row("BM25 Knn (text query)", bm25_lat)
        row("hybrid Rrf(dense, BM25), each limit 50", hybrid_lat, f"{hyb_recall:.3f}")
        row("(client-side BM25 embedding of the query text alone)", embed_lat)
        print(
            f"hybrid p50 / dense p50: {quantile(hybrid_lat, 0.5) / quantile(dense_lat, 0.5):.2f}; "
            f"BM25 results non-empty for {sum(1 for b in bm25 if b) / len(bm25):.1%} of queries"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
