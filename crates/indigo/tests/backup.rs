//! Backup under load: four writers keep adding and upserting while a backup is
//! taken; the restored copy holds every write acknowledged before the backup began,
//! none sent after it ended, and of those in between, for each writer, exactly a
//! prefix, every batch whole with its content. A damaged backup is refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use indigo::{Batch, GetRequest, Include, Indigo, QueryRequest, Selection};
use parking_lot::Mutex;

const WRITERS: usize = 4;
const PER_BATCH: usize = 20;

fn vector(w: usize, n: u64, j: usize, version: u64) -> Vec<f32> {
    vec![w as f32, n as f32, j as f32, version as f32]
}

fn ids(w: usize, n: u64) -> Vec<String> {
    (0..PER_BATCH).map(|j| format!("w{w}-{n}-{j}")).collect()
}

/// One acknowledged request: (event counter when sent, when acknowledged, batch,
/// version written).
type Write = (u64, u64, u64, u64);

#[test]
fn a_backup_under_load_restores_exactly_a_consistent_cut() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Arc::new(Indigo::open(&data).unwrap());
    let cols: Vec<_> = (0..2)
        .map(|i| {
            db.create_collection(
                "default_tenant",
                "default_database",
                &format!("col{i}"),
                None,
                None,
            )
            .unwrap()
        })
        .collect();
    let clock = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let logs: Vec<Arc<Mutex<Vec<Write>>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (c, clock, stop, log) = (
                cols[w % 2].clone(),
                clock.clone(),
                stop.clone(),
                logs[w].clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    // Every third request upserts the previous batch with a new version.
                    let (batch, version) = if n % 3 == 2 { (n - 1, n) } else { (n, 0) };
                    let embs = (0..PER_BATCH)
                        .map(|j| vector(w, batch, j, version))
                        .collect();
                    let b = Batch::new(ids(w, batch), embs);
                    let sent = clock.fetch_add(1, Ordering::SeqCst);
                    if version == 0 { c.add(b) } else { c.upsert(b) }.unwrap();
                    let acked = clock.fetch_add(1, Ordering::SeqCst);
                    log.lock().push((sent, acked, batch, version));
                    n += 1;
                }
            })
        })
        .collect();
    // Let the writers and the compactor get going, so the backup meets folded
    // records, records in the log tail, and records being folded.
    while clock.load(Ordering::SeqCst) < 2000 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let backup_dir = dir.path().join("backup");
    let began = clock.fetch_add(1, Ordering::SeqCst);
    let report = db.backup(&backup_dir).unwrap();
    let ended = clock.fetch_add(1, Ordering::SeqCst);
    while clock.load(Ordering::SeqCst) < ended + 200 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, Ordering::Release);
    for h in handles {
        h.join().unwrap();
    }
    eprintln!("backup: {report:?}");
    assert_eq!(report.collections, 2);
    drop(cols);
    drop(db);

    let restored = dir.path().join("restored");
    indigo::restore(&backup_dir, &restored).unwrap();
    let db = Indigo::open(&restored).unwrap();
    let mut total = 0u64;
    for (w, log) in logs.iter().enumerate() {
        let c = db
            .get_collection(
                "default_tenant",
                "default_database",
                &format!("col{}", w % 2),
            )
            .unwrap();
        let writes = log.lock().clone();
        // Which of this writer's requests the restored state reflects: walk them
        // in order; each must be wholly there (its batch at its version) or not.
        let mut present = 0;
        let mut state: std::collections::HashMap<u64, u64> = Default::default();
        for (i, &(sent, acked, batch, version)) in writes.iter().enumerate() {
            let got = c
                .get(&GetRequest {
                    selection: Selection {
                        ids: Some(ids(w, batch)),
                        ..Default::default()
                    },
                    include: Include {
                        embeddings: true,
                        ..Include::GET_DEFAULT
                    },
                    ..Default::default()
                })
                .unwrap();
            let versions: Vec<u64> = got
                .embeddings
                .unwrap()
                .iter()
                .map(|e| e[3] as u64)
                .collect();
            // Is request i reflected? For an add: the batch exists; for an upsert:
            // the batch carries its version (or a later one).
            let here = if version == 0 {
                versions.len() == PER_BATCH
            } else {
                versions.len() == PER_BATCH && versions.iter().all(|&v| v >= version)
            };
            if here {
                assert_eq!(
                    present, i,
                    "writer {w}: request {i} is there but an earlier one is not"
                );
                present += 1;
                state.insert(batch, version);
            } else {
                assert!(
                    versions.is_empty() || versions.len() == PER_BATCH,
                    "writer {w}: batch {batch} is half there"
                );
            }
            if acked < began {
                assert!(
                    here,
                    "writer {w}: request {i}, acknowledged before the backup began, is missing"
                );
            }
            if sent > ended {
                assert!(
                    !here,
                    "writer {w}: request {i}, sent after the backup ended, is there"
                );
            }
        }
        // Every record of a reflected batch is whole, with its content.
        for (&batch, &version) in &state {
            let got = c
                .get(&GetRequest {
                    selection: Selection {
                        ids: Some(ids(w, batch)),
                        ..Default::default()
                    },
                    include: Include {
                        embeddings: true,
                        ..Include::GET_DEFAULT
                    },
                    ..Default::default()
                })
                .unwrap();
            for (id, e) in got.ids.iter().zip(got.embeddings.unwrap()) {
                let j: usize = id.rsplit('-').next().unwrap().parse().unwrap();
                assert_eq!(&e[..], &vector(w, batch, j, version)[..], "{id}");
            }
        }
        total += (state.len() * PER_BATCH) as u64;
        eprintln!(
            "writer {w}: {} requests, {present} in the backup (began at {began}, ended at {ended})",
            writes.len()
        );
    }
    let count: u64 = (0..2)
        .map(|i| {
            db.get_collection("default_tenant", "default_database", &format!("col{i}"))
                .unwrap()
                .count()
                .unwrap()
        })
        .sum();
    assert_eq!(
        count, total,
        "exactly the records of the reflected requests"
    );
    // The restored database serves queries and takes writes.
    let c = db
        .get_collection("default_tenant", "default_database", "col0")
        .unwrap();
    let hit = c
        .query(&QueryRequest::new(vec![vector(0, 0, 3, 0)], 1))
        .unwrap();
    assert_eq!(hit[0].ids, vec!["w0-0-3"]);
    c.add(Batch::new(vec!["after".into()], vec![vec![9.0; 4]]))
        .unwrap();
    assert!(db.failures().is_empty());
}

#[test]
fn a_damaged_or_incomplete_backup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open(dir.path().join("data")).unwrap();
    let c = db
        .create_collection("default_tenant", "default_database", "one", None, None)
        .unwrap();
    c.add(Batch::new(vec!["a".into()], vec![vec![1.0, 2.0]]))
        .unwrap();
    db.compact().unwrap();
    let b = dir.path().join("backup");
    db.backup(&b).unwrap();
    // Into a directory that is not empty: refused.
    assert!(matches!(
        db.backup(&b),
        Err(indigo::Error::InvalidArgument(_))
    ));
    // A changed byte in any file: refused, naming it.
    let victim = std::fs::read_dir(b.join("log"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let err = indigo::restore(&b, &dir.path().join("r1")).unwrap_err();
    assert!(
        err.to_string().contains(&victim.display().to_string()),
        "{err}"
    );
    // Without its manifest it is not a backup.
    std::fs::remove_file(b.join("BACKUP")).unwrap();
    let err = indigo::restore(&b, &dir.path().join("r2")).unwrap_err();
    assert!(err.to_string().contains("not a complete backup"), "{err}");
}
