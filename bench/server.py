#!/usr/bin/env python3
"""Indigo's server (`indigo run`) against Chroma's (`chroma run`, chromadb 1.5.9) on the
same machine, driven by the same official Python client workload on
wordnet-minilm-10k: adds in batches of 1000 with documents and metadata, time until
count() is complete, k=10 query latency and recall@10, queries filtered to 10% of the
records, and each server's resident memory. Prints a table with ratios.

usage: bench/.venv/bin/python bench/server.py [--indigo-bin target/release/indigo] [--queries 500]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "peers"))
from vecs import free_port, add_in_batches, load_wordnet, measure_queries  # noqa: E402

# The original files only when named; otherwise the repository's fixture
# (a path without base.fvecs: see bench/peers/vecs.py).
DATA = Path(os.environ.get("INDIGO_DATA_DIR", "fixture"))


def process_tree(pid):
    """A process and its children (chroma run may fork)."""
    pids = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    return pids


def rss(pid):
    """Resident bytes of a process and its children."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def wait_up(url, proc, what):
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/api/v2/heartbeat", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


def workload(port, nq):
    import chromadb
    from chromadb.config import Settings

    base, queries, truth, recs = load_wordnet(DATA, nq)
    client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
    col = client.create_collection("bench", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
    t0 = time.perf_counter()
    add_in_batches(col, base, recs)
    added = time.perf_counter() - t0
    while col.count() < len(base):
        time.sleep(0.01)
    counted = time.perf_counter() - t0
    # Queries are measured on the indexed collection. Indigo reports progress on
    # the indexing_status route; a server without it (local Chroma indexes as it
    # adds) counts as indexed.
    import httpx

    status = (
        f"http://127.0.0.1:{port}/api/v2/tenants/default_tenant/databases/default_database"
        f"/collections/{col.id}/indexing_status"
    )
    while True:
        r = httpx.get(status)
        if r.status_code != 200 or r.json()["op_indexing_progress"] >= 1.0:
            break
        time.sleep(0.01)
    indexed = time.perf_counter() - t0
    return {
        "add_rate": len(base) / added,
        "count_seconds": counted,
        "indexed_seconds": indexed,
        **measure_queries(col, queries, truth),
    }


def run_server(cmd, port, what, nq, env=None):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc, what)
        res = workload(port, nq)
        res["rss_bytes"] = rss(proc.pid)
        return res
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--indigo-bin", default=str(ROOT / "target" / "release" / "indigo"))
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--no-chroma", action="store_true")
    ap.add_argument("--json", help="also write every figure (and the query latencies) here")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        print("running indigo run ...", file=sys.stderr)
        results["Indigo"] = run_server(
            [args.indigo_bin, "run", "--path", f"{d}/indigo", "--port", str(port)], port, "indigo", args.queries
        )
        if not args.no_chroma:
            chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
            port = free_port()
            print("running chroma run ...", file=sys.stderr)
            env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
            results["Chroma 1.5.9"] = run_server(
                [chroma, "run", "--path", f"{d}/chroma", "--port", str(port)], port, "chroma", args.queries, env
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
    ind = results["Indigo"]
    chr_ = results.get("Chroma 1.5.9")
    print("## Server: `indigo run` vs `chroma run` (wordnet-minilm-10k, 10k x 384, cosine, official Python client, batches of 1000 with documents and metadata)\n")
    cols = ["Indigo"] + (["Chroma 1.5.9", "Indigo / Chroma"] if chr_ else [])
    print("| figure | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")

    def line(label, key, fmt, scale=1.0):
        cells = [fmt.format(ind[key] * scale)]
        if chr_:
            cells += [fmt.format(chr_[key] * scale), f"{ind[key] / chr_[key]:.2f}x"]
        print(f"| {label} | " + " | ".join(cells) + " |")

    line("add records/s", "add_rate", "{:.0f}")
    line("time until count() is complete", "count_seconds", "{:.2f} s")
    line("time until indexed", "indexed_seconds", "{:.2f} s")
    line("query p50 (k=10)", "query_p50", "{:.2f} ms", 1e3)
    line("query p99 (k=10)", "query_p99", "{:.2f} ms", 1e3)
    line("recall@10", "recall10", "{:.3f}")
    line("filtered query p50 (10% match)", "filtered_p50", "{:.2f} ms", 1e3)
    line("server resident memory", "rss_bytes", "{:.0f} MiB", 1 / (1 << 20))
    if chr_:
        met = lambda b: "met" if b else "NOT met"
        print(
            "\ntargets: add >= 5x Chroma: {}; query p50 <= 0.7x Chroma at equal or better recall (within 0.005): {}; RSS <= Chroma's: {}".format(
                met(ind["add_rate"] >= 5 * chr_["add_rate"]),
                met(ind["query_p50"] <= 0.7 * chr_["query_p50"] and ind["recall10"] >= chr_["recall10"] - 0.005),
                met(ind["rss_bytes"] <= chr_["rss_bytes"]),
            )
        )


if __name__ == "__main__":
    main()
