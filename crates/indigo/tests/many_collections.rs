//! Many collections in bounded memory: with a memory budget, idle collections are
//! hibernated (index dropped, memtable flushed), so the memory open collections
//! hold settles under the budget, and every collection stays readable and
//! writable (a hibernated one loads its index again on use).

use std::time::{Duration, Instant};

mod common;

use common::gauge;
use indigo::{Batch, Indigo, MemoryBudget, QueryRequest};

/// Collections and records per collection (the figure is 1,000 × 1,000;
/// `INDIGO_MANY_COLLECTIONS=1000` runs it).
fn scale() -> (usize, usize) {
    let n = std::env::var("INDIGO_MANY_COLLECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    (n, 1000)
}
const DIM: usize = 16;

fn vector(c: usize, r: usize) -> Vec<f32> {
    // Distinct per (collection, record), so a query for one finds it first.
    let mut x = (c as u64 * 1_000_003 + r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn many_collections_stay_under_the_memory_budget_and_usable() {
    let (n, per) = scale();
    // Each collection's graph alone is ~150 KiB (1000 × (16 × 4 + 33 × 4) bytes):
    // the budget holds about a tenth of them.
    let budget = ((n as u64 * 150) << 10) / 10;
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open_with(
        dir.path(),
        indigo::Options {
            memory: MemoryBudget {
                bytes: budget,
                idle: Duration::ZERO,
            },
            ..Default::default()
        },
    )
    .unwrap();
    let mut peak = 0f64;
    let cols: Vec<_> = (0..n)
        .map(|c| {
            let col = db
                .create_collection(
                    "default_tenant",
                    "default_database",
                    &format!("coll{c}"),
                    None,
                    None,
                )
                .unwrap();
            let ids = (0..per).map(|r| format!("c{c}-{r}")).collect();
            let vecs = (0..per).map(|r| vector(c, r)).collect();
            col.add(Batch::new(ids, vecs)).unwrap();
            peak = peak.max(gauge(&db, "indigo_collections_memory_bytes"));
            col
        })
        .collect();
    for col in &cols {
        wait_for("indexing", || {
            let (a, h) = col.fold_progress();
            a >= h
        });
    }
    // Hibernation runs in the background: wait for the outcome, then check it.
    wait_for("memory under the budget", || {
        gauge(&db, "indigo_collections_memory_bytes") <= budget as f64
    });
    let loaded = gauge(&db, "indigo_collections_in_memory");
    assert!(
        loaded < n as f64 / 2.0,
        "{loaded} of {n} collections still in memory"
    );
    eprintln!(
        "{n} collections × {per}: budget {budget} B, peak while writing {peak} B, \
         {loaded} in memory after settling"
    );
    // Every collection is readable (a hibernated one loads its index) ...
    for (c, col) in cols.iter().enumerate() {
        assert_eq!(col.count().unwrap(), per as u64);
        let r = col
            .query(&QueryRequest::new(vec![vector(c, 7)], 1))
            .unwrap();
        assert_eq!(r[0].ids[0], format!("c{c}-7"), "collection {c}");
    }
    // ... and writable, and the memory settles under the budget again.
    for (c, col) in cols.iter().enumerate().step_by(7) {
        col.add(Batch::new(
            vec![format!("c{c}-new")],
            vec![vector(c, per + 1)],
        ))
        .unwrap();
    }
    for (c, col) in cols.iter().enumerate().step_by(7) {
        wait_for("indexing", || {
            let (a, h) = col.fold_progress();
            a >= h
        });
        let r = col
            .query(&QueryRequest::new(vec![vector(c, per + 1)], 1))
            .unwrap();
        assert_eq!(r[0].ids[0], format!("c{c}-new"));
    }
    wait_for("memory under the budget again", || {
        gauge(&db, "indigo_collections_memory_bytes") <= budget as f64
    });
    // Reopened, everything is still there.
    drop(cols);
    drop(db);
    let db = Indigo::open(dir.path()).unwrap();
    for c in (0..n).step_by(13) {
        let col = db
            .get_collection("default_tenant", "default_database", &format!("coll{c}"))
            .unwrap();
        let extra = u64::from(c % 7 == 0);
        assert_eq!(col.count().unwrap(), per as u64 + extra);
    }
}
