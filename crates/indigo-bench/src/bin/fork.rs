//! Fork benchmark: time and bytes to fork a collection of N records (default
//! 100k, 384-d), side by side with the two ways to get the same copy without
//! forks: copying the collection's files (what a backup does) and re-adding every
//! record into a new collection through the API (what Chroma's single node
//! offers: get, then add). Then: the fork and its source diverge, and deleting
//! the source frees only what the fork does not share.
//!
//! cargo run --release -p indigo-bench --bin fork -- [--n 100000] [--dim 384]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use indigo::{Batch, GetRequest, Include, Indigo};
use indigo_bench::{dir_bytes, header, mib, progress, row};
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Directory for the data (a temporary one under it); on the disk measured.
    #[arg(long, default_value = "target")]
    tmp: std::path::PathBuf,
}

const T: &str = "default_tenant";
const D: &str = "default_database";

/// Bytes of files under `dir` that no other directory shares (link count 1).
fn own_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            total += own_bytes(&e.path());
        } else if m.nlink() == 1 {
            total += m.len();
        }
    }
    total
}

/// Bytes on disk under `dir`, each file counted once however many names it has.
fn unique_bytes(dir: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            total += unique_bytes(&e.path(), seen);
        } else if seen.insert((m.dev(), m.ino())) {
            total += m.len();
        }
    }
    total
}

fn copy_tree(from: &Path, to: &Path) -> u64 {
    std::fs::create_dir_all(to).unwrap();
    let mut bytes = 0;
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            bytes += copy_tree(&e.path(), &dest);
        } else {
            bytes += std::fs::copy(e.path(), &dest).unwrap();
            std::fs::File::open(&dest).unwrap().sync_all().unwrap();
        }
    }
    bytes
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() {
    let a = Args::parse();
    std::fs::create_dir_all(&a.tmp).unwrap();
    let tmp = tempfile::tempdir_in(&a.tmp).unwrap();
    let db = Indigo::open(tmp.path().join("data")).unwrap();
    let src = db.create_collection(T, D, "src", None, None).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let bar = progress(a.n as u64, "adding records");
    let batch = 1000;
    for start in (0..a.n).step_by(batch) {
        let end = (start + batch).min(a.n);
        let ids: Vec<String> = (start..end).map(|i| format!("id{i}")).collect();
        let embs: Vec<Vec<f32>> = (start..end)
            .map(|_| (0..a.dim).map(|_| rng.gen_range(-1.0..1.0)).collect())
            .collect();
        let docs = (start..end)
            .map(|i| Some(format!("document {i}")))
            .collect();
        src.add(Batch::new(ids, embs).documents(docs)).unwrap();
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    eprintln!("folding the log into the indexes ...");
    db.compact().unwrap();
    let src_dir = tmp.path().join("data/collections").join(src.id());
    let src_bytes = dir_bytes(&src_dir);

    // Fork.
    let t = Instant::now();
    let (info, report) = db.fork_collection(src.id(), "fork").unwrap();
    let fork_time = t.elapsed();
    let t = Instant::now();
    let fork = db.get_collection_by_id(&info.id).unwrap();
    let open_time = t.elapsed();
    assert_eq!(fork.count().unwrap(), a.n as u64);
    let fork_dir = tmp.path().join("data/collections").join(fork.id());
    let fork_own = own_bytes(&fork_dir);

    // Copying the files (a backup's way).
    let t = Instant::now();
    let copied = copy_tree(&src_dir, &tmp.path().join("copy"));
    let copy_time = t.elapsed();

    // Re-adding every record through the API.
    let t = Instant::now();
    let re = db.create_collection(T, D, "readded", None, None).unwrap();
    let page = 5000;
    let mut offset = 0;
    loop {
        let r = src
            .get(&GetRequest {
                limit: Some(page),
                offset,
                include: Include {
                    embeddings: true,
                    documents: true,
                    metadatas: true,
                    ..Include::GET_DEFAULT
                },
                ..Default::default()
            })
            .unwrap();
        if r.ids.is_empty() {
            break;
        }
        let embs = r.embeddings.unwrap().iter().map(|e| e.to_vec()).collect();
        re.add(Batch::new(r.ids.clone(), embs).documents(r.documents.unwrap()))
            .unwrap();
        offset += r.ids.len();
    }
    db.compact().unwrap();
    let readd_time = t.elapsed();
    let readd_bytes = dir_bytes(&tmp.path().join("data/collections").join(re.id()));

    println!(
        "\nForking a collection of {} records ({}-d, {} of files, folded), one run on this machine",
        a.n,
        a.dim,
        mib(src_bytes)
    );
    header("", &["time", "bytes written", "vs fork (time)"]);
    let ratio = |d: Duration| format!("{:.0}×", d.as_secs_f64() / fork_time.as_secs_f64());
    row(
        "fork (hard links + logs copied)",
        &[secs(fork_time), mib(fork_own), "1×".into()],
    );
    row(
        "  then opening the fork (loading its index)",
        &[secs(open_time), "-".into(), ratio(open_time)],
    );
    row(
        "copy the files",
        &[secs(copy_time), mib(copied), ratio(copy_time)],
    );
    row(
        "get + add every record, then fold",
        &[secs(readd_time), mib(readd_bytes), ratio(readd_time)],
    );
    println!(
        "fork report: {} shared with the source (hard links), {} copied, {} log records carried",
        mib(report.linked_bytes),
        mib(report.copied_bytes),
        report.log_records
    );
    // Deleting the source frees what the fork does not share.
    let cols = tmp.path().join("data/collections");
    let before = unique_bytes(&cols, &mut Default::default());
    db.delete_collection(T, D, "src").unwrap();
    let after = unique_bytes(&cols, &mut Default::default());
    let fork_after = own_bytes(&fork_dir);
    println!(
        "deleting the source: collections/ went from {} to {}; the fork now owns {} (all of its files)",
        mib(before),
        mib(after),
        mib(fork_after)
    );
    println!(
        "Not included: the source's compaction before the fork (the fork waits for the compactor \
         only while it links); the copy's time does not include making it a collection."
    );
}
