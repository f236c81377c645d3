//! Restart time of a collection built by `ingest --data-dir DIR`: opens DIR,
//! answers one query, and prints how long each step took (for profiling the
//! restart: `perf record target/release/examples/restart DIR`).

use std::time::Instant;

use indigo::{Indigo, QueryRequest};

// As the `indigo` binary does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: restart DIR (made by ingest --data-dir DIR)");
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
}
