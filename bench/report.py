#!/usr/bin/env python3
"""Writes BENCHMARKS.md and its plots from the outputs of one `bench/run`.

usage: bench/.venv/bin/python bench/report.py RESULTS_DIR OUT_MARKDOWN

Reads storage.txt, index.txt/index.json, embedded.txt/embedded.json and
server.txt/server.json, objstore.txt and cluster.txt from RESULTS_DIR (whatever of them exists), draws
recall-vs-QPS curves, ingest rate over time and latency histograms as PNG files in
RESULTS_DIR, and writes a report with every table, the plots, and each target of
the issues marked met or not met from the figures of this run.
"""
import json
import os
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(p):
    return p.read_text() if p.exists() else None


def ratio(text, label, col):
    """The `col`-th ratio cell (…x) of the table row starting with `label`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith(label):
            ratios = [c for c in cells[1:] if re.match(r"^[0-9.]+x", c)]
            if len(ratios) > col:
                return float(ratios[col].split("x")[0])
    return None


def cell(text, label, col):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith(label) and len(cells) > col + 1:
            m = re.match(r"^[0-9.]+", cells[col + 1])
            return float(m.group(0)) if m else None
    return None


def mark(ok):
    return "met" if ok else "**not met**"


def targets(res):
    rows = []
    st = read(res / "storage.txt")
    if st:
        ins_sqlite = ratio(st, "insert records/s", 0)
        ins_fjall = ratio(st, "insert records/s", 1)
        drift = cell(st, "insert last10%/first10% rate", 0)
        reads = ratio(st, "point reads/s", 0)
        m = re.search(r"\(([0-9.]+)%\) answered by the bloom filter", st)
        bloom = float(m.group(1)) if m else None
        rows += [
            ("#2 storage", "insert ≥ 5× SQLite", f"{ins_sqlite}×", ins_sqlite is not None and ins_sqlite >= 5),
            ("#2 storage", "insert ≥ 1× fjall", f"{ins_fjall}×", ins_fjall is not None and ins_fjall >= 1),
            ("#2 storage", "last 10% / first 10% insert rate ≥ 0.8", f"{drift}", drift is not None and drift >= 0.8),
            ("#2 storage", "point reads ≥ SQLite", f"{reads}×", reads is not None and reads >= 1),
            ("#2 storage", "≥ 99% of missing-key probes answered by the bloom filter", f"{bloom}%", bloom is not None and bloom >= 99),
        ]
    ix = read(res / "index.txt")
    if ix:
        for block in ix.split("## Vector index: ")[1:]:
            name = block.split(" ")[0]
            for r in ["0.90", "0.95", "0.99"]:
                v = ratio(block, f"QPS (1 thread) at recall@10 = {r}", 0)
                rows.append(("#3 index", f"{name}: QPS ≥ 1.0× hnswlib at recall {r}", f"{v}×", v is not None and v >= 1.0))
            v = ratio(block, "build time", 0)
            rows.append(("#3 index", f"{name}: build time ≤ 1.0× hnswlib", f"{v}×", v is not None and v <= 1.0))
        m = re.search(r"share ([0-9]+)%", ix)
        if m:
            rows.append(("#3 index", "brute-force scan ≥ 60% of memory bandwidth", f"{m.group(1)}%", int(m.group(1)) >= 60))
    em = read(res / "embedded.txt")
    if em:
        def em_ratio(label):
            return ratio(em, label, 0)

        pairs = [
            ("acknowledged ingest ≥ 10× Chroma", em_ratio("acknowledged records/s"), lambda v: v >= 10),
            ("time until indexed ≤ 0.5× Chroma", em_ratio("time until all indexed"), lambda v: v <= 0.5),
            ("query p50 ≤ 0.5× Chroma", em_ratio("query p50"), lambda v: v <= 0.5),
        ]
        for label, v, ok in pairs:
            rows.append(("#4 embedded", label, f"{v}×", v is not None and ok(v)))
        m = re.search(r"filtered p50 / unfiltered p50 \(Indigo\): ([0-9.]+)x", em)
        if m:
            v = float(m.group(1))
            rows.append(("#4 embedded", "filtered p50 ≤ 2× own unfiltered p50", f"{v}×", v <= 2))
        m = re.search(r"last/first ([0-9.]+)", em)
        if m:
            v = float(m.group(1))
            rows.append(("#4 embedded", "1M ingest: last 10% ≥ 0.7× first 10%", f"{v}", v >= 0.7))
    sv = read(res / "server.txt")
    if sv:
        add = ratio(sv, "add records/s", 0)
        p50 = ratio(sv, "query p50", 0)
        rec_i, rec_c = cell(sv, "recall@10", 0), cell(sv, "recall@10", 1)
        rss = ratio(sv, "server resident memory", 0)
        rows += [
            ("#5 server", "add ≥ 5× Chroma", f"{add}×", add is not None and add >= 5),
            ("#5 server", "query p50 ≤ 0.7× Chroma at equal or better recall (±0.005)",
             f"{p50}× (recall {rec_i} vs {rec_c})",
             p50 is not None and p50 <= 0.7 and rec_i is not None and rec_i >= rec_c - 0.005),
            ("#5 server", "resident memory ≤ Chroma's", f"{rss}×", rss is not None and rss <= 1),
        ]
    return rows


def plot_recall(res, plots):
    data = res / "index.json"
    if not data.exists():
        return
    curves = json.loads(data.read_text())
    for ds, libs in curves.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for lib in libs:
            pts = sorted(lib["curve"], key=lambda p: p["recall"])
            ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker="o", ms=3, label=lib["name"])
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second (1 thread)")
        ax.set_yscale("log")
        ax.set_xlim(left=0.85)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{ds}: recall vs QPS (M=16, ef_construction=100)")
        ax.legend()
        name = f"recall_qps_{ds}.png"
        fig.tight_layout()
        fig.savefig(res / name, dpi=110)
        plt.close(fig)
        plots.append((f"Recall@10 vs QPS, {ds}", name))


def plot_ingest(res, plots):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drew = False
    st = read(res / "storage.txt")
    if st:
        for line in st.splitlines():
            m = re.match(r"- (\w+): ((?:[0-9.]+k ?)+)$", line.strip())
            if m:
                vals = [float(v[:-1]) * 1e3 for v in m.group(2).split()]
                ax.plot(range(1, len(vals) + 1), vals, marker="o", label=f"storage engine: {m.group(1)}")
                drew = True
    em = res / "embedded.json"
    if em.exists():
        sc = json.loads(em.read_text()).get("scale")
        if sc and sc.get("deciles"):
            vals = sc["deciles"]
            ax.plot(range(1, len(vals) + 1), vals, marker="s",
                    label=f"Indigo embedded, {sc['records']:,} records (acknowledged)")
            drew = True
    if not drew:
        plt.close(fig)
        return
    ax.set_xlabel("tenth of the ingest")
    ax.set_ylabel("records per second")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Ingest rate over the run (batches of 1000)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(res / "ingest_rate.png", dpi=110)
    plt.close(fig)
    plots.append(("Ingest rate over time", "ingest_rate.png"))


def plot_latency(res, plots, source, title, name):
    p = res / source
    if not p.exists():
        return
    d = json.loads(p.read_text())
    series = []
    for key, v in d.items():
        if isinstance(v, dict) and v.get("latencies"):
            label = {"indigo": "Indigo", "chroma": "Chroma 1.5.9"}.get(key, key)
            series.append((label, [x * 1e3 for x in v["latencies"]]))
    if not series:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lo = min(min(s) for _, s in series)
    hi = max(max(s) for _, s in series)
    import numpy as np

    bins = np.logspace(np.log10(max(lo, 1e-3)), np.log10(hi), 60)
    for label, s in series:
        ax.hist(s, bins=bins, alpha=0.6, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("query latency (ms, k=10)")
    ax.set_ylabel("queries")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(res / name, dpi=110)
    plt.close(fig)
    plots.append((title, name))


def main():
    res, out = Path(sys.argv[1]), Path(sys.argv[2])
    plots = []
    plot_recall(res, plots)
    plot_ingest(res, plots)
    plot_latency(res, plots, "embedded.json", "Query latency, embedded (wordnet-minilm-10k)", "latency_embedded.png")
    plot_latency(res, plots, "server.json", "Query latency through the Python client (wordnet-minilm-10k)", "latency_server.png")
    rel = os.path.relpath(res, out.parent)
    lines = ["# Indigo benchmarks", ""]
    lines.append("Generated by `bench/run` (full mode) from one run on one machine; every peer was")
    lines.append("measured in the same run, back to back. Ratios are Indigo / peer (for times and")
    lines.append("memory, below 1 is better). Reproduce with `bench/run`; `bench/run quick` checks the")
    lines.append("harness in a few minutes.")
    lines.append("")
    machine = read(res / "machine.txt")
    if machine:
        lines += ["## Machine and versions", "", "```", machine.strip(), "```", ""]
    rows = targets(res)
    if rows:
        lines += ["## Targets of the issues", "", "| issue | target | this run | |", "|---|---|---|---|"]
        for issue, target, value, ok in rows:
            lines.append(f"| {issue} | {target} | {value} | {mark(ok)} |")
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
        for title, name in plots:
            lines += [f"### {title}", "", f"![{title}]({rel}/{name})", ""]
    for fname, title in [
        ("storage.txt", "Storage engine (vs SQLite and fjall)"),
        ("index.txt", "Vector index (vs hnswlib and faiss)"),
        ("embedded.txt", "Embedded Indigo (vs Chroma PersistentClient)"),
        ("server.txt", "Server (vs chroma run)"),
        ("objstore.txt", "Object-storage log and index versions (on moto)"),
        ("cluster.txt", "Distributed mode (vs indigo run)"),
    ]:
        t = read(res / fname)
        if t:
            lines += [f"## {title}", "", f"Raw output: [`{rel}/{fname}`]({rel}/{fname})", "", t.strip(), ""]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {len(plots)} plots", file=sys.stderr)


if __name__ == "__main__":
    main()
