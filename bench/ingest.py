#!/usr/bin/env python3
"""Searchable as fast as acknowledged: `indigo run` against `chroma run` (chromadb
1.5.9) in one run, the same official-Python-client workload on each: adds in batches
of 1000 (ids, embeddings, a document, metadata `bucket` 0..99), then

- the acknowledged add rate, and the time until every record is indexed,
- query p50/p99 (k=10) right after the last add returns (any backlog still there),
- query p50/p99 and recall@10 once indexed,
- filtered queries (`bucket < 1, 10, 50`: 1%, 10%, 50%): p50, recall@10, exactly k,
- server resident memory and data directory size,

beside the raw build of the same graph (M=16, ef_construction=100, 2 threads) by
hnswlib and faiss in this process. Data: Fashion-MNIST (60k x 784, L2; Debian's
dataset-fashion-mnist) and the wordnet-minilm vectors grown to --records (cosine)
by interpolating between each gloss and its near neighbours (see load_interpolated;
`--synth noise` gives the older noisy copies). Ground truth is exact (numpy).

usage: bench/.venv/bin/python bench/ingest.py [--datasets fashion,wordnet] [--records 500000]
"""
import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "peers"))
sys.path.insert(0, str(ROOT / "bench"))
from vecs import free_port, load_wordnet, quantile  # noqa: E402
from server import process_tree, rss, wait_up  # noqa: E402

DATA = Path(os.environ.get("INDIGO_DATA_DIR", "fixture"))
FASHION = Path("/usr/share/datasets/fashion-mnist")
BATCH = 1000


def bucket(i):
    return (i * 7919) % 100


def load_fashion(nq):
    def images(name):
        with gzip.open(FASHION / name) as f:
            b = f.read()
        n, r, c = (int.from_bytes(b[o : o + 4], "big") for o in (4, 8, 12))
        return np.frombuffer(b[16:], dtype=np.uint8).reshape(n, r * c).astype(np.float32)

    base = images("train-images-idx3-ubyte.gz")
    queries = images("t10k-images-idx3-ubyte.gz")[:nq]
    docs = [f"fashion-mnist training image {i}" for i in range(len(base))]
    return "fashion-mnist-60k-784 (L2)", "l2", base, queries, docs


def load_cycled(n, nq):
    """The noisy variant (`--synth noise`): each gloss repeated n/10k times with
    ±0.02 uniform noise per dimension. Degenerate: the noise is a quarter of the
    vector's length, so the top 50 of a query lie within 0.03 cosine of each other
    and even hnswlib's raw graph finds 0.62 of the true top 10 at ef 100 (0.90 at
    ef 1600). Kept to reproduce earlier figures."""
    base0, queries, _, recs = load_wordnet(DATA, nq)
    rng = np.random.default_rng(7)
    reps = -(-n // len(base0))
    base = np.tile(base0, (reps, 1))[:n].astype(np.float32)
    noise = rng.uniform(-0.02, 0.02, size=base.shape).astype(np.float32)
    noise[: len(base0)] = 0
    base += noise
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    docs = [recs[i % len(recs)]["document"] for i in range(n)]
    return f"wordnet-minilm cycled with noise, {n // 1000}k x 384 (cosine)", "cosine", base, queries, docs


def load_interpolated(n, nq):
    """The default larger set: the 10k glosses, then new points on the segments
    between a gloss and one of its 10 nearest glosses (SMOTE-style oversampling,
    uniform position, renormalised), cycling through the glosses to n. The points
    stay on the data's own manifold and their distances spread like real ones
    (median cosine similarity of a query's 1st / 10th / 50th neighbour at 500k:
    0.60 / 0.58 / 0.54; hnswlib's raw graph: recall@10 0.83 at ef 100, 0.96 at
    ef 400)."""
    base0, queries, _, recs = load_wordnet(DATA, nq)
    base0 = base0 / np.linalg.norm(base0, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    nn = np.empty((len(base0), 10), dtype=np.int64)
    for s in range(0, len(base0), 1000):
        sim = base0[s : s + 1000] @ base0.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -9
        nn[s : s + 1000] = np.argpartition(-sim, 10, axis=1)[:, :10]
    rng = np.random.default_rng(7)
    i = np.arange(n) % len(base0)
    j = nn[i, rng.integers(0, 10, size=n)]
    t = rng.uniform(0, 1, size=(n, 1)).astype(np.float32)
    base = base0[i] + t * (base0[j] - base0[i])
    base[: min(n, len(base0))] = base0[:n]
    base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    docs = [recs[k]["document"] for k in i]
    return f"wordnet-minilm interpolated, {n // 1000}k x 384 (cosine)", "cosine", base, queries, docs


def exact(base, queries, space, allowed=None, k=10):
    """Exact top-k ids (indices into base) per query, among `allowed` if given."""
    idx = np.arange(len(base)) if allowed is None else allowed
    b = base[idx]
    out = []
    for q in queries:
        if space == "l2":
            d = ((b - q) ** 2).sum(axis=1)
        else:
            d = -(b @ q)
        top = np.argpartition(d, k)[:k]
        out.append(set(idx[top].tolist()))
    return out


def raw_builds(base, space, threads=2):
    out = {}
    try:
        import hnswlib

        idx = hnswlib.Index(space={"l2": "l2", "cosine": "cosine"}[space], dim=base.shape[1])
        t = time.perf_counter()
        idx.init_index(max_elements=len(base), ef_construction=100, M=16, random_seed=100)
        idx.add_items(base, np.arange(len(base)), num_threads=threads)
        out["hnswlib"] = time.perf_counter() - t
        del idx
    except ImportError:
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
        x = base if space == "l2" else base / np.linalg.norm(base, axis=1, keepdims=True)
        idx = faiss.IndexHNSWFlat(base.shape[1], 16, faiss.METRIC_L2 if space == "l2" else faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = 100
        t = time.perf_counter()
        idx.add(np.ascontiguousarray(x))
        out["faiss"] = time.perf_counter() - t
        del idx
    except ImportError:
        pass
    return out


def run_queries(col, queries, n=None, where=None):
    lat, got = [], []
    for q in queries[: n or len(queries)]:
        s = time.perf_counter()
        r = col.query(query_embeddings=[q.tolist()], n_results=10, where=where, include=[])
        lat.append(time.perf_counter() - s)
        got.append([int(i[1:]) for i in r["ids"][0]])
    return lat, got


def recall(got, truth):
    return sum(len(set(g) & t) for g, t in zip(got, truth)) / sum(len(t) for t in truth)


def indexed_progress(http, port, col_id):
    url = (
        f"http://127.0.0.1:{port}/api/v2/tenants/default_tenant/databases/default_database"
        f"/collections/{col_id}/indexing_status"
    )
    r = http.get(url)
    # A server without the route (local Chroma answers it with an error) indexes
    # as it adds: counted as indexed when its adds return.
    return 1.0 if r.status_code != 200 else r.json()["op_indexing_progress"]


def workload(port, name, space, base, queries, docs, truths, on_indexed=lambda: (0.0, 0.0)):
    import chromadb
    import httpx
    from chromadb.config import Settings

    client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
    col = client.create_collection(
        "ingest",
        configuration={"hnsw": {"space": space, "max_neighbors": 16, "ef_construction": 100}},
        embedding_function=None,
    )
    n = len(base)
    t0 = time.perf_counter()
    last = t0
    for i in range(0, n, BATCH):
        end = min(i + BATCH, n)
        col.add(
            ids=[f"r{j}" for j in range(i, end)],
            embeddings=base[i:end],
            documents=docs[i:end],
            metadatas=[{"bucket": bucket(j)} for j in range(i, end)],
        )
        if time.perf_counter() - last > 10:
            last = time.perf_counter()
            print(f"  {name}: {end}/{n} added", file=sys.stderr)
    acked = time.perf_counter() - t0
    # One connection for the polls, 20 a second: a fresh client per poll cost
    # this process (and the two cores the server shares) more than the polling
    # resolution is worth.
    http = httpx.Client()
    progress_at_ack = indexed_progress(http, port, col.id)
    backlog_lat, _ = run_queries(col, queries, n=50)
    backlog_done = time.perf_counter() - t0
    while indexed_progress(http, port, col.id) < 1.0:
        time.sleep(0.05)
    indexed = time.perf_counter() - t0
    server_cpu, client_cpu = on_indexed()
    lat, got = run_queries(col, queries)
    res = {
        "ack_rate": n / acked,
        "indexed_at_ack": progress_at_ack,
        "indexed_seconds": indexed,
        "acked_seconds": acked,
        "backlog_queries_seconds": backlog_done - acked,
        "server_cpu_to_indexed": server_cpu,
        "client_cpu_to_indexed": client_cpu,
        "backlog_p50": quantile(backlog_lat, 0.5),
        "backlog_p99": quantile(backlog_lat, 0.99),
        "query_p50": quantile(lat, 0.5),
        "query_p99": quantile(lat, 0.99),
        "recall10": recall(got, truths[100]),
        "filtered": {},
    }
    for pct in (1, 10, 50):
        flat, got = run_queries(col, queries, where={"bucket": {"$lt": pct}})
        res["filtered"][pct] = {
            "p50": quantile(flat, 0.5),
            "recall10": recall(got, truths[pct]),
            "exactly_k": all(len(g) == 10 for g in got),
        }
    return res


def du(path):
    total = 0
    for p, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(p, f)).st_size
            except OSError:
                pass
    return total


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its children so far."""
    total = 0.0
    for p in process_tree(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_server(cmd, port, what, data_dir, *wl, env=None):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc, what)
        cpu0, client0 = cpu_seconds(proc.pid), time.process_time()
        res = workload(port, what, *wl, on_indexed=lambda: (cpu_seconds(proc.pid) - cpu0, time.process_time() - client0))
        res["rss_bytes"] = rss(proc.pid)
        res["disk_bytes"] = du(data_dir)
        return res
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def report(title, ind, chr_, raw):
    print(f"\n### Time until searchable: {title}\n")
    cols = ["Indigo"] + (["Chroma 1.5.9", "Indigo / Chroma"] if chr_ else [])
    print("| figure | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")

    def line(label, get, fmt, ratio=True):
        cells = [fmt(get(ind))]
        if chr_:
            cells += [fmt(get(chr_)), f"{get(ind) / get(chr_):.2f}x" if ratio and get(chr_) else ""]
        print(f"| {label} | " + " | ".join(cells) + " |")

    ms = lambda v: f"{v * 1e3:.2f} ms"
    line("acknowledged add rate", lambda r: r["ack_rate"], lambda v: f"{v:.0f} rec/s")
    line("indexed when the last add returned", lambda r: r["indexed_at_ack"], lambda v: f"{100 * v:.0f}%", False)
    line("time until all indexed", lambda r: r["indexed_seconds"], lambda v: f"{v:.1f} s")
    line("  of which after the last add", lambda r: r["indexed_seconds"] - r["acked_seconds"], lambda v: f"{v:.2f} s")
    line("  (50 queries right after the last add took)", lambda r: r["backlog_queries_seconds"], lambda v: f"{v:.2f} s", False)
    line("server CPU until all indexed", lambda r: r["server_cpu_to_indexed"], lambda v: f"{v:.1f} s")
    line("client CPU until all indexed (this process)", lambda r: r["client_cpu_to_indexed"], lambda v: f"{v:.1f} s")
    line("query p50 right after the last add", lambda r: r["backlog_p50"], ms)
    line("query p99 right after the last add", lambda r: r["backlog_p99"], ms)
    line("query p50 indexed", lambda r: r["query_p50"], ms)
    line("query p99 indexed", lambda r: r["query_p99"], ms)
    line("recall@10", lambda r: r["recall10"], lambda v: f"{v:.3f}", False)
    for pct in (1, 10, 50):
        line(f"filtered {pct}%: p50", lambda r: r["filtered"][pct]["p50"], ms)
        line(
            f"filtered {pct}%: recall@10",
            lambda r: r["filtered"][pct]["recall10"],
            lambda v: f"{v:.3f}",
            False,
        )
    line("server resident memory", lambda r: r["rss_bytes"], lambda v: f"{v / (1 << 20):.0f} MiB")
    line("data directory", lambda r: r["disk_bytes"], lambda v: f"{v / (1 << 20):.0f} MiB")
    for lib, (before, after) in raw.items():
        s = (before + after) / 2
        print(f"\nraw build of the same graph by {lib} (M=16, ef_construction=100, 2 threads): {before:.1f} s right before "
              f"and {after:.1f} s right after Indigo's run (mean {s:.1f} s); Indigo's time until indexed is {ind['indexed_seconds'] / s:.2f}x it")
    if chr_:
        met = lambda b: "met" if b else "NOT met"
        hl = sum(raw["hnswlib"]) / 2 if "hnswlib" in raw else None
        print(
            "\ntargets: indexed <= 1.3x hnswlib raw: {}; indexed <= 0.5x Chroma: {}; p50 during backlog <= 2x indexed p50: {}; "
            "filtered recall >= 0.98 at 1/10/50%: {}; RSS <= 0.7x Chroma: {}".format(
                met(hl is not None and ind["indexed_seconds"] <= 1.3 * hl),
                met(ind["indexed_seconds"] <= 0.5 * chr_["indexed_seconds"]),
                met(ind["backlog_p50"] <= 2 * ind["query_p50"]),
                met(all(ind["filtered"][p]["recall10"] >= 0.98 and ind["filtered"][p]["exactly_k"] for p in (1, 10, 50))),
                met(ind["rss_bytes"] <= 0.7 * chr_["rss_bytes"]),
            )
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--indigo-bin", default=str(ROOT / "target" / "release" / "indigo"))
    ap.add_argument("--datasets", default="fashion,wordnet")
    ap.add_argument("--records", type=int, default=500_000, help="size of the grown wordnet set")
    ap.add_argument("--synth", choices=("interpolate", "noise"), default="interpolate", help="how wordnet is grown")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-chroma", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    out = {}
    for ds in args.datasets.split(","):
        if ds == "fashion":
            title, space, base, queries, docs = load_fashion(args.queries)
        else:
            load = load_interpolated if args.synth == "interpolate" else load_cycled
            title, space, base, queries, docs = load(args.records, args.queries)
        print(f"{title}: exact ground truth ...", file=sys.stderr)
        b = bucket(np.arange(len(base)))
        truths = {100: exact(base, queries, space)}
        for pct in (1, 10, 50):
            truths[pct] = exact(base, queries, space, np.nonzero(b < pct)[0])
        wl = (space, base, queries, docs, truths)
        res = {}
        # The raw builds run right before and right after Indigo's run and the
        # ratio is to their mean: this machine's speed drifts by a third within
        # minutes, so one build minutes away from Indigo's run (after Chroma's)
        # made the ratio swing more than anything measured.
        print(f"{title}: raw builds (hnswlib, faiss) before ...", file=sys.stderr)
        raw_before = raw_builds(base, space)
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            print(f"{title}: indigo run ...", file=sys.stderr)
            res["Indigo"] = run_server(
                [args.indigo_bin, "run", "--path", f"{d}/indigo", "--port", str(port)], port, "indigo", f"{d}/indigo", *wl
            )
            print(f"{title}: raw builds (hnswlib, faiss) after ...", file=sys.stderr)
            raw_after = raw_builds(base, space)
            if not args.no_chroma:
                chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
                port = free_port()
                print(f"{title}: chroma run ...", file=sys.stderr)
                env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
                res["Chroma 1.5.9"] = run_server(
                    [chroma, "run", "--path", f"{d}/chroma", "--port", str(port)], port, "chroma", f"{d}/chroma", *wl, env=env
                )
        raw = {lib: (raw_before[lib], raw_after[lib]) for lib in raw_before if lib in raw_after}
        report(title, res["Indigo"], res.get("Chroma 1.5.9"), raw)
        out[title] = {"results": res, "raw_build_seconds": raw}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
