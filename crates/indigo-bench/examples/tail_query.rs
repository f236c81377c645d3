//! Query latency over an unindexed tail: an embedded collection with
//! background compaction off, `N` records (default 4096, the default backlog
//! bound) of `DIM` dimensions (default 784, Fashion-MNIST's) all in the log
//! tail, then 2000 queries (k = 10) one after another; prints p50 and p99.
//! `tail_query [N] [DIM]`.

use std::time::Instant;

use indigo::{Batch, Indigo, Options, QueryRequest};
use rand::{Rng, SeedableRng};

// As the `indigo` binary does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(4096, |a| a.parse().expect("N: a number"));
    let dim: usize = args
        .next()
        .map_or(784, |a| a.parse().expect("DIM: a number"));
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open_with(
        dir.path(),
        Options {
            background_compaction: false,
            ..Default::default()
        },
    )
    .unwrap();
    let c = db
        .create_collection("default_tenant", "default_database", "tail", None, None)
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for start in (0..n).step_by(1000) {
        let end = (start + 1000).min(n);
        c.add(Batch::new(
            (start..end).map(|i| format!("r{i}")).collect(),
            (start..end)
                .map(|_| (0..dim).map(|_| rng.gen_range(0.0f32..1.0)).collect())
                .collect(),
        ))
        .unwrap();
    }
    let queries: Vec<Vec<f32>> = (0..2000)
        .map(|_| (0..dim).map(|_| rng.gen_range(0.0f32..1.0)).collect())
        .collect();
    let t = Instant::now();
    c.query(&QueryRequest::new(vec![queries[0].clone()], 10))
        .unwrap();
    let first = t.elapsed();
    let mut lat: Vec<f64> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            c.query(&QueryRequest::new(vec![q.clone()], 10)).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "{n} x {dim} in the tail: first query {:.2} ms (resolves and prepares the tail), then p50 {:.3} ms, p99 {:.3} ms",
        first.as_secs_f64() * 1e3,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}
