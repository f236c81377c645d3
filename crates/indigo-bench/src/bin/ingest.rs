//! Time until searchable: embedded Indigo's ingest pipeline (log → compactor →
//! store + HNSW) against the raw build of the same graph on the same cores
//! (Indigo's own `Hnsw`, and hnswlib / faiss through `bench/peers/ann.py` when
//! `bench/.venv` has them). Prints acknowledged rate, time until every record is
//! indexed, query p50/p99 right after the last add (backlog) and once indexed with
//! recall@10, and filtered recall@10 and p50 at 1%, 10% and 50% selectivity.
//!
//! Data: wordnet-minilm-10k vectors grown to `--records` by interpolating between
//! each gloss and one of its 10 nearest (cosine; `wordnet-noise`: the older noisy
//! copies, whose near-ties make recall meaningless at 500k), or Fashion-MNIST
//! (60k × 784, L2; Debian's `dataset-fashion-mnist`).
//!
//! The pipeline's figure includes what the raw build does not: the log's fsyncs,
//! store writes of records and postings, checkpoints.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use indigo::{Batch, Indigo, QueryRequest, Selection, Where};
use indigo_bench::data::{self, Vectors};
use indigo_bench::{header, progress, quantile, row};
use indigo_index::{Hnsw, HnswParams, Space};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use simsimd::SpatialSimilarity;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// `wordnet` (interpolated to --records, cosine), `wordnet-noise` (cycled with
    /// noise) or `fashion` (60k, L2).
    #[arg(long, default_value = "wordnet")]
    dataset: String,
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Threads of the raw builds (Indigo's compactor uses what it uses).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Skip the raw builds (Indigo's and the peers').
    #[arg(long)]
    no_raw: bool,
    /// Skip hnswlib and faiss.
    #[arg(long)]
    no_peers: bool,
    /// Only: build the raw index and sweep filtered search at 1/2/5/10/20/30/50%
    /// (exact scan, as served, each ef with the scan off, and the ordinary walk
    /// with the filter on its results), for tuning the filtered walk.
    #[arg(long)]
    filter_sweep: bool,
    /// Give each record a document (WordNet glosses from `testdata`, cycled), as
    /// the Python benchmarks do: their trigram postings are indexed too.
    #[arg(long)]
    documents: bool,
    /// Build the collection in this directory and keep it (default: a
    /// temporary one); `examples/restart.rs` reopens it.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Stop before the restart (leaving --data-dir as the ingest left it).
    #[arg(long)]
    no_restart: bool,
    /// The backlog bound (records; default: Indigo's).
    #[arg(long)]
    backlog_records: Option<u64>,
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Set {
    name: String,
    space: Space,
    base: Vectors,
    queries: Vectors,
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

fn load(args: &Args) -> Set {
    if args.dataset == "fashion" {
        let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/cache");
        let (ds, _) = data::fashion(&cache, args.queries)
            .expect("read Fashion-MNIST: install Debian's dataset-fashion-mnist (bench/run does)");
        return Set {
            name: ds.name,
            space: Space::L2,
            base: ds.base,
            queries: ds.queries,
        };
    }
    let ds = data::wordnet().expect("read wordnet-minilm-10k (set INDIGO_DATA_DIR)");
    let dim = ds.base.dim;
    let n0 = ds.base.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let noisy = args.dataset == "wordnet-noise";
    let mut originals = ds.base.data.clone();
    originals.chunks_mut(dim).for_each(normalise);
    // Each gloss's 10 nearest glosses (the segments new points lie on), as
    // bench/ingest.py's load_interpolated.
    let near: Vec<Vec<u32>> = if noisy || args.records <= n0 {
        Vec::new()
    } else {
        let row = |i: usize| &originals[i * dim..(i + 1) * dim];
        (0..n0)
            .map(|i| {
                let mut top: Vec<(f32, u32)> = Vec::with_capacity(n0);
                for j in (0..n0).filter(|&j| j != i) {
                    let d = f32::dot(row(i), row(j)).unwrap() as f32;
                    top.push((-d, j as u32));
                }
                top.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
                top[..10].iter().map(|t| t.1).collect()
            })
            .collect()
    };
    let mut base = Vec::with_capacity(args.records * dim);
    for i in 0..args.records {
        let o = i % n0;
        let mut r: Vec<f32> = originals[o * dim..(o + 1) * dim].to_vec();
        if i >= n0 && noisy {
            r.iter_mut()
                .for_each(|x| *x += rng.gen_range(-0.02f32..0.02));
        } else if i >= n0 {
            let j = near[o][rng.gen_range(0..10)] as usize;
            let t: f32 = rng.gen_range(0.0..1.0);
            let other = &originals[j * dim..(j + 1) * dim];
            r.iter_mut()
                .zip(other)
                .for_each(|(x, y)| *x += t * (y - *x));
        }
        normalise(&mut r);
        base.extend(r);
    }
    let nq = args.queries.min(ds.queries.len());
    let mut queries = ds.queries.data[..nq * dim].to_vec();
    queries.chunks_mut(dim).for_each(normalise);
    Set {
        name: format!(
            "wordnet-{}-{}k-384",
            if noisy { "cycled" } else { "interpolated" },
            args.records / 1000
        ),
        space: Space::Cosine,
        base: Vectors { dim, data: base },
        queries: Vectors { dim, data: queries },
    }
}

/// The bucket of record `i`: `bucket < p` selects p% of the records.
fn bucket(i: usize) -> i64 {
    ((i * 7919) % 100) as i64
}

/// Exact top-10 among records with `bucket < pct` (all when pct = 100).
fn exact(set: &Set, pct: i64) -> Vec<Vec<u32>> {
    let allowed: Vec<u32> = (0..set.base.len())
        .filter(|&i| bucket(i) < pct)
        .map(|i| i as u32)
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(vec![Vec::new(); set.queries.len()]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let qi = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if qi >= set.queries.len() {
                    break;
                }
                let q = set.queries.row(qi);
                let mut d: Vec<(f64, u32)> = allowed
                    .iter()
                    .map(|&i| (f32::sqeuclidean(q, set.base.row(i as usize)).unwrap(), i))
                    .collect();
                let k = 10.min(d.len());
                if k < d.len() {
                    d.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
                }
                d.truncate(k);
                out.lock().unwrap()[qi] = d.into_iter().map(|x| x.1).collect();
            });
        }
    });
    out.into_inner().unwrap()
}

fn params(set: &Set) -> HnswParams {
    let mut p = HnswParams::new(set.space, set.base.dim);
    p.max_neighbors = 16;
    p.ef_construction = 100;
    p
}

fn raw_build(set: &Set, threads: usize, persistent: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let idx = if persistent {
        Hnsw::open(dir.path(), params(set)).unwrap()
    } else {
        Hnsw::new(params(set))
    };
    let items: Vec<(u32, &[f32])> = (0..set.base.len())
        .map(|i| (i as u32, set.base.row(i)))
        .collect();
    let t = Instant::now();
    let chunk: usize = std::env::var("RAW_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(items.len());
    for c in items.chunks(chunk) {
        idx.insert_parallel(c, threads).unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// hnswlib's and faiss's build times of the same graph (M=16, ef_construction=100).
fn peers(set: &Set, threads: usize) -> Vec<(String, f64)> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/.venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers/ann.py");
    let dir = tempfile::tempdir().unwrap();
    let f = |n: &str| dir.path().join(n);
    data::write_fvecs(&f("base.fvecs"), &set.base).unwrap();
    data::write_fvecs(&f("q.fvecs"), &set.queries).unwrap();
    let truth: Vec<Vec<u32>> = (0..set.queries.len()).map(|_| vec![0; 10]).collect();
    data::write_ivecs(&f("t.ivecs"), &truth).unwrap();
    let space = if set.space == Space::L2 {
        "l2"
    } else {
        "cosine"
    };
    let out = Command::new(py)
        .arg(script)
        .args([f("base.fvecs"), f("q.fvecs"), f("t.ivecs")])
        .args([space, "16", "100", &threads.to_string(), "64", "1"])
        .stderr(std::process::Stdio::inherit())
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        eprintln!("hnswlib/faiss did not run; bench/run sets up bench/.venv with them");
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["name"].as_str()?.to_string(), v["build_s"].as_f64()?)))
        .collect()
}

fn recall(got: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    let mut hits = 0;
    let mut want = 0;
    for (g, t) in got.iter().zip(truth) {
        want += t.len();
        hits += t.iter().filter(|x| g.contains(x)).count();
    }
    hits as f64 / want.max(1) as f64
}

/// Runs every query (with an optional `bucket < pct` filter); returns latencies
/// and the internal ids answered.
fn run_queries(
    c: &indigo::Collection,
    set: &Set,
    pct: Option<i64>,
) -> (Vec<Duration>, Vec<Vec<u32>>) {
    let mut lat = Vec::new();
    let mut got = Vec::new();
    for qi in 0..set.queries.len() {
        let mut req = QueryRequest::new(vec![set.queries.row(qi).to_vec()], 10);
        if let Some(p) = pct {
            req.selection = Selection {
                where_: Some(Where::parse(&json!({"bucket": {"$lt": p}})).unwrap()),
                ..Default::default()
            };
        }
        let s = Instant::now();
        let r = c.query(&req).unwrap();
        lat.push(s.elapsed());
        got.push(r[0].ids.iter().map(|i| i[1..].parse().unwrap()).collect());
    }
    (lat, got)
}

fn main() {
    let args = Args::parse();
    let set = load(&args);
    let n = set.base.len();
    eprintln!(
        "{}: {n} × {}, {} queries",
        set.name,
        set.base.dim,
        set.queries.len()
    );
    let mut out = json!({"dataset": set.name, "records": n});

    eprintln!("exact ground truth ...");
    let pcts: &[i64] = if args.filter_sweep {
        &[100, 1, 2, 5, 10, 20, 30, 50]
    } else {
        &[100, 1, 10, 50]
    };
    let truth: Vec<(i64, Vec<Vec<u32>>)> = pcts.iter().map(|&p| (p, exact(&set, p))).collect();

    if args.filter_sweep {
        filter_sweep(&set, &truth, args.threads);
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let dir_path = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut backlog = indigo::BacklogLimit::default();
    if let Some(r) = args.backlog_records {
        backlog.records = r;
    }
    let db = Indigo::open_with(
        &dir_path,
        indigo::Options {
            backlog,
            ..Default::default()
        },
    )
    .unwrap();
    let space = if set.space == Space::L2 {
        "l2"
    } else {
        "cosine"
    };
    let c = db
        .create_collection(
            "default_tenant",
            "default_database",
            "ingest",
            None,
            Some(json!({"hnsw": {"space": space, "max_neighbors": 16, "ef_construction": 100}})),
        )
        .unwrap();
    let glosses: Vec<String> = if args.documents {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wordnet/glosses.txt"),
        )
        .expect("read testdata/wordnet/glosses.txt")
        .lines()
        .map(str::to_owned)
        .collect()
    } else {
        Vec::new()
    };
    let pb = progress(n.div_ceil(args.batch) as u64, "indigo add");
    let t0 = Instant::now();
    for i in (0..n).step_by(args.batch) {
        let end = (i + args.batch).min(n);
        let batch = Batch::new(
            (i..end).map(|r| format!("r{r}")).collect(),
            (i..end).map(|r| set.base.row(r).to_vec()).collect(),
        )
        .metadatas_json((i..end).map(|r| json!({"bucket": bucket(r)})).collect())
        .unwrap();
        let batch = if glosses.is_empty() {
            batch
        } else {
            batch.documents(
                (i..end)
                    .map(|r| Some(glosses[r % glosses.len()].clone()))
                    .collect(),
            )
        };
        c.add(batch).unwrap();
        pb.inc(1);
    }
    pb.finish_and_clear();
    let acked = t0.elapsed().as_secs_f64();
    let (applied, head) = c.fold_progress();
    // Queries while the backlog is folded (at most 50, so the backlog is still there).
    let mut during = Vec::new();
    for qi in 0..set.queries.len().min(50) {
        let req = QueryRequest::new(vec![set.queries.row(qi).to_vec()], 10);
        let s = Instant::now();
        c.query(&req).unwrap();
        during.push(s.elapsed());
    }
    let during_p50 = quantile(&mut during, 0.5).as_secs_f64();
    let pb = progress(head, "indigo indexing (log entries)");
    loop {
        let (a, h) = c.fold_progress();
        pb.set_position(a);
        if a >= h {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    pb.finish_and_clear();
    let indexed = t0.elapsed().as_secs_f64();
    eprintln!("indexed in {indexed:.1} s (acknowledged in {acked:.1} s)");
    let (mut lat, got) = run_queries(&c, &set, None);
    let r_all = recall(&got, &truth[0].1);
    let mut filtered = Vec::new();
    for (p, t) in &truth[1..] {
        let (mut l, g) = run_queries(&c, &set, Some(*p));
        let exactly_k = g.iter().zip(t).all(|(g, t)| g.len() == t.len());
        filtered.push(json!({
            "pct": p, "p50": quantile(&mut l, 0.5).as_secs_f64(),
            "recall10": recall(&g, t), "exactly_k": exactly_k,
        }));
    }
    out["indigo"] = json!({
        "ack_seconds": acked,
        "indexed_seconds": indexed,
        "indexed_fraction_at_ack": applied as f64 / head.max(1) as f64,
        "backlog_p50": during_p50,
        "query_p50": quantile(&mut lat, 0.5).as_secs_f64(),
        "query_p99": quantile(&mut lat, 0.99).as_secs_f64(),
        "recall10": r_all,
        "filtered": filtered,
    });
    drop(c);
    drop(db);
    if args.no_restart {
        return;
    }
    // Restart: a fresh open of the same directory, then the first query.
    let t = Instant::now();
    let db = Indigo::open(&dir_path).unwrap();
    let opened = t.elapsed().as_secs_f64();
    let c = db
        .get_collection("default_tenant", "default_database", "ingest")
        .unwrap();
    c.query(&QueryRequest::new(vec![set.queries.row(0).to_vec()], 10))
        .unwrap();
    out["indigo"]["restart_open_seconds"] = json!(opened);
    out["indigo"]["restart_first_query_seconds"] = json!(t.elapsed().as_secs_f64());
    out["indigo"]["disk_bytes"] = json!(indigo_bench::dir_bytes(&dir_path));
    drop(c);
    drop(db);

    if !args.no_raw {
        eprintln!("raw build, Indigo's Hnsw on {} threads ...", args.threads);
        out["raw_indigo_seconds"] = json!(raw_build(&set, args.threads, false));
        out["raw_indigo_persistent_seconds"] = json!(raw_build(&set, args.threads, true));
        if !args.no_peers {
            eprintln!(
                "raw build, hnswlib and faiss on {} threads ...",
                args.threads
            );
            for (lib, s) in peers(&set, args.threads) {
                out[format!("raw_{lib}_seconds")] = json!(s);
            }
        }
    }

    let ind = &out["indigo"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "\n### Time until searchable: {} ({n} records, batches of {})\n",
        set.name, args.batch
    );
    header("figure", &["value"]);
    row(
        "acknowledged rate",
        &[format!("{:.0} rec/s", n as f64 / f(&ind["ack_seconds"]))],
    );
    row(
        "indexed when the last add returned",
        &[format!(
            "{:.0}%",
            100.0 * f(&ind["indexed_fraction_at_ack"])
        )],
    );
    row(
        "time until all indexed (pipeline)",
        &[format!("{:.1} s", f(&ind["indexed_seconds"]))],
    );
    for lib in ["indigo", "indigo_persistent", "hnswlib", "faiss"] {
        let v = &out[format!("raw_{lib}_seconds")];
        if v.is_number() {
            row(
                &format!("raw HNSW build, {lib} ({} threads)", args.threads),
                &[format!(
                    "{:.1} s ({:.2}×)",
                    f(v),
                    f(&ind["indexed_seconds"]) / f(v)
                )],
            );
        }
    }
    row(
        "query p50 during the backlog",
        &[format!("{:.2} ms", 1e3 * f(&ind["backlog_p50"]))],
    );
    row(
        "query p50 / p99 indexed",
        &[format!(
            "{:.2} / {:.2} ms",
            1e3 * f(&ind["query_p50"]),
            1e3 * f(&ind["query_p99"])
        )],
    );
    row("recall@10", &[format!("{:.3}", f(&ind["recall10"]))]);
    row(
        "restart: open / first query answered",
        &[format!(
            "{:.2} / {:.2} s",
            f(&ind["restart_open_seconds"]),
            f(&ind["restart_first_query_seconds"])
        )],
    );
    row(
        "data directory",
        &[indigo_bench::mib(ind["disk_bytes"].as_u64().unwrap_or(0))],
    );
    for fl in ind["filtered"].as_array().unwrap() {
        row(
            &format!("filtered {}%: p50, recall@10", fl["pct"]),
            &[format!(
                "{:.2} ms, {:.3}{}",
                1e3 * f(&fl["p50"]),
                f(&fl["recall10"]),
                if fl["exactly_k"].as_bool() == Some(true) {
                    ""
                } else {
                    " (<k)"
                }
            )],
        );
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    }
}

fn filter_sweep(set: &Set, truth: &[(i64, Vec<Vec<u32>>)], threads: usize) {
    let idx = Hnsw::new(params(set));
    let items: Vec<(u32, &[f32])> = (0..set.base.len())
        .map(|i| (i as u32, set.base.row(i)))
        .collect();
    idx.insert_parallel(&items, threads).unwrap();
    for (pct, t) in truth {
        let allow: indigo_index::RoaringBitmap = (0..set.base.len() as u32)
            .filter(|&i| bucket(i as usize) < *pct)
            .collect();
        if *pct < 100 {
            idx.set_flat_cutoff(usize::MAX);
            sweep_line(set, t, &format!("{pct:>3}% exact scan"), |q| {
                idx.search(q, 10, Some(&allow)).unwrap()
            });
            // What a query gets: the default ef and cut-off.
            let served = HnswParams::new(set.space, set.base.dim);
            idx.set_ef_search(served.ef_search);
            idx.set_flat_cutoff(served.flat_cutoff);
            sweep_line(set, t, &format!("{pct:>3}% as served"), |q| {
                idx.search(q, 10, Some(&allow)).unwrap()
            });
        }
        for ef in [64, 100, 200, 400, 800] {
            idx.set_ef_search(ef);
            idx.set_flat_cutoff(if *pct == 100 { usize::MAX } else { 0 });
            let a = (*pct < 100).then_some(&allow);
            sweep_line(set, t, &format!("{pct:>3}% ef {ef:>4}"), |q| {
                idx.search(q, 10, a).unwrap()
            });
            if *pct >= 2 && *pct < 100 {
                sweep_line(
                    set,
                    t,
                    &format!("{pct:>3}% ef {ef:>4} (walk, filter on results)"),
                    |q| idx.search_where(q, 10, |l| allow.contains(l)).unwrap(),
                );
            }
        }
    }
}

/// Runs every query through `search`; prints recall@10 and p50 after `label`.
fn sweep_line(
    set: &Set,
    truth: &[Vec<u32>],
    label: &str,
    search: impl Fn(&[f32]) -> Vec<indigo_index::Neighbor>,
) {
    let mut lat = Vec::new();
    let mut got = Vec::new();
    for qi in 0..set.queries.len() {
        let s = Instant::now();
        let r = search(set.queries.row(qi));
        lat.push(s.elapsed());
        got.push(r.into_iter().map(|n| n.label).collect::<Vec<u32>>());
    }
    println!(
        "{label}: recall@10 {:.3}, p50 {:.2} ms",
        recall(&got, truth),
        quantile(&mut lat, 0.5).as_secs_f64() * 1e3
    );
}
