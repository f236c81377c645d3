//! Crash consistency: crash at every write/fsync position of a scripted workload,
//! reboot (dropping or tearing what was not fsynced), reopen, and check that every
//! batch acknowledged after an fsync survived and no batch is half there.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use indigo_storage::fs::{FaultFs, FaultKind, FaultOp};
use indigo_storage::{Options, StorageError, Store, Strategy, WriteBatch, WriteOptions};
use rand::{Rng, SeedableRng};

const BATCHES: u32 = 60;

fn opts() -> Options {
    Options {
        memtable_bytes: 2 << 10,
        background: false,
        max_frozen: 2,
        ..Default::default()
    }
}

fn open(fs: &FaultFs) -> Result<Store, StorageError> {
    Store::open_with_fs(Arc::new(fs.clone()), Path::new("/db"), opts())
}

/// Batch `i` of the workload: overwrites and deletes shared keys, adds to sets,
/// and writes a marker so the surviving prefix can be identified.
fn batch(store: &Store, i: u32) -> WriteBatch {
    let kv = store.bucket("kv", Strategy::Replace).unwrap();
    let sets = store.bucket("sets", Strategy::Set).unwrap();
    let mut wb = WriteBatch::new();
    wb.put(&kv, format!("marker{i:04}"), i.to_le_bytes());
    for j in 0..6 {
        let key = format!("k{:02}", (i * 7 + j) % 31);
        if (i + j).is_multiple_of(5) {
            wb.delete(&kv, key);
        } else {
            wb.put(&kv, key, format!("{i}-{j}").repeat(1 + (i % 4) as usize));
        }
    }
    wb.set_add(&sets, format!("s{}", i % 3), u64::from(i));
    if i >= 3 {
        wb.set_remove(&sets, format!("s{}", (i - 3) % 3), u64::from(i - 3));
    }
    wb
}

type State = (BTreeMap<Vec<u8>, Vec<u8>>, BTreeMap<Vec<u8>, Vec<u64>>);

fn state(store: &Store) -> State {
    let kv = store.bucket("kv", Strategy::Replace).unwrap();
    let sets = store.bucket("sets", Strategy::Set).unwrap();
    let a = store
        .scan(&kv, Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .into_iter()
        .collect();
    let b = store
        .scan_set(&sets, Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .into_iter()
        .map(|(k, s)| (k, s.into_iter().collect()))
        .collect();
    (a, b)
}

/// Runs the workload; returns (batches durably acknowledged, batches attempted).
fn workload(store: &Store) -> (u32, u32) {
    let mut durable = 0;
    for i in 0..BATCHES {
        let sync = i % 4 == 3;
        let opts = WriteOptions { sync };
        if store.write(&batch(store, i), opts).is_err() {
            return (durable, i + 1);
        }
        if sync {
            durable = i + 1;
        }
        if i % 17 == 16 && store.merge_step().is_err() {
            return (durable, i + 1);
        }
    }
    if store.sync().is_ok() {
        durable = BATCHES;
    }
    (durable, BATCHES)
}

/// The state after the first `n` batches, computed on a fault-free store.
fn expected_states() -> Vec<State> {
    let fs = FaultFs::new();
    let store = open(&fs).unwrap();
    store.bucket("kv", Strategy::Replace).unwrap();
    store.bucket("sets", Strategy::Set).unwrap();
    let mut out = vec![state(&store)];
    for i in 0..BATCHES {
        store
            .write(&batch(&store, i), WriteOptions::default())
            .unwrap();
        out.push(state(&store));
    }
    out
}

fn run_crash_points(torn: bool) {
    let expected = expected_states();
    // Count the operations of a full run to know every crash position.
    let total = {
        let fs = FaultFs::new();
        let store = open(&fs).unwrap();
        store.bucket("kv", Strategy::Replace).unwrap();
        store.bucket("sets", Strategy::Set).unwrap();
        let before = fs.op_count();
        workload(&store);
        fs.op_count() - before
    };
    assert!(total > 100, "workload too small: {total} ops");
    let mut rng = rand::rngs::StdRng::seed_from_u64(if torn { 7 } else { 1 });
    for point in 1..=total {
        let fs = FaultFs::new();
        let store = open(&fs).unwrap();
        store.bucket("kv", Strategy::Replace).unwrap();
        store.bucket("sets", Strategy::Set).unwrap();
        fs.fail_after(None, point, FaultKind::Crash);
        let (durable, attempted) = workload(&store);
        std::mem::forget(store); // the machine is gone: no clean shutdown
        let seed: u64 = rng.gen();
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        fs.crash(|n| if torn { r.gen_range(0..=n) } else { 0 });
        let store = open(&fs).unwrap_or_else(|e| panic!("crash point {point}: reopen failed: {e}"));
        let got = state(&store);
        let markers = got.0.keys().filter(|k| k.starts_with(b"marker")).count() as u32;
        assert!(
            markers >= durable && markers <= attempted,
            "crash point {point}: {markers} batches survived, {durable} were durable, {attempted} attempted"
        );
        assert!(
            got == expected[markers as usize],
            "crash point {point}: state is not the prefix of {markers} whole batches"
        );
    }
}

#[test]
fn every_crash_point_keeps_durable_batches_whole() {
    run_crash_points(false);
}

#[test]
fn every_crash_point_with_torn_tails_keeps_durable_batches_whole() {
    run_crash_points(true);
}

/// I/O errors surface as typed errors; the store then refuses writes, and after the
/// fault clears it reopens with every acknowledged batch.
#[test]
fn injected_io_errors_are_typed_and_lose_nothing_acknowledged() {
    let expected = expected_states();
    let cases = [
        (
            FaultOp::Write,
            FaultKind::NoSpace,
            std::io::ErrorKind::StorageFull,
        ),
        (FaultOp::Write, FaultKind::Io, std::io::ErrorKind::Other),
        (
            FaultOp::Write,
            FaultKind::ShortWrite,
            std::io::ErrorKind::Other,
        ),
        (FaultOp::Sync, FaultKind::Io, std::io::ErrorKind::Other),
        (
            FaultOp::Sync,
            FaultKind::NoSpace,
            std::io::ErrorKind::StorageFull,
        ),
    ];
    for (op, kind, want_kind) in cases {
        for nth in [1u64, 2, 3, 5, 8, 13, 21, 34, 55, 89] {
            let fs = FaultFs::new();
            let store = open(&fs).unwrap();
            store.bucket("kv", Strategy::Replace).unwrap();
            store.bucket("sets", Strategy::Set).unwrap();
            fs.fail_after(Some(op), nth, kind);
            let mut acked = 0;
            let mut failed = None;
            for i in 0..BATCHES {
                let r = store.write(&batch(&store, i), WriteOptions { sync: i % 4 == 3 });
                match r {
                    Ok(()) => acked = i + 1,
                    Err(e) => {
                        failed = Some((i, e));
                        break;
                    }
                }
            }
            let Some((i, e)) = failed else { continue };
            let io_kind = e
                .io_kind()
                .unwrap_or_else(|| panic!("{op:?}/{kind:?}: untyped error {e}"));
            if want_kind != std::io::ErrorKind::Other {
                assert_eq!(io_kind, want_kind, "{e}");
            }
            // Further writes are refused rather than written after a possible hole.
            let again = store.write(&batch(&store, i), WriteOptions::default());
            assert!(matches!(again, Err(StorageError::Poisoned(_))), "{again:?}");
            drop(store);
            fs.clear_fault();
            let store = open(&fs).expect("reopen after the fault clears");
            let got = state(&store);
            let markers = got.0.keys().filter(|k| k.starts_with(b"marker")).count() as u32;
            // Acknowledged batches are all there (the OS still had them); the failed
            // one is whole or absent.
            assert!(
                markers == acked || markers == acked + 1,
                "{op:?}/{kind:?}@{nth}: {markers} vs {acked}"
            );
            assert!(
                got == expected[markers as usize],
                "{op:?}/{kind:?}@{nth}: not a whole prefix"
            );
        }
    }
}

/// A store opened in a directory that did not exist must make the directory's own
/// name durable: otherwise a crash loses the directory, and every batch synced in
/// it, even though each file in it was fsynced.
#[test]
fn a_new_store_directory_survives_a_crash() {
    let fs = FaultFs::new();
    let dir = Path::new("/data/collections/c1/store");
    {
        let store = Store::open_with_fs(Arc::new(fs.clone()), dir, opts()).unwrap();
        let kv = store.bucket("kv", Strategy::Replace).unwrap();
        let mut wb = WriteBatch::new();
        wb.put(&kv, "k", "v");
        store.write(&wb, WriteOptions { sync: true }).unwrap();
        std::mem::forget(store); // no orderly close: the machine stops here
    }
    fs.crash(|_| 0);
    let store = Store::open_with_fs(Arc::new(fs.clone()), dir, opts()).unwrap();
    let kv = store.bucket("kv", Strategy::Replace).unwrap();
    assert_eq!(
        store.get(&kv, b"k").unwrap().as_deref(),
        Some(&b"v"[..]),
        "a synced batch was lost with its directory"
    );
}
