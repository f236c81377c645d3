//! Reads overlapping the compactor see one consistent state: a query never
//! mixes a record's stored body with a vector the compactor is moving, nor
//! misses a record whose vector is being moved away and back.
//!
//! Every vector `v_j` is held by exactly one record at every acknowledged state:
//! each write swaps the vectors of pairs of records in one atomic update. So a query
//! at `v_j` must find a record at distance 0 whose embedding is `v_j`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use indigo::{Batch, Include, Indigo, QueryRequest, Where};
use rand::{Rng, SeedableRng};
use serde_json::json;

const N: usize = 2000;
const DIM: usize = 32;
/// Swaps per write.
const PAIRS: usize = 100;
/// Queries per request.
const QUERIES: usize = 32;

fn vectors() -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    (0..N)
        .map(|_| (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .collect()
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn run(exact_search: bool) {
    let vecs = vectors();
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open_with(
        dir.path(),
        indigo::Options {
            exact_search,
            ..Default::default()
        },
    )
    .unwrap();
    let c = db
        .create_collection("default_tenant", "default_database", "swaps", None, None)
        .unwrap();
    let ids: Vec<String> = (0..N).map(|i| format!("r{i}")).collect();
    c.add(
        Batch::new(ids.clone(), vecs.clone())
            .metadatas_json((0..N).map(|i| json!({"g": i as i64})).collect())
            .unwrap(),
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, stop, vecs) = (c.clone(), stop.clone(), vecs.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(5);
            // holder[r] = index of the vector record r holds.
            let mut holder: Vec<usize> = (0..N).collect();
            let mut swaps = 0;
            while !stop.load(Ordering::Relaxed) {
                // Many disjoint swaps in one entry, so the compactor spends a
                // while changing the index for each chunk.
                let picked = rand::seq::index::sample(&mut rng, N, 2 * PAIRS).into_vec();
                let mut ids = Vec::new();
                let mut embs = Vec::new();
                for p in picked.chunks(2) {
                    let (a, b) = (p[0], p[1]);
                    holder.swap(a, b);
                    for r in [a, b] {
                        ids.push(format!("r{r}"));
                        embs.push(vecs[holder[r]].clone());
                    }
                }
                c.update(Batch::new(ids, embs)).unwrap();
                swaps += PAIRS;
                // Let the compactor keep up, so reads find most records in the
                // index rather than in the log tail.
                while c.fold_progress().0 + 2 < c.fold_progress().1 && !stop.load(Ordering::Relaxed)
                {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            swaps
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let everything = Where::parse(&json!({"g": {"$gte": 0}})).unwrap();
    let t = std::time::Instant::now();
    let mut queries = 0;
    while t.elapsed() < std::time::Duration::from_secs(3) {
        // Many queries in one request share one view, which then spans a while
        // of the compactor's work.
        let js: Vec<usize> = (0..QUERIES).map(|_| rng.gen_range(0..N)).collect();
        let mut req = QueryRequest::new(js.iter().map(|&j| vecs[j].clone()).collect(), 1);
        req.include = Include {
            embeddings: true,
            distances: true,
            ..Default::default()
        };
        // With a filter the allow-list path runs; exact search is exact either way.
        let filtered = rng.gen_bool(0.5);
        if filtered {
            req.selection.where_ = Some(everything.clone());
        }
        for (r, &j) in c.query(&req).unwrap().iter().zip(&js) {
            let emb = &r.embeddings.as_ref().unwrap()[0];
            let d = r.distances.as_ref().unwrap()[0];
            // The distance reported is that of the embedding returned.
            assert!(
                (d - l2(&vecs[j], emb)).abs() < 1e-4,
                "query {queries}: distance {d} but the returned embedding is at {}",
                l2(&vecs[j], emb)
            );
            // Exact scans (exact mode, or a filter's small allow-list) find v_j.
            if exact_search || filtered {
                assert!(
                    d < 1e-6,
                    "query {queries} (filtered: {filtered}): v_{j} not found, nearest at {d}"
                );
            }
            queries += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = writer.join().unwrap();
    eprintln!("exact {exact_search}: {queries} queries during {swaps} swaps");
    assert!(swaps > 100 && queries > 100, "too little overlap to test");
    assert!(db.failures().is_empty());
}

#[test]
fn exact_reads_during_vector_moves_are_consistent() {
    run(true);
}

#[test]
fn hnsw_reads_during_vector_moves_are_consistent() {
    run(false);
}
