#!/usr/bin/env python3
"""Runs hnswlib and faiss IndexHNSWFlat on one data set, the way Indigo's index
benchmark runs Indigo: build with N threads, then single-thread queries at several
ef_search values. Prints one JSON object per library on stdout.

usage: ann.py BASE.fvecs QUERY.fvecs TRUTH.ivecs SPACE M EF_CONSTRUCTION THREADS EF[,EF...] REPEAT

Each QPS figure is the best of REPEAT passes over the queries.
"""
import json
import os
import sys
import time

import numpy as np
from vecs import fvecs, ivecs


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def recall(got, truth, k=10):
    hits = 0
    for g, t in zip(got, truth):
        hits += len(set(g[:k].tolist()) & set(t[:k].tolist()))
    return hits / (k * len(got))


def best_of(repeat, fn):
    """Runs fn() `repeat` times; returns (its last result, the shortest time)."""
    best = float("inf")
    out = None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def run_hnswlib(base, queries, truth, space, m, efc, threads, efs, repeat):
    import hnswlib

    r0 = rss()
    idx = hnswlib.Index(space={"l2": "l2", "cosine": "cosine", "ip": "ip"}[space], dim=base.shape[1])
    t = time.perf_counter()
    idx.init_index(max_elements=len(base), ef_construction=efc, M=m, random_seed=100)
    idx.add_items(base, np.arange(len(base)), num_threads=threads)
    build = time.perf_counter() - t
    mem = rss() - r0
    idx.set_num_threads(1)
    curve = []
    for ef in efs:
        idx.set_ef(max(ef, 10))
        (labels, _), dt = best_of(repeat, lambda: idx.knn_query(queries, k=10, num_threads=1))
        curve.append({"ef": ef, "recall": recall(labels, truth), "qps": len(queries) / dt})
    return {"name": "hnswlib", "build_s": build, "memory_bytes": mem, "curve": curve}


def run_faiss(base, queries, truth, space, m, efc, threads, efs, repeat):
    import faiss

    faiss.omp_set_num_threads(threads)
    r0 = rss()
    xb = base
    xq = queries
    if space == "cosine":
        xb = base / np.linalg.norm(base, axis=1, keepdims=True)
        xq = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        metric = faiss.METRIC_INNER_PRODUCT
    elif space == "ip":
        metric = faiss.METRIC_INNER_PRODUCT
    else:
        metric = faiss.METRIC_L2
    idx = faiss.IndexHNSWFlat(base.shape[1], m, metric)
    idx.hnsw.efConstruction = efc
    t = time.perf_counter()
    idx.add(np.ascontiguousarray(xb, dtype=np.float32))
    build = time.perf_counter() - t
    mem = rss() - r0
    faiss.omp_set_num_threads(1)
    curve = []
    for ef in efs:
        idx.hnsw.efSearch = max(ef, 10)
        xq32 = np.ascontiguousarray(xq, dtype=np.float32)
        (_, labels), dt = best_of(repeat, lambda: idx.search(xq32, 10))
        curve.append({"ef": ef, "recall": recall(labels, truth), "qps": len(queries) / dt})
    return {"name": "faiss", "build_s": build, "memory_bytes": mem, "curve": curve}


def main():
    base_p, query_p, truth_p, space, m, efc, threads, efs, repeat = sys.argv[1:10]
    base, queries, truth = fvecs(base_p), fvecs(query_p), ivecs(truth_p)
    m, efc, threads = int(m), int(efc), int(threads)
    efs = [int(x) for x in efs.split(",")]
    for fn in (run_hnswlib, run_faiss):
        print(json.dumps(fn(base, queries, truth, space, m, efc, threads, efs, int(repeat))), flush=True)


if __name__ == "__main__":
    main()
