#!/usr/bin/env python3
"""Embedded in Python: `indigo.PersistentClient` against `chromadb.PersistentClient`
(chromadb 1.5.9), the same workload through the same chromadb `Collection` API:

- adds in batches of 1000 (ids, embeddings, a document, metadata `bucket` 0..99):
  the add rate (records/s until the last add returns),
- time until every record is indexed (Chroma's local client indexes as it adds; Indigo's
  folds its log in the background: until `get_indexing_status()` reports 100%),
- query p50/p99 (k=10, ids only) and recall@10 against the exact top 10,
- filtered query p50 (`bucket < 10`: 10%) and its recall@10,
- resident memory of the process after the run.

Data: wordnet-minilm-10k (cosine), and its vectors cycled with noise to --records.
Each engine runs in a fresh child process (this script with --engine), so memory and
caches do not mix; the workload code is the same function. Not included: embedding
computation (vectors are given), process start.

usage: INDIGO_DATA_DIR=../shared/data/wordnet-minilm-10k \\
       bench/.venv/bin/python bench/embedded_python.py [--records 100000] [--queries 500]
(the venv needs the indigo package: `maturin develop --release` in crates/indigo-python)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "peers"))
from vecs import load_wordnet, quantile  # noqa: E402

DATA = Path(os.environ.get("INDIGO_DATA_DIR", "fixture"))


def dataset(n, nq):
    base0, queries, _, recs = load_wordnet(str(DATA), nq)
    if n <= len(base0):
        base = base0[:n].astype(np.float32)
        name = f"wordnet-minilm-10k ({n} x 384, cosine)"
    else:
        rng = np.random.default_rng(7)
        reps = -(-n // len(base0))
        base = np.tile(base0, (reps, 1))[:n].astype(np.float32)
        noise = rng.uniform(-0.02, 0.02, size=base.shape).astype(np.float32)
        noise[: len(base0)] = 0
        base += noise
        name = f"wordnet-minilm cycled with noise ({n // 1000}k x 384, cosine)"
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    docs = [recs[i % len(recs)]["document"] for i in range(n)]
    return name, base, queries, docs


def exact(base, queries, allowed=None, k=10):
    idx = np.arange(len(base)) if allowed is None else allowed
    b = base[idx]
    return [set(idx[np.argpartition(-(b @ q), k)[:k]].tolist()) for q in queries]


def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def workload(engine, n, nq, path):
    name, base, queries, docs = dataset(n, nq)
    if engine == "indigo":
        import indigo

        client = indigo.PersistentClient(path=path)
    else:
        import chromadb

        client = chromadb.PersistentClient(path=path)
    col = client.create_collection("bench", configuration={"hnsw": {"space": "cosine"}})
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        col.add(
            ids=[f"r{j}" for j in range(i, min(i + 1000, n))],
            embeddings=base[i : i + 1000],
            documents=docs[i : i + 1000],
            metadatas=[{"bucket": j % 100} for j in range(i, min(i + 1000, n))],
        )
    acked = time.perf_counter() - t0
    if engine == "indigo":
        while col.get_indexing_status().op_indexing_progress < 1.0:
            time.sleep(0.01)
    else:
        # Chroma's local client has no indexing status (it indexes as it adds,
        # and says "not implemented"): a first query proves the index usable.
        col.query(query_embeddings=[queries[0].tolist()], n_results=10)
    indexed = time.perf_counter() - t0

    def run(where=None):
        lat, got = [], []
        for q in queries:
            s = time.perf_counter()
            r = col.query(query_embeddings=[q.tolist()], n_results=10, where=where, include=[])
            lat.append(time.perf_counter() - s)
            got.append([int(x[1:]) for x in r["ids"][0]])
        return lat, got

    truth = exact(base, queries)
    lat, got = run()
    allowed = np.array([j for j in range(n) if j % 100 < 10])
    ftruth = exact(base, queries, allowed)
    flat, fgot = run({"bucket": {"$lt": 10}})
    rec = lambda g, t: sum(len(set(a) & b) for a, b in zip(g, t)) / (10 * len(t))  # noqa: E731
    return {
        "dataset": name,
        "engine": engine,
        "add_rate": n / acked,
        "ack_s": acked,
        "indexed_s": indexed,
        "p50_ms": quantile(lat, 0.5) * 1e3,
        "p99_ms": quantile(lat, 0.99) * 1e3,
        "recall": rec(got, truth),
        "filtered_p50_ms": quantile(flat, 0.5) * 1e3,
        "filtered_recall": rec(fgot, ftruth),
        "rss_mib": rss() / 2**20,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000, help="the larger set's size")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        with tempfile.TemporaryDirectory(prefix=f"bench-{args.engine}-") as d:
            print(json.dumps(workload(args.engine, args.n, args.queries, d)))
        return
    for n in [10_000, args.records]:
        res = {}
        for engine in ["indigo", "chroma"]:
            out = subprocess.run(
                [sys.executable, __file__, "--engine", engine, "--n", str(n), "--queries", str(args.queries)],
                check=True, capture_output=True, text=True,
            ).stdout
            res[engine] = json.loads(out.strip().splitlines()[-1])
        i, c = res["indigo"], res["chroma"]
        print(f"\n{i['dataset']}: batches of 1000 with documents and metadata, {args.queries} queries, k=10")
        print("| figure | indigo.PersistentClient | chromadb.PersistentClient | ratio |")
        print("|---|---|---|---|")
        rows = [
            ("add rate (records/s)", "add_rate", "{:.0f}"),
            ("time until indexed (s)", "indexed_s", "{:.2f}"),
            ("query p50 (ms)", "p50_ms", "{:.3f}"),
            ("query p99 (ms)", "p99_ms", "{:.3f}"),
            ("recall@10", "recall", "{:.3f}"),
            ("filtered 10% p50 (ms)", "filtered_p50_ms", "{:.3f}"),
            ("filtered 10% recall@10", "filtered_recall", "{:.3f}"),
            ("resident memory (MiB)", "rss_mib", "{:.0f}"),
        ]
        for label, k, f in rows:
            ratio = i[k] / c[k] if c[k] else float("nan")
            print(f"| {label} | {f.format(i[k])} | {f.format(c[k])} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
