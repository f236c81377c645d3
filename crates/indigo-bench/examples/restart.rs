//! Restart time of a collection built by `ingest --data-dir DIR`: opens DIR,
//! answers one query, and prints how long each step took (for profiling the
//! restart: `perf record target/release/examples/restart DIR`).
//!
//! `restart DIR --until-condensed` then stays open, quiet, until the index's
//! maintenance has folded every log into a snapshot (a directory an ingest
//! left mid-condensation), and says how long that took. (A quiet index
//! condenses a log over 64 MiB; with less it waits for ever.)

use std::time::Instant;

use indigo::{Indigo, QueryRequest};

// As the `indigo` binary does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: restart DIR [--until-condensed] (DIR made by ingest --data-dir DIR)");
    let until_condensed = std::env::args().nth(2).as_deref() == Some("--until-condensed");
    let t = Instant::now();
    let db = Indigo::open(&dir).unwrap();
    let opened = t.elapsed();
    let c = db
        .get_collection("default_tenant", "default_database", "ingest")
        .unwrap();
    let got = t.elapsed();
    let dim = c.info().dimension.expect("the collection has vectors");
    c.query(&QueryRequest::new(vec![vec![0.1; dim as usize]], 10))
        .unwrap();
    println!(
        "open {:.2} s, get_collection {:.2} s, first query answered at {:.2} s",
        opened.as_secs_f64(),
        got.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    if until_condensed {
        let hnsw = std::path::Path::new(&dir)
            .join("collections")
            .join(c.id())
            .join("hnsw");
        let names = loop {
            let names: Vec<String> = std::fs::read_dir(&hnsw)
                .expect("the collection's index directory")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let has = |f: &dyn Fn(&String) -> bool| names.iter().filter(|n| f(n)).count();
            let snaps = has(&|n| n.starts_with("snapshot-") && n.ends_with(".hnsw"));
            let logs = has(&|n| n.starts_with("log-"));
            if snaps > 0 && logs == 1 && has(&|n| n.ends_with(".tmp")) == 0 {
                break names;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        println!("condensed at {:.1} s: {names:?}", t.elapsed().as_secs_f64());
        let d = std::time::Instant::now();
        drop(c);
        drop(db);
        println!("closed in {:.2} s", d.elapsed().as_secs_f64());
    }
}
