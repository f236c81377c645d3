#!/usr/bin/env python3
"""The distributed mode (`scripts/cluster`: a frontend, a log node, two query nodes
and a compactor over PostgreSQL and moto's S3 server, all on loopback) beside
single-node `indigo run`, with the same official Python client workload:

- writes: 4 concurrent clients adding batches of 100 records (with documents and
  metadata); acknowledgement latency p50/p99 per batch and records/s overall;
- warm queries: k=10 once the collection is indexed, p50/p99 and recall@10;
- cold queries: the first query after the query nodes restart with their caches
  wiped (single node: after `indigo run` restarts; its files stay in the page
  cache), latency and, for the cluster, object-store GETs it cost.

Datasets: wordnet-minilm-10k, and `--scale N` records made from it (each base
vector perturbed, N/10k copies) for a larger set. moto is an in-memory S3 on the
same machine: its latency is loopback HTTP plus Python, not a real S3's.

usage: bench/.venv/bin/python bench/cluster.py [--scale 100000] [--queries 200] [--cold 5]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "peers"))
from vecs import free_port, load_wordnet, quantile  # noqa: E402

# The original files only when named; otherwise the repository's fixture
# (a path without base.fvecs: see bench/peers/vecs.py).
DATA = Path(os.environ.get("INDIGO_DATA_DIR", "fixture"))
C = "/api/v2/tenants/default_tenant/databases/default_database/collections"


def client(port):
    import chromadb
    from chromadb.config import Settings

    return chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))


def dataset(n, nq):
    """`n` records: wordnet itself, or perturbed copies of it; queries with their
    exact top-10 over the set."""
    base, queries, truth, recs = load_wordnet(DATA, nq)
    if n <= len(base):
        return base[:n], queries, truth[:, :10], recs[:n]
    rng = np.random.default_rng(7)
    copies = -(-n // len(base))
    parts, rs = [], []
    for c in range(copies):
        b = base if c == 0 else base + rng.normal(0, 0.02, base.shape).astype(np.float32)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        parts.append(b)
        rs += [{**r, "id": f"{r['id']}-{c}"} for r in recs]
    allv = np.concatenate(parts)[:n]
    rs = rs[:n]
    # Exact top-10 by cosine over the whole set.
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    top = []
    for i in range(0, len(qn), 50):
        s = qn[i : i + 50] @ allv.T
        top.append(np.argsort(-s, axis=1)[:, :10])
    return allv, queries, np.concatenate(top), rs


def write(port, vecs, recs, writers=4, batch=100):
    """Adds everything through `writers` concurrent clients; returns per-batch ack
    latencies and records/s."""
    col_id = client(port).create_collection(
        "bench", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    ).id
    lat, lock = [], threading.Lock()
    starts = list(range(0, len(vecs), batch))

    def run(w):
        col = client(port).get_collection("bench", embedding_function=None)
        for s in starts[w::writers]:
            chunk = recs[s : s + batch]
            t = time.perf_counter()
            col.add(
                ids=[r["id"] for r in chunk],
                embeddings=vecs[s : s + batch],
                documents=[r["document"] for r in chunk],
                metadatas=[r["metadata"] for r in chunk],
            )
            with lock:
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(w,)) for w in range(writers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.perf_counter() - t0
    return col_id, {"ack_p50": quantile(lat, 0.5), "ack_p99": quantile(lat, 0.99), "write_rate": len(vecs) / took}


def wait_indexed(port, col_id, timeout=3600):
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        r = httpx.get(f"http://127.0.0.1:{port}{C}/{col_id}/indexing_status", timeout=60)
        if r.status_code == 200 and r.json()["op_indexing_progress"] >= 1.0:
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise RuntimeError("not indexed in time")


def recall_of(ids, truth, recs):
    index = {r["id"]: i for i, r in enumerate(recs)}
    return len({index[i] for i in ids} & set(truth.tolist()))


def queries(port, qs, truth, recs):
    col = client(port).get_collection("bench", embedding_function=None)
    lat, hits = [], 0
    for q, t in zip(qs, truth):
        s = time.perf_counter()
        r = col.query(query_embeddings=[q.tolist()], n_results=10)
        lat.append(time.perf_counter() - s)
        hits += recall_of(r["ids"][0], t[:10], recs)
    return {"query_p50": quantile(lat, 0.5), "query_p99": quantile(lat, 0.99), "recall10": hits / (10 * len(qs))}


def query_rate(port, qs, clients=8, seconds=5.0):
    """Queries per second with `clients` concurrent clients (one server, or one
    frontend and its query node)."""
    done, stop = [0] * clients, threading.Event()

    def run(c):
        col = client(port).get_collection("bench", embedding_function=None)
        i = c
        while not stop.is_set():
            col.query(query_embeddings=[qs[i % len(qs)].tolist()], n_results=10)
            done[c] += 1
            i += clients

    ts = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(done) / seconds


def one_query(port, q):
    col = client(port).get_collection("bench", embedding_function=None)
    s = time.perf_counter()
    col.query(query_embeddings=[q.tolist()], n_results=10)
    return time.perf_counter() - s


def wait_up(port, proc):
    import httpx

    for _ in range(1200):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def single(binary, d, vecs, qs, truth, recs, cold_runs):
    port = free_port()
    cmd = [binary, "run", "--path", f"{d}/single", "--port", str(port)]

    def start():
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_up(port, p)
        return p

    p = start()
    try:
        col_id, res = write(port, vecs, recs)
        res["index_seconds"] = wait_indexed(port, col_id)
        res.update(queries(port, qs, truth, recs))
        res["query_rate"] = query_rate(port, qs)
        res["warm_gets"] = 0
        cold = []
        for i in range(cold_runs):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=120)
            p = start()
            cold.append(one_query(port, qs[i]))
        res["cold_query"] = quantile(cold, 0.5)
        res["cold_gets"] = 0
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    return res


def node_gets(d, names):
    """Object-store GETs so far, summed over processes (from their /metrics)."""
    import httpx

    total = 0
    for n in names:
        out = Path(d, "logs", f"{n}.out").read_text().strip().splitlines()
        addr = out[-1].rsplit("http://", 1)[1]
        for line in httpx.get(f"http://{addr}/metrics", timeout=10).text.splitlines():
            if line.startswith('indigo_object_requests_total{op="get"}'):
                total += int(line.split()[-1])
    return total


def cluster(binary, d, vecs, qs, truth, recs, cold_runs):
    cdir = f"{d}/cluster"
    env = dict(os.environ, INDIGO_BIN=binary)
    # PostgreSQL runs as another user when we are root: it must reach the directory.
    os.chmod(d, 0o755)

    def sh(*a):
        r = subprocess.run(["bash", str(ROOT / "scripts" / "cluster"), *a], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/cluster {' '.join(a)}: {r.stderr}")
        return r.stdout

    out = sh("up", cdir)
    port = int(out.strip().splitlines()[-1].rsplit(":", 1)[1])
    try:
        col_id, res = write(port, vecs, recs)
        res["index_seconds"] = wait_indexed(port, col_id)
        queries(port, qs[:20], truth, recs)  # warms the caches
        g0 = node_gets(cdir, ["log", "query1", "query2"])
        res.update(queries(port, qs, truth, recs))
        res["warm_gets"] = (node_gets(cdir, ["log", "query1", "query2"]) - g0) / len(qs)
        res["query_rate"] = query_rate(port, qs)
        cold, gets = [], []
        for i in range(cold_runs):
            sh("kill", cdir, "query")
            sh("kill", cdir, "query")
            for n in ["query1", "query2"]:
                shutil.rmtree(f"{cdir}/{n}/cache", ignore_errors=True)
            sh("start", cdir, "query")
            g0 = node_gets(cdir, ["query1", "query2"])
            cold.append(one_query(port, qs[i]))
            gets.append(node_gets(cdir, ["query1", "query2"]) - g0)
        res["cold_query"] = quantile(cold, 0.5)
        res["cold_gets"] = quantile(gets, 0.5)
    finally:
        sh("down", cdir)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--indigo-bin", default=str(ROOT / "target" / "release" / "indigo"))
    ap.add_argument("--scale", type=int, default=100000, help="records of the larger set (0: wordnet only)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cold", type=int, default=5, help="cold queries (each after a restart)")
    ap.add_argument("--json")
    args = ap.parse_args()
    sets = [10000] + ([args.scale] if args.scale > 10000 else [])
    results = {}
    for n in sets:
        vecs, qs, truth, recs = dataset(n, args.queries)
        for mode, fn in [("single", single), ("cluster", cluster)]:
            print(f"{n} records, {mode} ...", file=sys.stderr)
            with tempfile.TemporaryDirectory() as d:
                results[f"{n}/{mode}"] = fn(args.indigo_bin, d, vecs, qs, truth, recs, args.cold)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
    print("## The distributed mode beside `indigo run` (loopback; 4 writers, batches of 100; k=10)\n")
    rows = [
        ("write ack p50", "ack_p50", "{:.1f} ms", 1e3),
        ("write ack p99", "ack_p99", "{:.1f} ms", 1e3),
        ("write throughput", "write_rate", "{:.0f} rec/s", 1),
        ("time until indexed (after the last ack)", "index_seconds", "{:.1f} s", 1),
        ("warm query p50", "query_p50", "{:.2f} ms", 1e3),
        ("warm query p99", "query_p99", "{:.2f} ms", 1e3),
        ("recall@10", "recall10", "{:.3f}", 1),
        ("query throughput, 8 clients", "query_rate", "{:.0f} q/s", 1),
        ("object GETs per warm query (log head check included)", "warm_gets", "{:.1f}", 1),
        ("cold query (median of first queries after restart)", "cold_query", "{:.1f} ms", 1e3),
        ("object GETs per cold query", "cold_gets", "{:.0f}", 1),
    ]
    for n in sets:
        s, c = results[f"{n}/single"], results[f"{n}/cluster"]
        print(f"\n### {n} records\n")
        print("| figure | indigo run | cluster | cluster / single |")
        print("|---|---|---|---|")
        for label, key, fmt, scale in rows:
            ratio = f"{c[key] / s[key]:.2f}x" if s[key] else "-"
            print(f"| {label} | {fmt.format(s[key] * scale)} | {fmt.format(c[key] * scale)} | {ratio} |")


if __name__ == "__main__":
    main()
