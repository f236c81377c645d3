//! Vector-index benchmark: Indigo's HNSW against hnswlib and faiss IndexHNSWFlat,
//! same M and ef_construction, side by side in one run: single-thread QPS at
//! recall@10 = 0.90 / 0.95 / 0.99, build time with 2 threads, memory; plus a
//! brute-force scan figure as a share of this machine's memory bandwidth.
//!
//! cargo run --release -p indigo-bench --bin index -- [--datasets wordnet,fashion]

/// The same allocator as the storage benchmark and Indigo's binaries.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use indigo_bench::data::{self, Dataset};
use indigo_bench::{header, mib, progress, row};
use indigo_index::{Hnsw, HnswParams, Space};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "wordnet,fashion")]
    datasets: String,
    /// Fashion-MNIST queries (ground truth is computed exactly for these).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 100)]
    ef_construction: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value = "10,16,24,32,48,64,96,128,192,256,384,512")]
    ef: String,
    /// Python with hnswlib, faiss-cpu and numpy (bench/run creates it).
    #[arg(long, default_value = "bench/.venv/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "bench/cache")]
    cache: PathBuf,
    /// Each QPS figure is the best of this many passes over the queries (for every
    /// library alike), as ann-benchmarks does, to damp machine noise.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Measure Indigo alone (for quick before/after comparisons).
    #[arg(long)]
    no_peers: bool,
    /// Write the curves as JSON here (for plots).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
}

#[derive(Debug, Clone)]
struct LibResult {
    name: String,
    build_s: f64,
    memory_bytes: f64,
    curve: Vec<Point>,
}

impl LibResult {
    /// QPS at `target` recall, interpolated linearly between the two points of the
    /// ef sweep that bracket it (the first point if it already reaches the target).
    fn qps_at(&self, target: f64) -> Option<f64> {
        let i = self.curve.iter().position(|p| p.recall >= target)?;
        if i == 0 {
            return Some(self.curve[0].qps);
        }
        let (a, b) = (&self.curve[i - 1], &self.curve[i]);
        let t = (target - a.recall) / (b.recall - a.recall);
        Some(a.qps + (b.qps - a.qps) * t)
    }
}

fn recall(got: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    let mut hits = 0;
    for (g, t) in got.iter().zip(truth) {
        hits += g.iter().filter(|x| t[..10].contains(x)).count();
    }
    hits as f64 / (10 * got.len()) as f64
}

fn run_indigo(ds: &Dataset, space: Space, args: &Args, efs: &[usize]) -> LibResult {
    let mut p = HnswParams::new(space, ds.base.dim);
    p.max_neighbors = args.m;
    p.ef_construction = args.ef_construction;
    let idx = Hnsw::new(p);
    let items: Vec<(u32, &[f32])> = (0..ds.base.len())
        .map(|i| (i as u32, ds.base.row(i)))
        .collect();
    let t = Instant::now();
    let pb = progress(1, &format!("indigo build {}", ds.name));
    idx.insert_parallel(&items, args.threads).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    // RSS growth says little under mimalloc, which reuses the pages the data set
    // loader freed; the index's own accounting of its arrays is the honest figure.
    let memory = idx.stats().memory_bytes as f64;
    let mut curve = Vec::new();
    let pb = progress(efs.len() as u64, &format!("indigo search {}", ds.name));
    for &ef in efs {
        idx.set_ef_search(ef);
        let mut got: Vec<Vec<u32>> = Vec::new();
        let mut dt = f64::INFINITY;
        for _ in 0..args.repeat.max(1) {
            let t = Instant::now();
            got = (0..ds.queries.len())
                .map(|i| {
                    idx.search(ds.queries.row(i), 10, None)
                        .unwrap()
                        .iter()
                        .map(|n| n.label)
                        .collect()
                })
                .collect();
            dt = dt.min(t.elapsed().as_secs_f64());
        }
        curve.push(Point {
            ef,
            recall: recall(&got, &ds.truth),
            qps: ds.queries.len() as f64 / dt,
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    LibResult {
        name: "indigo".into(),
        build_s,
        memory_bytes: memory,
        curve,
    }
}

fn run_peers(files: &[PathBuf; 3], space: Space, args: &Args, efs: &[usize]) -> Vec<LibResult> {
    if !args.python.exists() {
        eprintln!(
            "note: {} not found, peers skipped (bench/run sets up the venv)",
            args.python.display()
        );
        return Vec::new();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers/ann.py");
    let efs_s: Vec<String> = efs.iter().map(|e| e.to_string()).collect();
    let out = Command::new(&args.python)
        .arg(script)
        .args(files)
        .arg(space.name())
        .arg(args.m.to_string())
        .arg(args.ef_construction.to_string())
        .arg(args.threads.to_string())
        .arg(efs_s.join(","))
        .arg(args.repeat.to_string())
        .env("OMP_NUM_THREADS", args.threads.to_string())
        .output()
        .expect("run peer script");
    if !out.status.success() {
        eprintln!(
            "peer script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| LibResult {
            name: v["name"].as_str().unwrap_or("?").to_string(),
            build_s: v["build_s"].as_f64().unwrap_or(f64::NAN),
            memory_bytes: v["memory_bytes"].as_f64().unwrap_or(f64::NAN),
            curve: v["curve"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| Point {
                            ef: p["ef"].as_u64().unwrap_or(0) as usize,
                            recall: p["recall"].as_f64().unwrap_or(0.0),
                            qps: p["qps"].as_f64().unwrap_or(0.0),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn report(ds: &Dataset, space: Space, results: &[LibResult], args: &Args) {
    println!(
        "\n## Vector index: {} ({} × {}, {}, {} queries), M={}, ef_construction={}, build threads={}\n",
        ds.name,
        ds.base.len(),
        ds.base.dim,
        space.name(),
        ds.queries.len(),
        args.m,
        args.ef_construction,
        args.threads
    );
    let mut cols: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
    for r in &results[1..] {
        cols.push(format!("indigo/{}", r.name));
    }
    header(
        "figure",
        &cols.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let fmt_opt = |v: Option<f64>| v.map_or("not reached".to_string(), |x| format!("{x:.0}"));
    for target in [0.90, 0.95, 0.99] {
        let v: Vec<Option<f64>> = results.iter().map(|r| r.qps_at(target)).collect();
        let mut c: Vec<String> = v.iter().map(|x| fmt_opt(*x)).collect();
        for x in &v[1..] {
            c.push(match (v[0], x) {
                (Some(a), Some(b)) => format!("{:.2}x", a / b),
                _ => "-".into(),
            });
        }
        row(&format!("QPS (1 thread) at recall@10 = {target:.2}"), &c);
    }
    let mut c: Vec<String> = results
        .iter()
        .map(|r| format!("{:.2} s", r.build_s))
        .collect();
    for r in &results[1..] {
        c.push(format!("{:.2}x time", results[0].build_s / r.build_s));
    }
    row(&format!("build time ({} threads)", args.threads), &c);
    let mut c: Vec<String> = results.iter().map(|r| mib(r.memory_bytes as u64)).collect();
    for r in &results[1..] {
        c.push(format!("{:.2}x", results[0].memory_bytes / r.memory_bytes));
    }
    row("memory (indigo: index bytes; peers: RSS growth)", &c);
    println!("\nrecall@10 / QPS by ef_search:");
    for r in results {
        let pts: Vec<String> = r
            .curve
            .iter()
            .map(|p| format!("ef={} {:.4}/{:.0}", p.ef, p.recall, p.qps))
            .collect();
        println!("- {}: {}", r.name, pts.join(", "));
    }
}

/// Filtered search: QPS of the exact scan over the allow-list against the graph walk,
/// by selectivity, to choose `flat_cutoff` (the allow-list size below which the scan
/// wins). Prints the table and returns the measured crossover size.
fn filtered_sweep(ds: &Dataset, space: Space, args: &Args) -> Option<usize> {
    use indigo_index::RoaringBitmap;
    let mut p = HnswParams::new(space, ds.base.dim);
    p.max_neighbors = args.m;
    p.ef_construction = args.ef_construction;
    p.ef_search = 64;
    let idx = Hnsw::new(p);
    let items: Vec<(u32, &[f32])> = (0..ds.base.len())
        .map(|i| (i as u32, ds.base.row(i)))
        .collect();
    idx.insert_parallel(&items, args.threads).unwrap();
    let n = ds.base.len() as u32;
    println!(
        "\n### Filtered search on {} (ef_search=64, k=10): exact scan of the allow-list vs graph walk\n",
        ds.name
    );
    header(
        "selectivity (allow-list size)",
        &["scan QPS", "graph QPS", "faster"],
    );
    let mut crossover = None;
    for pct in [0.5f64, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0] {
        // A pseudo-random subset, so the allowed vectors are spread over the graph.
        let allow: RoaringBitmap = (0..n)
            .filter(|&i| {
                (xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) % 10_000) < (pct * 100.0) as u64
            })
            .collect();
        let mut qps = [0.0f64; 2];
        for (slot, cutoff) in [usize::MAX, 0].into_iter().enumerate() {
            idx.set_flat_cutoff(cutoff);
            let mut best = f64::INFINITY;
            for _ in 0..args.repeat.max(1) {
                let t = Instant::now();
                for i in 0..ds.queries.len().min(300) {
                    std::hint::black_box(idx.search(ds.queries.row(i), 10, Some(&allow)).unwrap());
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            qps[slot] = ds.queries.len().min(300) as f64 / best;
        }
        let scan_wins = qps[0] >= qps[1];
        if !scan_wins && crossover.is_none() {
            crossover = Some(allow.len() as usize);
        }
        row(
            &format!("{pct}% ({})", allow.len()),
            &[
                format!("{:.0}", qps[0]),
                format!("{:.0}", qps[1]),
                (if scan_wins { "scan" } else { "graph" }).to_string(),
            ],
        );
    }
    crossover
}

/// Single-thread sequential read bandwidth (bytes/s) over a buffer far larger than
/// the caches: the best of a plain summing loop and a SIMD (simsimd) read of each
/// 4 KiB piece, so the reference is what one core can actually pull from memory.
fn memory_bandwidth() -> f64 {
    use simsimd::SpatialSimilarity;
    let n = 256 << 20 >> 2; // 256 MiB of f32
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let mut acc = [0f32; 8];
        for c in buf.chunks_exact(8) {
            for j in 0..8 {
                acc[j] += c[j];
            }
        }
        std::hint::black_box(acc);
        best = best.max((n * 4) as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut s = 0.0;
        for c in buf.chunks_exact(1024) {
            // Reading the piece twice from L1 costs little; memory is read once.
            s += f32::dot(c, c).unwrap_or(0.0);
        }
        std::hint::black_box(s);
        best = best.max((n * 4) as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// Brute-force scan throughput (bytes of vectors per second) of Indigo's flat search.
fn flat_scan_bandwidth(ds: &Dataset, space: Space) -> f64 {
    let mut flat = indigo_index::FlatIndex::new(space, ds.base.dim);
    for i in 0..ds.base.len() {
        flat.insert(i as u32, ds.base.row(i)).unwrap();
    }
    let bytes = (ds.base.len() * ds.base.dim * 4) as f64;
    let mut best = 0.0f64;
    for qi in 0..20.min(ds.queries.len()) {
        let t = Instant::now();
        std::hint::black_box(flat.search(ds.queries.row(qi), 10, None).unwrap());
        best = best.max(bytes / t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let args = Args::parse();
    let efs: Vec<usize> = args
        .ef
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let mut all = serde_json::Map::new();
    let mut bw_ds = None;
    for name in args.datasets.split(',') {
        let (ds, space, files) = match name.trim() {
            "wordnet" => {
                let (ds, files) =
                    data::wordnet_with_files(&args.cache).expect("wordnet-minilm-10k");
                (ds, Space::Cosine, files)
            }
            "fashion" => {
                let (ds, files) = data::fashion(&args.cache, args.queries).expect("Fashion-MNIST");
                (ds, Space::L2, files)
            }
            other => panic!("unknown data set {other}"),
        };
        eprintln!("{}: indigo ...", ds.name);
        let mut results = vec![run_indigo(&ds, space, &args, &efs)];
        eprintln!("{}: peers ...", ds.name);
        if !args.no_peers {
            results.extend(run_peers(&files, space, &args, &efs));
        }
        report(&ds, space, &results, &args);
        let curves: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "build_s": r.build_s, "memory_bytes": r.memory_bytes,
                    "curve": r.curve.iter().map(|p| serde_json::json!({"ef": p.ef, "recall": p.recall, "qps": p.qps})).collect::<Vec<_>>()
                })
            })
            .collect();
        all.insert(ds.name.clone(), serde_json::Value::Array(curves));
        if bw_ds.is_none() || space == Space::L2 {
            bw_ds = Some((ds, space));
        }
    }
    if let Some((ds, space)) = &bw_ds {
        if let Some(c) = filtered_sweep(ds, *space, &args) {
            println!("\nThe graph walk first beats the scan at an allow-list of {c} vectors.");
        }
    }
    if let Some((ds, space)) = bw_ds {
        let bytes = ds.base.len() * ds.base.dim * 4;
        if bytes < 128 << 20 {
            println!(
                "\nBrute-force scan: skipped ({} is {} MiB, small enough to sit in cache, so a share of memory bandwidth would mean nothing; Fashion-MNIST is 180 MiB)",
                ds.name,
                bytes >> 20
            );
        } else {
            let mem = memory_bandwidth();
            let scan = flat_scan_bandwidth(&ds, space);
            println!(
                "\nBrute-force scan ({}, 1 thread): {:.2} GB/s of vectors; memory read bandwidth {:.2} GB/s; share {:.0}%",
                ds.name,
                scan / 1e9,
                mem / 1e9,
                100.0 * scan / mem
            );
        }
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&all).unwrap()).unwrap();
    }
}
