//! The distributed mode's substrate on an S3-compatible server on loopback:
//!
//! 1. the log on object storage: append latency p50/p99 and throughput with 1, 8
//!    and 64 concurrent writers on one collection, and the PUTs and GETs per 1000
//!    appends (group commit puts many appends in one fragment);
//! 2. index versions: the bytes uploaded per version as a collection grows from
//!    10k to 200k records in steps of 10k (wordnet vectors cycled with noise): a
//!    version uploads what changed, so the figure follows the step, not the
//!    collection, except when the store merges or the index condenses.
//!
//! 3. a fork of that collection (the distributed fork): time, requests and bytes
//!    written, against the bytes a copy of its version would upload; then the
//!    fork's first version after 1000 writes of its own.
//!
//! The server is `$INDIGO_TEST_S3` (`http://host:port/bucket`; `bench/run` starts
//! moto, the only S3 server installable here: single-threaded Python, so absolute
//! latencies are moto's, not S3's). Without it, an in-memory store is used and
//! the figures count requests only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indigo_bench::{data, header, quantile, row};
use indigo_health::Health;
use indigo_log::{CollectionId, Log};
use indigo_object::{Counted, Objects, Remote, S3Config};
use indigo_objlog::{ObjectLog, ObjectLogOptions};
use indigo_sysdb::{NewCollection, SqliteSysDb, SysDb};
use indigo_types::{RecordOp, WriteEntry, WriteKind};
use indigo_version::{Compacted, VersionCompactor};
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Appends per writer count (split among the writers).
    #[arg(long, default_value_t = 2000)]
    appends: usize,
    /// Payload bytes per append (about one small write request).
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Records the collection grows to in the version test (steps of `step`).
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    #[arg(long, default_value_t = 10_000)]
    step: usize,
    /// Writer counts.
    #[arg(long, default_value = "1,8,64", value_delimiter = ',')]
    writers: Vec<usize>,
}

fn store() -> (Arc<dyn Objects>, String) {
    match std::env::var("INDIGO_TEST_S3") {
        Ok(url) => {
            let (endpoint, bucket) = url.rsplit_once('/').expect("http://host:port/bucket");
            let r = Remote::s3(&S3Config {
                bucket: bucket.into(),
                endpoint: Some(endpoint.into()),
                region: Some("us-east-1".into()),
                prefix: format!("bench-{:016x}", rand::random::<u64>()),
            })
            .expect("configure S3");
            (Arc::new(r), format!("S3 at {endpoint} (moto)"))
        }
        Err(_) => (
            Arc::new(Remote::memory()),
            "in memory (INDIGO_TEST_S3 unset: request counts only)".into(),
        ),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn log_bench(args: &Args, objects: &Arc<dyn Objects>) {
    println!("\n## Log appends, one collection\n");
    header(
        "writers",
        &["p50", "p99", "appends/s", "PUTs / 1000", "GETs / 1000"],
    );
    for &writers in &args.writers {
        let counted = Arc::new(Counted::new(objects.clone()));
        let log = Arc::new(ObjectLog::new(counted.clone(), ObjectLogOptions::default()));
        let c = CollectionId(rand::random());
        log.append(c, b"warm up").unwrap();
        let before = counted.stats.snapshot();
        let per = (args.appends / writers).max(1);
        let payload = vec![7u8; args.payload];
        let started = Instant::now();
        let mut lat: Vec<Duration> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..writers)
                .map(|_| {
                    let (log, payload) = (log.clone(), &payload);
                    s.spawn(move || {
                        (0..per)
                            .map(|_| {
                                let t = Instant::now();
                                log.append(c, payload).unwrap();
                                t.elapsed()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let secs = started.elapsed().as_secs_f64();
        let after = counted.stats.snapshot();
        let n = lat.len() as f64;
        row(
            &writers.to_string(),
            &[
                ms(quantile(&mut lat, 0.5)),
                ms(quantile(&mut lat, 0.99)),
                format!("{:.0}", n / secs),
                format!("{:.0}", (after.puts - before.puts) as f64 * 1000.0 / n),
                format!("{:.0}", (after.gets - before.gets) as f64 * 1000.0 / n),
            ],
        );
    }
    println!(
        "\nEach append is acknowledged after its fragment and the manifest naming it are \
         stored (two conditional PUTs per group commit)."
    );
}

fn version_bench(args: &Args, objects: &Arc<dyn Objects>) {
    println!("\n## Bytes uploaded per index version as the collection grows\n");
    let ds = data::wordnet().expect("read wordnet-minilm-10k (set INDIGO_DATA_DIR)");
    let counted = Arc::new(Counted::new(objects.clone()));
    let objects: Arc<dyn Objects> = counted.clone();
    let objlog = Arc::new(ObjectLog::new(objects.clone(), ObjectLogOptions::default()));
    let log: Arc<dyn Log> = objlog.clone();
    let sysdb: Arc<dyn SysDb> = Arc::new(SqliteSysDb::in_memory().unwrap());
    let id = sysdb
        .create_collection(NewCollection {
            tenant: "default_tenant",
            database: "default_database",
            name: "growing",
            metadata: None,
            configuration: serde_json::json!({}),
            get_or_create: false,
            id: None,
        })
        .unwrap()
        .0
        .id;
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, ch) in hex.as_bytes().chunks(2).enumerate() {
        b[i] = u8::from_str_radix(std::str::from_utf8(ch).unwrap(), 16).unwrap();
    }
    let lid = CollectionId(b);
    let work = tempfile::tempdir().unwrap();
    let compactor = VersionCompactor::new(
        objects.clone(),
        log.clone(),
        sysdb.clone(),
        work.path(),
        Arc::new(Health::new()),
    );
    let config = indigo_segment::IndexConfig {
        space: indigo_index::Space::Cosine,
        ..Default::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let batch = |from: usize, to: usize, rng: &mut rand::rngs::StdRng| -> Vec<u8> {
        let records = (from..to)
            .map(|i| {
                let base = ds.base.row(i % ds.base.len());
                let v: Vec<f32> = base
                    .iter()
                    .map(|x| x + rng.gen_range(-0.01..0.01))
                    .collect();
                RecordOp {
                    id: format!("r{i}"),
                    embedding: Some(Arc::from(v)),
                    ..Default::default()
                }
            })
            .collect();
        WriteEntry {
            kind: WriteKind::Add,
            records,
        }
        .encode()
    };
    header(
        "records",
        &["uploaded", "files", "of total stored", "compaction"],
    );
    let mut next = 0usize;
    while next < args.records {
        let upto = (next + args.step).min(args.records);
        for chunk_start in (next..upto).step_by(1000) {
            let entry = batch(chunk_start, (chunk_start + 1000).min(upto), &mut rng);
            log.append(lid, &entry).unwrap();
        }
        next = upto;
        let t = Instant::now();
        let out = compactor.compact(&id, &config).unwrap();
        let took = t.elapsed();
        let Compacted::Committed {
            bytes_uploaded,
            files_uploaded,
            ..
        } = out
        else {
            panic!("{out:?}")
        };
        let total: u64 = objects
            .list(&format!("col/{id}/"))
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum();
        row(
            &next.to_string(),
            &[
                indigo_bench::mib(bytes_uploaded),
                files_uploaded.to_string(),
                format!("{:.0}%", bytes_uploaded as f64 * 100.0 / total as f64),
                format!("{:.1} s", took.as_secs_f64()),
            ],
        );
    }
    println!(
        "\n(\"of total stored\": this version's upload against every object of the \
         collection so far, old versions included; nothing is garbage-collected here.)"
    );

    println!(
        "\n## Forking the collection ({} records, 1000 not yet indexed)\n",
        args.records
    );
    let n = args.records;
    log.append(lid, &batch(n, n + 1000, &mut rng)).unwrap();
    let current = sysdb.latest_index_version(&id).unwrap().unwrap();
    let version_bytes: u64 = indigo_version::VersionManifest::fetch(
        &*objects,
        current.location["key"].as_str().unwrap(),
    )
    .unwrap()
    .files
    .iter()
    .map(|f| f.bytes)
    .sum();
    let before = counted.stats.snapshot();
    let t = Instant::now();
    let forked =
        indigo_version::fork_collection(&*sysdb, &objlog, &id, "fork", 64 << 20).expect("fork");
    let took = t.elapsed();
    let after = counted.stats.snapshot();
    header("", &["time", "PUTs", "GETs", "bytes written"]);
    row(
        "fork",
        &[
            ms(took),
            (after.puts - before.puts).to_string(),
            (after.gets - before.gets).to_string(),
            indigo_bench::mib(after.bytes_put - before.bytes_put),
        ],
    );
    row(
        "a copy of the version (bytes only)",
        &[
            "-".into(),
            "-".into(),
            "-".into(),
            indigo_bench::mib(version_bytes),
        ],
    );
    println!(
        "\n(The fork copies the {} log entries (write batches) not yet folded ({}); its catalogue \
         row names the source's version, whose {} stay shared. Catalogue: SQLite in memory.)",
        forked.log_records,
        indigo_bench::mib(forked.log_bytes),
        indigo_bench::mib(version_bytes)
    );
    let fork_id = forked.collection.id;
    let flid = CollectionId::parse_uuid(&fork_id).unwrap();
    log.append(flid, &batch(n + 1000, n + 2000, &mut rng))
        .unwrap();
    let t = Instant::now();
    let out = compactor.compact(&fork_id, &config).unwrap();
    let Compacted::Committed { bytes_uploaded, .. } = out else {
        panic!("{out:?}")
    };
    println!(
        "\nThe fork's first version of its own (2000 records past the shared version): \
         {} uploaded in {:.1} s; {} of its files are still the source's.",
        indigo_bench::mib(bytes_uploaded),
        t.elapsed().as_secs_f64(),
        indigo_version::VersionManifest::fetch(
            &*objects,
            sysdb
                .latest_index_version(&fork_id)
                .unwrap()
                .unwrap()
                .location["key"]
                .as_str()
                .unwrap()
        )
        .unwrap()
        .files
        .iter()
        .filter(|f| f.key.starts_with(&format!("col/{id}/")))
        .count()
    );
}

fn main() {
    let args = Args::parse();
    let (objects, what) = store();
    println!("# Object storage substrate ({what})");
    log_bench(&args, &objects);
    if args.records > 0 {
        version_bench(&args, &objects);
    }
}
