//! Embedded Indigo against Chroma's embedded mode (`chromadb.PersistentClient`),
//! side by side in one run on wordnet-minilm-10k: acknowledged records/s, time
//! until everything is indexed, query p50/p99 with recall@10, filtered query p50
//! at 10% selectivity, resident memory. Then an ingest of many records (wordnet
//! vectors cycled with small noise) in batches of 1000, comparing the rate of the
//! last 10% with the first 10%.
//!
//! Each engine runs in its own process (this program re-executes itself for
//! Indigo's part), so resident memory is comparable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use indigo::{Batch, Indigo, QueryRequest, Selection, Where};
use indigo_bench::data::{self, Vectors};
use indigo_bench::{header, progress, quantile, row};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Records in the scale (drift) test; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    scale: usize,
    /// Queries per latency measurement.
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// Skip Chroma.
    #[arg(long)]
    no_peers: bool,
    /// Also write every figure (and the query latencies) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run Indigo's part in this process and print JSON.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: run the scale test in this process and print JSON.
    #[arg(long, hide = true)]
    scale_child: bool,
}

struct Corpus {
    base: Vectors,
    queries: Vectors,
    truth: Vec<Vec<u32>>,
    ids: Vec<String>,
    docs: Vec<String>,
    metas: Vec<Value>,
}

fn corpus(nq: usize) -> Corpus {
    let ds = data::wordnet().expect("read wordnet-minilm-10k (set INDIGO_DATA_DIR)");
    let (mut ids, mut docs, mut metas) = (Vec::new(), Vec::new(), Vec::new());
    let records = data::wordnet_dir().map(|d| std::fs::read_to_string(d.join("base.jsonl")));
    match records {
        Some(Ok(text)) => {
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                ids.push(v["id"].as_str().unwrap().to_string());
                docs.push(v["document"].as_str().unwrap().to_string());
                metas.push(v["metadata"].clone());
            }
        }
        // The repository's fixture has vectors only: stand-in records, as
        // bench/peers/vecs.py makes for the peer (`bucket` as in the original).
        _ => {
            for i in 0..ds.base.len() {
                ids.push(format!("wn{i}"));
                docs.push(format!("wordnet gloss {i}"));
                metas.push(serde_json::json!({"bucket": i % 10, "n_words": 3}));
            }
        }
    }
    let dim = ds.queries.dim;
    Corpus {
        queries: Vectors {
            dim,
            data: ds.queries.data[..nq.min(ds.queries.len()) * dim].to_vec(),
        },
        truth: ds.truth.into_iter().take(nq).collect(),
        base: ds.base,
        ids,
        docs,
        metas,
    }
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn wait_indexed(c: &indigo::Collection) {
    loop {
        let (applied, head) = c.fold_progress();
        if applied >= head {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Indigo's part of the comparison, in a fresh process.
fn indigo_child(nq: usize) -> Value {
    let cp = corpus(nq);
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open(dir.path()).unwrap();
    let c = db
        .create_collection(
            "default_tenant",
            "default_database",
            "bench",
            None,
            Some(json!({"hnsw": {"space": "cosine"}})),
        )
        .unwrap();
    let n = cp.base.len();
    let t0 = Instant::now();
    for i in (0..n).step_by(1000) {
        let end = (i + 1000).min(n);
        let batch = Batch::new(
            cp.ids[i..end].to_vec(),
            (i..end).map(|r| cp.base.row(r).to_vec()).collect(),
        )
        .documents(cp.docs[i..end].iter().map(|d| Some(d.clone())).collect())
        .metadatas_json(cp.metas[i..end].to_vec())
        .unwrap();
        c.add(batch).unwrap();
    }
    let acked = t0.elapsed();
    wait_indexed(&c);
    let indexed = t0.elapsed();
    assert_eq!(c.count().unwrap() as usize, n);

    let mut lat = Vec::new();
    let mut hits = 0;
    for (qi, t) in cp.truth.iter().enumerate() {
        let req = QueryRequest::new(vec![cp.queries.row(qi).to_vec()], 10);
        let s = Instant::now();
        let r = c.query(&req).unwrap();
        lat.push(s.elapsed());
        let got: Vec<u32> = r[0].ids.iter().map(|i| i[2..].parse().unwrap()).collect();
        hits += t[..10].iter().filter(|x| got.contains(x)).count();
    }
    let mut flat = Vec::new();
    let filter = Selection {
        where_: Some(Where::parse(&json!({"bucket": 3})).unwrap()),
        ..Default::default()
    };
    for qi in 0..cp.truth.len() {
        let mut req = QueryRequest::new(vec![cp.queries.row(qi).to_vec()], 10);
        req.selection = filter.clone();
        let s = Instant::now();
        let r = c.query(&req).unwrap();
        flat.push(s.elapsed());
        assert_eq!(r[0].ids.len(), 10);
    }
    let latencies: Vec<f64> = lat.iter().map(|d| d.as_secs_f64()).collect();
    json!({
        "engine": "indigo",
        "latencies": latencies,
        "records": n,
        "ack_seconds": acked.as_secs_f64(),
        "indexed_seconds": indexed.as_secs_f64(),
        "query_p50": quantile(&mut lat, 0.5).as_secs_f64(),
        "query_p99": quantile(&mut lat, 0.99).as_secs_f64(),
        "recall10": hits as f64 / (10 * cp.truth.len()) as f64,
        "filtered_p50": quantile(&mut flat, 0.5).as_secs_f64(),
        "rss_bytes": rss_bytes(),
    })
}

/// The scale test: `n` records in batches of 1000; per-batch acknowledgement times.
fn scale_child(n: usize) -> Value {
    let ds = data::wordnet().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open_with(
        dir.path(),
        indigo::Options {
            // An experiment switch: ingest alone, with nothing folding the log.
            background_compaction: std::env::var("INDIGO_BENCH_NO_COMPACTION").is_err(),
            ..Default::default()
        },
    )
    .unwrap();
    let c = db
        .create_collection(
            "default_tenant",
            "default_database",
            "scale",
            None,
            Some(json!({"hnsw": {"space": "cosine"}})),
        )
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let batches = n / 1000;
    let pb = progress(batches as u64, "scale ingest");
    let mut times = Vec::with_capacity(batches);
    let t0 = Instant::now();
    for b in 0..batches {
        let ids: Vec<String> = (0..1000).map(|i| format!("s{}", b * 1000 + i)).collect();
        let embs: Vec<Vec<f32>> = (0..1000)
            .map(|i| {
                let r = ds.base.row((b * 1000 + i) % ds.base.len());
                r.iter()
                    .map(|x| x + rng.gen_range(-0.01f32..0.01))
                    .collect()
            })
            .collect();
        let metas = (0..1000)
            .map(|i| json!({"bucket": (b * 1000 + i) % 10}))
            .collect();
        let batch = Batch::new(ids, embs).metadatas_json(metas).unwrap();
        let s = Instant::now();
        c.add(batch).unwrap();
        times.push(s.elapsed().as_secs_f64());
        pb.inc(1);
    }
    pb.finish_and_clear();
    let acked = t0.elapsed().as_secs_f64();
    let tenth = (batches / 10).max(1);
    let first: f64 = times[..tenth].iter().sum();
    let last: f64 = times[batches - tenth..].iter().sum();
    let (applied, head) = c.fold_progress();
    let deciles: Vec<f64> = times
        .chunks(tenth)
        .map(|c| (c.len() * 1000) as f64 / c.iter().sum::<f64>())
        .collect();
    json!({
        "deciles": deciles,
        "records": batches * 1000,
        "ack_seconds": acked,
        "first_rate": (tenth * 1000) as f64 / first,
        "last_rate": (tenth * 1000) as f64 / last,
        "indexed_fraction_at_end": applied as f64 / head.max(1) as f64,
        "rss_bytes": rss_bytes(),
    })
}

fn run_self(flag: &str, extra: &[String]) -> Value {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .arg(flag)
        .args(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{flag} failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/.venv/bin/python")
}

fn chroma(nq: usize) -> Option<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers/chroma_embedded.py");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(venv_python())
        .arg(script)
        // A directory without base.fvecs makes the peer use the fixture too.
        .arg(data::wordnet_dir().unwrap_or_else(|| "fixture".into()))
        .arg(dir.path())
        .arg(nq.to_string())
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).ok(),
        _ => {
            eprintln!(
                "chroma did not run; install it with bench/run (bench/.venv with chromadb==1.5.9)"
            );
            None
        }
    }
}

fn ms(v: &Value) -> String {
    format!("{:.3} ms", v.as_f64().unwrap() * 1e3)
}

fn main() {
    let args = Args::parse();
    if args.child {
        println!("{}", indigo_child(args.queries));
        return;
    }
    if args.scale_child {
        println!("{}", scale_child(args.scale));
        return;
    }
    eprintln!("running Indigo embedded ...");
    let ind = run_self("--child", &["--queries".into(), args.queries.to_string()]);
    let chr = if args.no_peers {
        None
    } else {
        eprintln!("running Chroma PersistentClient ...");
        chroma(args.queries)
    };
    let n = ind["records"].as_f64().unwrap();
    println!("## Embedded: Indigo vs Chroma PersistentClient (wordnet-minilm-10k, 10k x 384, cosine, batches of 1000 with documents and metadata)\n");
    let mut cols = vec!["Indigo"];
    if chr.is_some() {
        cols.extend(["Chroma 1.5.9", "Indigo / Chroma"]);
    }
    header("figure", &cols);
    let line = |label: &str, ind_s: String, chr_s: Option<(String, f64)>| {
        let mut c = vec![ind_s];
        if let Some((s, ratio)) = chr_s {
            c.push(s);
            c.push(format!("{ratio:.2}x"));
        }
        row(label, &c);
    };
    let rate = |v: &Value| n / v["ack_seconds"].as_f64().unwrap();
    line(
        "acknowledged records/s",
        format!("{:.0}", rate(&ind)),
        chr.as_ref()
            .map(|c| (format!("{:.0}", rate(c)), rate(&ind) / rate(c))),
    );
    for (label, key) in [
        ("time until all indexed", "indexed_seconds"),
        ("query p50 (k=10)", "query_p50"),
        ("query p99 (k=10)", "query_p99"),
        ("filtered query p50 (10% match)", "filtered_p50"),
    ] {
        line(
            label,
            ms(&ind[key]),
            chr.as_ref().map(|c| {
                (
                    ms(&c[key]),
                    ind[key].as_f64().unwrap() / c[key].as_f64().unwrap(),
                )
            }),
        );
    }
    line(
        "recall@10",
        format!("{:.3}", ind["recall10"].as_f64().unwrap()),
        chr.as_ref().map(|c| {
            (
                format!("{:.3}", c["recall10"].as_f64().unwrap()),
                ind["recall10"].as_f64().unwrap() / c["recall10"].as_f64().unwrap(),
            )
        }),
    );
    let mb = |v: &Value| v["rss_bytes"].as_f64().unwrap() / (1 << 20) as f64;
    line(
        "resident memory",
        format!("{:.0} MiB", mb(&ind)),
        chr.as_ref()
            .map(|c| (format!("{:.0} MiB", mb(c)), mb(&ind) / mb(c))),
    );
    println!(
        "\nfiltered p50 / unfiltered p50 (Indigo): {:.2}x",
        ind["filtered_p50"].as_f64().unwrap() / ind["query_p50"].as_f64().unwrap()
    );
    if let Some(c) = &chr {
        println!("targets: ingest >= 10x Chroma: {}; time-to-indexed <= 0.5x: {}; query p50 <= 0.5x: {}; filtered p50 <= 2x own unfiltered: {}",
            met(rate(&ind) / rate(c) >= 10.0),
            met(ind["indexed_seconds"].as_f64().unwrap() <= 0.5 * c["indexed_seconds"].as_f64().unwrap()),
            met(ind["query_p50"].as_f64().unwrap() <= 0.5 * c["query_p50"].as_f64().unwrap()),
            met(ind["filtered_p50"].as_f64().unwrap() <= 2.0 * ind["query_p50"].as_f64().unwrap()),
        );
    }
    let mut scale = Value::Null;
    if args.scale > 0 {
        eprintln!("running the scale test ({} records) ...", args.scale);
        let s = run_self("--scale-child", &["--scale".into(), args.scale.to_string()]);
        scale = s.clone();
        let ratio = s["last_rate"].as_f64().unwrap() / s["first_rate"].as_f64().unwrap();
        println!(
            "\n## Ingest at scale: {} records (wordnet vectors cycled with noise), batches of 1000\n",
            s["records"]
        );
        println!(
            "acknowledged: {:.0} records/s overall; first 10%: {:.0}/s; last 10%: {:.0}/s; last/first {:.2} (target >= 0.7: {}); indexed when the last batch was acknowledged: {:.0}%; RSS {:.0} MiB",
            s["records"].as_f64().unwrap() / s["ack_seconds"].as_f64().unwrap(),
            s["first_rate"].as_f64().unwrap(),
            s["last_rate"].as_f64().unwrap(),
            ratio,
            met(ratio >= 0.7),
            s["indexed_fraction_at_end"].as_f64().unwrap() * 100.0,
            mb(&s),
        );
        let d: Vec<String> = s["deciles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{:.0}", x.as_f64().unwrap()))
            .collect();
        println!("rate by tenth of the ingest (records/s): {}", d.join(", "));
    }
    if let Some(p) = &args.json {
        let all = json!({"indigo": ind, "chroma": chr, "scale": scale});
        std::fs::write(p, serde_json::to_string(&all).unwrap()).unwrap();
    }
}

fn met(b: bool) -> &'static str {
    if b {
        "met"
    } else {
        "NOT met"
    }
}
