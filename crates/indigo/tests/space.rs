//! Deleting frees space: after adding 100k records, deleting them all and letting
//! the background compaction finish, the data directory is within 2× of the size
//! it had holding the same collection empty.

use std::path::Path;
use std::time::{Duration, Instant};

use indigo::{Batch, Indigo, Selection};

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// Files over 64 KiB under `dir`, for the failure message.
fn big_files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(big_files(&e.path()));
        } else if m.len() > 64 << 10 {
            out.push((e.path().display().to_string(), m.len()));
        }
    }
    out
}

fn wait_indexed(c: &indigo::Collection) {
    let t = Instant::now();
    while c.fold_progress().0 < c.fold_progress().1 {
        assert!(t.elapsed() < Duration::from_secs(600), "compaction stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn deleting_everything_gives_the_space_back() {
    const N: usize = 100_000;
    const DIM: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open(dir.path()).unwrap();
    let c = db
        .create_collection("default_tenant", "default_database", "space", None, None)
        .unwrap();
    // The baseline: the same collection holding one record that is then deleted
    // (so its index and store exist), after compaction.
    c.add(Batch::new(vec!["seed".into()], vec![vec![0.5; DIM]]))
        .unwrap();
    c.delete(&Selection {
        ids: Some(vec!["seed".into()]),
        ..Default::default()
    })
    .unwrap();
    wait_indexed(&c);
    db.compact().unwrap();
    let empty = dir_bytes(dir.path());

    for b in 0..N / 1000 {
        let ids = (0..1000).map(|i| format!("r{b}-{i}")).collect();
        let embs = (0..1000)
            .map(|i| {
                (0..DIM)
                    .map(|d| ((b * 1000 + i) * 31 + d) as f32 % 97.0)
                    .collect()
            })
            .collect();
        c.add(Batch::new(ids, embs).documents(vec![Some("some document text".into()); 1000]))
            .unwrap();
    }
    wait_indexed(&c);
    let full = dir_bytes(dir.path());
    for b in 0..N / 1000 {
        let ids = (0..1000).map(|i| format!("r{b}-{i}")).collect();
        c.delete(&Selection {
            ids: Some(ids),
            ..Default::default()
        })
        .unwrap();
    }
    assert_eq!(c.count().unwrap(), 0);
    // The background compactor folds the deletes, checkpoints, truncates the log
    // and reclaims store and index space once it is idle.
    let t = Instant::now();
    let after = loop {
        let now = dir_bytes(dir.path());
        if now <= 2 * empty || t.elapsed() > Duration::from_secs(300) {
            break now;
        }
        if std::env::var("INDIGO_SPACE_VERBOSE").is_ok() && t.elapsed().as_millis() % 5000 < 100 {
            eprintln!(
                "{:?}: {now} B, indexing {:?}, files {:?}",
                t.elapsed(),
                c.fold_progress(),
                big_files(dir.path())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("empty {empty} B, full {full} B, after deleting all {after} B");
    assert!(full > 20 * empty, "the data did not take space: {full} B");
    assert!(
        after <= 2 * empty,
        "after deleting everything the directory holds {after} B; empty it held {empty} B; \
         indexing {:?}; files over 64 KiB: {:?}; compactor errors: {:?}",
        c.fold_progress(),
        big_files(dir.path()),
        db.failures()
    );
    assert!(db.failures().is_empty(), "{:?}", db.failures());
}
