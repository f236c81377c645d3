//! Storage-engine benchmark: Indigo's LSM store against SQLite (WAL mode) and fjall,
//! the same workload side by side in one run.
//!
//! cargo run --release -p indigo-bench --bin storage -- [--keys 10000000]

/// mimalloc for every engine in this process (SQLite's C code keeps its own).
/// With glibc malloc, the flush thread's frees of a flushed memtable's entries
/// contend with the writer's allocations (glibc arenas lock on cross-thread frees),
/// costing Indigo about a third of its ingest rate; Indigo's own binaries use
/// mimalloc for the same reason.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use indigo_bench::{dir_bytes, header, mib, progress, quantile, row};
use indigo_storage::{Options, Store, Strategy, WriteBatch, WriteOptions};
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// Keys to insert.
    #[arg(long, default_value_t = 10_000_000)]
    keys: u64,
    /// Keys per batch.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Point reads (half hits, half misses).
    #[arg(long, default_value_t = 200_000)]
    reads: u64,
    /// Where to put the data (a fresh temporary directory inside it).
    #[arg(long, default_value = "target/bench-data")]
    dir: String,
    /// Engines to run, in order (the first is the one ratios are taken of).
    #[arg(long, default_value = "indigo,sqlite,fjall")]
    engines: String,
}

const VALUE_LEN: usize = 100;

fn key(i: u64) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()).to_be_bytes()
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_LEN];
    v[..8].copy_from_slice(&i.to_le_bytes());
    for (j, b) in v.iter_mut().enumerate().skip(8) {
        *b = (i as u8).wrapping_add(j as u8);
    }
    v
}

/// The operations every engine implements for this workload.
trait Engine {
    fn name(&self) -> &'static str;
    fn insert_batch(&mut self, keys: &[[u8; 16]], values: &[Vec<u8>]);
    fn delete_batch(&mut self, keys: &[[u8; 16]]);
    /// Makes everything durable.
    fn sync(&mut self);
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>>;
    fn scan_count(&mut self, lo: &[u8], hi: &[u8]) -> usize;
    /// Reclaims the space of deleted data (merge / vacuum / major compaction).
    fn reclaim(&mut self);
    /// (bloom negatives, segment probes, block reads, segments) so far.
    fn bloom(&self) -> Option<(u64, u64, u64, usize)> {
        None
    }
}

struct Indigo {
    store: Store,
    bucket: indigo_storage::Bucket,
}

impl Engine for Indigo {
    fn name(&self) -> &'static str {
        "indigo"
    }
    fn insert_batch(&mut self, keys: &[[u8; 16]], values: &[Vec<u8>]) {
        let mut wb = WriteBatch::new();
        for (k, v) in keys.iter().zip(values) {
            wb.put(&self.bucket, k.to_vec(), v.clone());
        }
        self.store.write(&wb, WriteOptions::default()).unwrap();
    }
    fn delete_batch(&mut self, keys: &[[u8; 16]]) {
        let mut wb = WriteBatch::new();
        for k in keys {
            wb.delete(&self.bucket, k.to_vec());
        }
        self.store.write(&wb, WriteOptions::default()).unwrap();
    }
    fn sync(&mut self) {
        self.store.sync().unwrap();
    }
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.get(&self.bucket, key).unwrap()
    }
    fn scan_count(&mut self, lo: &[u8], hi: &[u8]) -> usize {
        let rows = self
            .store
            .scan(&self.bucket, Bound::Included(lo), Bound::Excluded(hi))
            .unwrap();
        rows.iter().filter(|(_, v)| !v.is_empty()).count()
    }
    fn reclaim(&mut self) {
        self.store.compact().unwrap();
    }
    fn bloom(&self) -> Option<(u64, u64, u64, usize)> {
        let s = self.store.stats();
        Some((
            s.bloom_negatives,
            s.segment_probes,
            s.block_reads,
            s.segments,
        ))
    }
}

struct Sqlite {
    conn: rusqlite::Connection,
}

impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn insert_batch(&mut self, keys: &[[u8; 16]], values: &[Vec<u8>]) {
        let tx = self.conn.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)")
                .unwrap();
            for (k, v) in keys.iter().zip(values) {
                st.execute((&k[..], &v[..])).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn delete_batch(&mut self, keys: &[[u8; 16]]) {
        let tx = self.conn.transaction().unwrap();
        {
            let mut st = tx.prepare_cached("DELETE FROM kv WHERE k = ?1").unwrap();
            for k in keys {
                st.execute([&k[..]]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn sync(&mut self) {
        self.conn
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
            .unwrap();
    }
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT v FROM kv WHERE k = ?1")
            .unwrap();
        let mut rows = st.query([key]).unwrap();
        rows.next().unwrap().map(|r| r.get(0).unwrap())
    }
    fn scan_count(&mut self, lo: &[u8], hi: &[u8]) -> usize {
        let mut st = self
            .conn
            .prepare_cached("SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k")
            .unwrap();
        let mut rows = st.query((lo, hi)).unwrap();
        let mut n = 0;
        while let Some(r) = rows.next().unwrap() {
            let v: Vec<u8> = r.get(1).unwrap();
            n += usize::from(!v.is_empty());
        }
        n
    }
    fn reclaim(&mut self) {
        self.conn.execute_batch("VACUUM").unwrap();
        self.sync();
    }
}

struct Fjall {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn insert_batch(&mut self, keys: &[[u8; 16]], values: &[Vec<u8>]) {
        let mut b = self.keyspace.batch();
        for (k, v) in keys.iter().zip(values) {
            b.insert(&self.part, k.to_vec(), v.clone());
        }
        b.commit().unwrap();
    }
    fn delete_batch(&mut self, keys: &[[u8; 16]]) {
        let mut b = self.keyspace.batch();
        for k in keys {
            b.remove(&self.part, k.to_vec());
        }
        b.commit().unwrap();
    }
    fn sync(&mut self) {
        self.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.part.get(key).unwrap().map(|v| v.to_vec())
    }
    fn scan_count(&mut self, lo: &[u8], hi: &[u8]) -> usize {
        let mut n = 0;
        for r in self.part.range(lo.to_vec()..hi.to_vec()) {
            let (_, v) = r.unwrap();
            n += usize::from(!v.is_empty());
        }
        n
    }
    fn reclaim(&mut self) {
        self.part.rotate_memtable_and_wait().unwrap();
        self.part.major_compact().unwrap();
        self.sync();
    }
}

#[derive(Default)]
struct Figures {
    insert_rate: f64,
    drift: f64,
    /// Insert rate (records/s) in each tenth of the run.
    deciles: Vec<f64>,
    hit_p50: Duration,
    hit_p99: Duration,
    miss_p50: Duration,
    miss_p99: Duration,
    reads_per_s: f64,
    scan: Duration,
    scanned: usize,
    bytes_full: u64,
    bytes_after: u64,
    note: Option<String>,
}

fn run(engine: &mut dyn Engine, dir: &Path, args: &Args) -> Figures {
    let mut f = Figures::default();
    let batches = args.keys / args.batch;
    let pb = progress(batches, &format!("{} insert", engine.name()));
    let mut times = Vec::with_capacity(batches as usize);
    let start = Instant::now();
    let mut keys = Vec::with_capacity(args.batch as usize);
    let mut vals = Vec::with_capacity(args.batch as usize);
    for b in 0..batches {
        keys.clear();
        vals.clear();
        for i in b * args.batch..(b + 1) * args.batch {
            keys.push(key(i));
            vals.push(value(i));
        }
        let t = Instant::now();
        engine.insert_batch(&keys, &vals);
        times.push(t.elapsed());
        pb.inc(1);
    }
    engine.sync();
    let total = start.elapsed();
    pb.finish_and_clear();
    f.insert_rate = (batches * args.batch) as f64 / total.as_secs_f64();
    let tenth = (times.len() / 10).max(1);
    let first: Duration = times[..tenth].iter().sum();
    let last: Duration = times[times.len() - tenth..].iter().sum();
    f.drift = first.as_secs_f64() / last.as_secs_f64();
    f.deciles = times
        .chunks(tenth)
        .take(10)
        .map(|c| (c.len() as u64 * args.batch) as f64 / c.iter().sum::<Duration>().as_secs_f64())
        .collect();
    f.bytes_full = dir_bytes(dir);

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let n = args.keys;
    let mut hits = Vec::new();
    let mut misses = Vec::new();
    let pb = progress(args.reads, &format!("{} reads", engine.name()));
    let t0 = Instant::now();
    let mut before_misses = None;
    // First the hits, then the misses, so the bloom counters of the miss phase can
    // be read on their own.
    for r in 0..args.reads {
        let hit = r < args.reads / 2;
        if !hit && before_misses.is_none() {
            before_misses = Some(engine.bloom());
        }
        let i = if hit {
            rng.gen_range(0..n)
        } else {
            n + rng.gen_range(0..n)
        };
        let k = key(i);
        let t = Instant::now();
        let got = engine.get(&k);
        let d = t.elapsed();
        assert_eq!(
            got.is_some(),
            hit,
            "{}: wrong answer for key {i}",
            engine.name()
        );
        if hit {
            assert_eq!(got.unwrap(), value(i));
            hits.push(d);
        } else {
            misses.push(d);
        }
        if r % 1024 == 0 {
            pb.set_position(r);
        }
    }
    f.reads_per_s = args.reads as f64 / t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    f.hit_p50 = quantile(&mut hits, 0.5);
    f.hit_p99 = quantile(&mut hits, 0.99);
    f.miss_p50 = quantile(&mut misses, 0.5);
    f.miss_p99 = quantile(&mut misses, 0.99);
    if let (Some(Some(b)), Some(a)) = (before_misses, engine.bloom()) {
        let (neg, probes, blocks) = (a.0 - b.0, a.1 - b.1, a.2 - b.2);
        f.note = Some(format!(
            "{} segments; misses: {neg} of {probes} segment probes ({:.2}%) answered by the bloom filter, {blocks} block reads for {} missing keys",
            a.3,
            100.0 * neg as f64 / probes.max(1) as f64,
            args.reads - args.reads / 2
        ));
    }

    // A key range holding about 10k of the uniformly spread keys.
    let lo = u128::from_be_bytes(key(7));
    let width = (u128::MAX / u128::from(n)) * 10_000;
    let hi = lo.saturating_add(width);
    let t = Instant::now();
    f.scanned = engine.scan_count(&lo.to_be_bytes(), &hi.to_be_bytes());
    f.scan = t.elapsed();

    let pb = progress(batches / 2, &format!("{} delete half", engine.name()));
    for b in 0..batches / 2 {
        keys.clear();
        for i in (b * 2 * args.batch..(b + 1) * 2 * args.batch).step_by(2) {
            keys.push(key(i));
        }
        engine.delete_batch(&keys);
        pb.inc(1);
    }
    pb.finish_and_clear();
    engine.sync();
    engine.reclaim();
    f.bytes_after = dir_bytes(dir);
    f
}

fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).unwrap();
    let mut results = Vec::new();
    for name in args.engines.split(',').map(str::trim) {
        let tmp = tempfile::tempdir_in(&args.dir).unwrap();
        let dir = tmp.path().to_path_buf();
        let mut engine: Box<dyn Engine> = match name {
            "indigo" => {
                let store = Store::open(&dir, Options::default()).unwrap();
                let bucket = store.bucket("kv", Strategy::Replace).unwrap();
                Box::new(Indigo { store, bucket })
            }
            "sqlite" => {
                let conn = rusqlite::Connection::open(dir.join("kv.sqlite")).unwrap();
                conn.execute_batch(
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
                     CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
                )
                .unwrap();
                Box::new(Sqlite { conn })
            }
            _ => {
                let keyspace = fjall::Config::new(&dir).open().unwrap();
                let part = keyspace
                    .open_partition("kv", fjall::PartitionCreateOptions::default())
                    .unwrap();
                Box::new(Fjall { keyspace, part })
            }
        };
        eprintln!("running {name} ...");
        let f = run(&mut *engine, &dir, &args);
        drop(engine);
        results.push((name, f));
    }

    println!(
        "\n## Storage engine: {} keys (16 B keys, {} B values, batches of {})\n",
        args.keys, VALUE_LEN, args.batch
    );
    let cols: Vec<&str> = results.iter().map(|(n, _)| *n).collect();
    let ratio_names: Vec<String> = cols[1..]
        .iter()
        .map(|c| format!("{}/{c}", cols[0]))
        .collect();
    let mut cols_hdr = cols.clone();
    cols_hdr.extend(ratio_names.iter().map(String::as_str));
    header("figure", &cols_hdr);
    let get =
        |f: &dyn Fn(&Figures) -> f64| -> Vec<f64> { results.iter().map(|(_, r)| f(r)).collect() };
    let ratio_row = |label: &str, v: Vec<f64>, fmt: &dyn Fn(f64) -> String, higher_better: bool| {
        let mut c: Vec<String> = v.iter().map(|x| fmt(*x)).collect();
        for peer in 1..v.len() {
            let r = if higher_better {
                v[0] / v[peer]
            } else {
                v[peer] / v[0]
            };
            c.push(format!("{r:.2}x"));
        }
        row(label, &c);
    };
    ratio_row(
        "insert records/s",
        get(&|f| f.insert_rate),
        &|x| format!("{x:.0}"),
        true,
    );
    ratio_row(
        "insert last10%/first10% rate",
        get(&|f| f.drift),
        &|x| format!("{x:.2}"),
        true,
    );
    let us = |x: f64| format!("{x:.1} µs");
    ratio_row(
        "point read hit p50",
        get(&|f| f.hit_p50.as_secs_f64() * 1e6),
        &us,
        false,
    );
    ratio_row(
        "point read hit p99",
        get(&|f| f.hit_p99.as_secs_f64() * 1e6),
        &us,
        false,
    );
    ratio_row(
        "point read miss p50",
        get(&|f| f.miss_p50.as_secs_f64() * 1e6),
        &us,
        false,
    );
    ratio_row(
        "point read miss p99",
        get(&|f| f.miss_p99.as_secs_f64() * 1e6),
        &us,
        false,
    );
    ratio_row(
        "point reads/s (50% misses)",
        get(&|f| f.reads_per_s),
        &|x| format!("{x:.0}"),
        true,
    );
    ratio_row(
        "range scan ~10k keys",
        get(&|f| f.scan.as_secs_f64() * 1e3),
        &|x| format!("{x:.2} ms"),
        false,
    );
    row(
        "  keys returned by that scan",
        &results
            .iter()
            .map(|(_, f)| f.scanned.to_string())
            .collect::<Vec<_>>(),
    );
    ratio_row(
        "bytes on disk after insert",
        get(&|f| f.bytes_full as f64),
        &|x| mib(x as u64),
        false,
    );
    ratio_row(
        "bytes after deleting half + merge",
        get(&|f| f.bytes_after as f64),
        &|x| mib(x as u64),
        false,
    );
    println!("\ninsert rate by tenth of the run (records/s, writer time only):");
    for (n, f) in &results {
        let d: Vec<String> = f
            .deciles
            .iter()
            .map(|x| format!("{:.0}k", x / 1e3))
            .collect();
        println!("- {n}: {}", d.join(" "));
    }
    for (n, f) in &results {
        if let Some(note) = &f.note {
            println!("\n{n}: {note}");
        }
    }
}
