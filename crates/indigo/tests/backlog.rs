//! Backpressure: with a bound on the unindexed backlog, writers wait for the
//! compactor, so the backlog never exceeds the bound when a write returns, and
//! everything written is there and searchable in the end.

use std::time::Duration;

mod common;

use common::gauge;
use indigo::{BacklogLimit, Batch, Indigo, QueryRequest};
use rand::{Rng, SeedableRng};

const DIM: usize = 24;

/// A database in `dir` with `options`, and a new collection `name` in it.
fn open(
    dir: &std::path::Path,
    options: indigo::Options,
    name: &str,
) -> (Indigo, indigo::Collection) {
    let db = Indigo::open_with(dir, options).unwrap();
    let c = db
        .create_collection("default_tenant", "default_database", name, None, None)
        .unwrap();
    (db, c)
}

/// Options with a backlog bound of `records` (and waits long enough never to refuse).
fn bounded(records: u64) -> indigo::Options {
    indigo::Options {
        backlog: BacklogLimit {
            records,
            bytes: 1 << 30,
            wait: Duration::from_secs(600),
        },
        ..Default::default()
    }
}

#[test]
fn writers_wait_while_the_backlog_is_over_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bound = 1500;
    let (db, c) = open(dir.path(), bounded(bound), "backpressure");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut vecs = Vec::new();
    // Two writers, so admissions race; each batch is 400 records.
    std::thread::scope(|s| {
        for w in 0..2 {
            let c = c.clone();
            let db = &db;
            let batches: Vec<Vec<Vec<f32>>> = (0..15)
                .map(|_| {
                    (0..400)
                        .map(|_| (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
                        .collect()
                })
                .collect();
            vecs.push(batches.clone());
            s.spawn(move || {
                for (b, batch) in batches.into_iter().enumerate() {
                    let ids = (0..400).map(|i| format!("w{w}-{b}-{i}")).collect();
                    c.add(Batch::new(ids, batch)).unwrap();
                    let backlog = gauge(db, "indigo_backlog_records");
                    assert!(
                        backlog <= bound as f64,
                        "a write returned with {backlog} records unindexed (bound {bound})"
                    );
                }
            });
        }
    });
    assert_eq!(c.count().unwrap(), 2 * 15 * 400);
    // Everything is searchable: each vector finds itself.
    for (w, batches) in vecs.iter().enumerate() {
        for b in [0, 7, 14] {
            let r = c
                .query(&QueryRequest::new(vec![batches[b][5].clone()], 1))
                .unwrap();
            assert_eq!(r[0].ids[0], format!("w{w}-{b}-5"));
        }
    }
    loop {
        let (applied, head) = c.fold_progress();
        if applied >= head {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(gauge(&db, "indigo_backlog_records"), 0.0);
    assert_eq!(gauge(&db, "indigo_backlog_bytes"), 0.0);
}

/// A batch larger than the bound is let through alone rather than waiting forever.
#[test]
fn a_batch_larger_than_the_bound_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, c) = open(dir.path(), bounded(10), "big");
    for b in 0..3 {
        let ids = (0..100).map(|i| format!("b{b}-{i}")).collect();
        let vecs = (0..100).map(|i| vec![i as f32, b as f32]).collect();
        c.add(Batch::new(ids, vecs)).unwrap();
    }
    assert_eq!(c.count().unwrap(), 300);
}

/// A write becomes an index version once the compactor has folded it, not at
/// the next periodic checkpoint: with that period set to an hour, the version
/// still comes (the test waits for the outcome; were the rule missing, it
/// would wait forever: nothing else checkpoints under 256 entries).
#[test]
fn a_folded_log_is_checkpointed_without_waiting_for_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let options = indigo::Options {
        checkpoint_every: Duration::from_secs(3600),
        ..Default::default()
    };
    let (_db, c) = open(dir.path(), options, "prompt");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for round in 0..3 {
        let vecs: Vec<Vec<f32>> = (0..50)
            .map(|_| (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
            .collect();
        let ids = (0..50).map(|i| format!("r{round}-{i}")).collect();
        c.add(Batch::new(ids, vecs)).unwrap();
        let want = 50 * (round + 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while c.indexing_status().unwrap() != (want, want) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {:?} indexed after two minutes",
                c.indexing_status().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A compactor that has folded the log and goes idle runs the process's trim
/// hook (the server's hands the allocator's free pages back).
#[test]
fn an_idle_compactor_trims() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static TRIMS: AtomicUsize = AtomicUsize::new(0);
    indigo_health::set_trim(|| {
        TRIMS.fetch_add(1, Ordering::SeqCst);
    });
    let dir = tempfile::tempdir().unwrap();
    let (_db, c) = open(dir.path(), indigo::Options::default(), "trim");
    let before = TRIMS.load(Ordering::SeqCst);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let vecs: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .collect();
    c.add(Batch::new(
        (0..200).map(|i| format!("t{i}")).collect(),
        vecs,
    ))
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while c.indexing_status().unwrap() != (200, 200) || TRIMS.load(Ordering::SeqCst) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} indexed, {} trims, after two minutes",
            c.indexing_status().unwrap(),
            TRIMS.load(Ordering::SeqCst) - before
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
