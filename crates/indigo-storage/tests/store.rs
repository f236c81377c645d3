use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use indigo_storage::fs::{FaultFs, FileSystem};
use indigo_storage::{keys, Options, StorageError, Store, Strategy, WriteBatch, WriteOptions};

fn small() -> Options {
    Options {
        memtable_bytes: 4 << 10,
        background: false,
        max_frozen: 2,
        ..Default::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

#[test]
fn put_get_delete_across_flushes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), small()).unwrap();
        let b = s.bucket("objects", Strategy::Replace).unwrap();
        for i in 0..2000 {
            let mut wb = WriteBatch::new();
            wb.put(&b, key(i), format!("v{i}"));
            s.write(&wb, WriteOptions::default()).unwrap();
        }
        let mut wb = WriteBatch::new();
        for i in (0..2000).step_by(3) {
            wb.delete(&b, key(i));
        }
        s.write(&wb, WriteOptions::SYNC).unwrap();
        assert!(s.stats().segments > 1, "small memtable must have flushed");
        assert_eq!(s.get(&b, &key(1)).unwrap(), Some(b"v1".to_vec()));
        assert_eq!(s.get(&b, &key(3)).unwrap(), None);
    }
    let s = Store::open(dir.path(), small()).unwrap();
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    for i in 0..2000 {
        let want = (i % 3 != 0).then(|| format!("v{i}").into_bytes());
        assert_eq!(s.get(&b, &key(i)).unwrap(), want, "key {i}");
    }
    let all = s.scan(&b, Bound::Unbounded, Bound::Unbounded).unwrap();
    assert_eq!(all.len(), 2000 - 667);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn set_buckets_merge_additions_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), small()).unwrap();
    let b = s.bucket("postings", Strategy::Set).unwrap();
    let mut wb = WriteBatch::new();
    for id in 0..100u64 {
        wb.set_add(&b, "color=red", id);
        wb.set_add(&b, format!("n={}", id % 7), id);
    }
    s.write(&wb, WriteOptions::default()).unwrap();
    s.flush().unwrap();
    let mut wb = WriteBatch::new();
    for id in (0..100u64).step_by(2) {
        wb.set_remove(&b, "color=red", id);
    }
    wb.set_add(&b, "color=red", 1000);
    s.write(&wb, WriteOptions::default()).unwrap();
    let red = s.get_set(&b, b"color=red").unwrap();
    assert_eq!(red.len(), 51);
    assert!(red.contains(1000) && !red.contains(2) && red.contains(3));
    s.compact().unwrap();
    assert_eq!(s.get_set(&b, b"color=red").unwrap(), red);
    let ns = s.scan_set_prefix(&b, b"n=").unwrap();
    assert_eq!(ns.len(), 7);
    assert_eq!(ns.iter().map(|(_, s)| s.len()).sum::<u64>(), 100);
    assert!(s.get_set(&b, b"missing").unwrap().is_empty());
}

#[test]
fn numeric_keys_make_range_scans() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), small()).unwrap();
    let b = s.bucket("n_words", Strategy::Set).unwrap();
    let mut wb = WriteBatch::new();
    for (id, v) in [-5i64, -1, 0, 3, 7, 100, 1 << 40].iter().enumerate() {
        wb.set_add(&b, keys::encode_i64(*v).to_vec(), id as u64);
    }
    s.write(&wb, WriteOptions::default()).unwrap();
    s.flush().unwrap();
    let lo = keys::encode_i64(0);
    let hi = keys::encode_i64(100);
    let got: Vec<u64> = s
        .scan_set(&b, Bound::Excluded(&lo[..]), Bound::Included(&hi[..]))
        .unwrap()
        .into_iter()
        .flat_map(|(_, ids)| ids.into_iter())
        .collect();
    assert_eq!(got, vec![3, 4, 5]);
}

#[test]
fn strategy_misuse_is_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), small()).unwrap();
    let r = s.bucket("r", Strategy::Replace).unwrap();
    let set = s.bucket("s", Strategy::Set).unwrap();
    assert!(matches!(
        s.bucket("r", Strategy::Set),
        Err(StorageError::StrategyMismatch { .. })
    ));
    let mut wb = WriteBatch::new();
    wb.put(&r, "a", "1");
    wb.put(&set, "a", "1");
    assert!(matches!(
        s.write(&wb, WriteOptions::default()),
        Err(StorageError::WrongStrategy { .. })
    ));
    assert_eq!(
        s.get(&r, b"a").unwrap(),
        None,
        "a rejected batch applies nothing"
    );
    assert!(s.get(&set, b"a").is_err());
}

#[test]
fn merging_frees_the_space_of_deleted_data() {
    let fs = FaultFs::new();
    let dir = Path::new("/db");
    let opts = Options {
        memtable_bytes: 64 << 10,
        ..small()
    };
    let s = Store::open_with_fs(Arc::new(fs.clone()), dir, opts).unwrap();
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    for chunk in 0..20u32 {
        let mut wb = WriteBatch::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            wb.put(&b, key(i), vec![7u8; 100]);
        }
        s.write(&wb, WriteOptions::default()).unwrap();
    }
    s.compact().unwrap();
    let full = s.stats().segment_bytes;
    for chunk in 0..20u32 {
        let mut wb = WriteBatch::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            wb.delete(&b, key(i));
        }
        s.write(&wb, WriteOptions::default()).unwrap();
    }
    s.compact().unwrap();
    let st = s.stats();
    assert_eq!(
        st.segment_bytes, 0,
        "everything deleted: {st:?}, was {full}"
    );
    assert!(fs.total_bytes() < 1024, "files left: {}", fs.total_bytes());
}

#[test]
fn background_merging_bounds_the_segment_count() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        memtable_bytes: 16 << 10,
        background: true,
        max_frozen: 2,
        ..Default::default()
    };
    let s = Store::open(dir.path(), opts).unwrap();
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    for chunk in 0..200u32 {
        let mut wb = WriteBatch::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            wb.put(&b, key(i), vec![1u8; 50]);
        }
        s.write(&wb, WriteOptions::default()).unwrap();
    }
    s.flush().unwrap();
    // Merging runs at idle priority, so on a machine busy with other tests it may
    // wait a while for CPU; the bound is on the outcome, not the speed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while s.stats().segments > 12 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let segs = s.stats().segments;
    assert!(segs <= 12, "{segs} segments after background merging");
    for i in (0..20000).step_by(997) {
        assert!(s.get(&b, &key(i)).unwrap().is_some());
    }
}

#[test]
fn bloom_filters_answer_misses_without_block_reads() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), small()).unwrap();
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    let mut wb = WriteBatch::new();
    for i in 0..5000 {
        wb.put(&b, key(i), "x");
    }
    s.write(&wb, WriteOptions::default()).unwrap();
    s.flush().unwrap();
    let before = s.stats();
    for i in 100_000..110_000 {
        assert_eq!(s.get(&b, &key(i)).unwrap(), None);
    }
    let after = s.stats();
    let probes = after.segment_probes - before.segment_probes;
    let negatives = after.bloom_negatives - before.bloom_negatives;
    assert!(probes >= 10_000);
    assert!(
        negatives as f64 / probes as f64 >= 0.98,
        "{negatives}/{probes} probes answered by bloom filters"
    );
}

#[test]
fn a_damaged_segment_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), small()).unwrap();
        let b = s.bucket("objects", Strategy::Replace).unwrap();
        let mut wb = WriteBatch::new();
        for i in 0..100 {
            wb.put(&b, key(i), "value");
        }
        s.write(&wb, WriteOptions::default()).unwrap();
        s.flush().unwrap();
    }
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    // Damage the block index (just before the 64-byte footer): caught at open.
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 70] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Store::open(dir.path(), small())
        .err()
        .expect("open must fail");
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{msg}"
    );

    // Damage a data block instead: caught by the read that touches it.
    bytes[n - 70] ^= 0x55;
    bytes[20] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let s = Store::open(dir.path(), small()).unwrap();
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    let err = s.get(&b, &key(0)).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

#[test]
fn concurrent_readers_and_writers_see_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        memtable_bytes: 32 << 10,
        background: true,
        max_frozen: 2,
        ..Default::default()
    };
    let s = Arc::new(Store::open(dir.path(), opts).unwrap());
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    // Each batch writes the same generation number under keys a and b; a reader
    // must never see them differ.
    let writer = {
        let (s, b) = (s.clone(), b.clone());
        std::thread::spawn(move || {
            for gen in 0..3000u32 {
                let mut wb = WriteBatch::new();
                wb.put(&b, "a", gen.to_le_bytes());
                for i in 0..20 {
                    wb.put(&b, key(gen * 20 + i), vec![0u8; 64]);
                }
                wb.put(&b, "b", gen.to_le_bytes());
                s.write(&wb, WriteOptions::default()).unwrap();
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() {
        let all = s
            .scan(&b, Bound::Included(b"a"), Bound::Included(b"b"))
            .unwrap();
        if let (Some(a), Some(bb)) = (all.first(), all.last()) {
            if a.0 == b"a" && bb.0 == b"b" {
                assert_eq!(a.1, bb.1, "scan saw half a batch");
            }
        }
        checks += 1;
    }
    writer.join().unwrap();
    assert!(checks > 0);
    assert_eq!(
        s.get(&b, b"a").unwrap(),
        Some(2999u32.to_le_bytes().to_vec())
    );
    let fs = indigo_storage::fs::StdFs;
    assert!(fs.exists(dir.path()));
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn background(health: &Arc<indigo_health::Health>) -> Options {
    Options {
        memtable_bytes: 4 << 10,
        background: true,
        max_frozen: 2,
        health: Some(health.clone()),
    }
}

/// A flush that cannot write its segment (disk full) is reported and stands as a
/// failure; the store refuses writes (memory and disk may disagree) until it is
/// reopened, which recovers everything written and clears the failure.
#[test]
fn a_failed_flush_is_reported_and_reopening_recovers() {
    use indigo_storage::fs::{FaultKind, FaultOp};
    let fs = FaultFs::new();
    let dir = Path::new("/flush");
    let health = Arc::new(indigo_health::Health::new());
    let subject = dir.display().to_string();
    let s = Store::open_with_fs(Arc::new(fs.clone()), dir, background(&health)).unwrap();
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    fs.fail_where(
        |p| p.to_string_lossy().ends_with(".seg.tmp"),
        Some(FaultOp::Write),
        FaultKind::NoSpace,
    );
    let mut acked = 0;
    for i in 0..5000u32 {
        let mut wb = WriteBatch::new();
        wb.put(&b, key(i), format!("v{i}"));
        if s.write(&wb, WriteOptions::SYNC).is_err() {
            break;
        }
        acked = i + 1;
    }
    assert!(acked < 5000, "writes must be refused once the flush failed");
    wait_for("the flush failure was not reported", || {
        health.is_failing(indigo_health::FLUSH, &subject).is_some()
    });
    let f = health.is_failing(indigo_health::FLUSH, &subject).unwrap();
    assert!(f.error.contains("No space"), "{}", f.error);
    assert!(s.poisoned().is_some());
    fs.clear_fault();
    drop(s);
    let s = Store::open_with_fs(Arc::new(fs.clone()), dir, background(&health)).unwrap();
    assert!(health.failures().is_empty(), "reopening clears the failure");
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    for i in 0..acked {
        assert_eq!(
            s.get(&b, &key(i)).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    let counts: std::collections::BTreeMap<_, _> = health.errors_total().into_iter().collect();
    assert!(counts[indigo_health::FLUSH] >= 1);
}

/// A merge that cannot write its output is reported and retried with backoff;
/// writes go on meanwhile (nothing was changed), and the failure clears once the
/// merge works.
#[test]
fn a_failed_merge_is_retried_with_backoff_while_writes_go_on() {
    use indigo_storage::fs::{FaultKind, FaultOp};
    let fs = FaultFs::new();
    let dir = Path::new("/merge");
    let health = Arc::new(indigo_health::Health::new());
    let subject = dir.display().to_string();
    let s = Store::open_with_fs(Arc::new(fs.clone()), dir, background(&health)).unwrap();
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    fs.fail_where(
        |p| p.to_string_lossy().ends_with(".merge.tmp"),
        Some(FaultOp::Write),
        FaultKind::NoSpace,
    );
    let write = |from: u32, to: u32| {
        for i in from..to {
            let mut wb = WriteBatch::new();
            wb.put(&b, key(i), format!("v{i}"));
            s.write(&wb, WriteOptions::default()).unwrap();
        }
    };
    write(0, 3000);
    wait_for("the merge failure was not retried", || {
        health
            .is_failing(indigo_health::MERGE, &subject)
            .is_some_and(|f| f.attempts >= 2)
    });
    assert!(s.poisoned().is_none(), "a failed merge changes nothing");
    write(3000, 4000);
    s.sync().unwrap();
    fs.clear_fault();
    wait_for("the merge did not recover", || health.failures().is_empty());
    for i in (0..4000).step_by(97) {
        assert_eq!(
            s.get(&b, &key(i)).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    drop(s); // waits for a merge in progress
    assert!(
        !fs.files()
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".tmp")),
        "failed merges leave no temporary files: {:?}",
        fs.files()
    );
}

/// An index version copies the files `open_files` returns while merges go on:
/// those files must stay readable, and together describe the store as it was.
#[test]
fn opened_files_outlive_the_merges_that_remove_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), small()).unwrap();
    let b = s.bucket("objects", Strategy::Replace).unwrap();
    for i in 0..1500 {
        let mut wb = WriteBatch::new();
        wb.put(&b, key(i), format!("v{i}"));
        s.write(&wb, WriteOptions::default()).unwrap();
    }
    s.flush().unwrap();
    let files = s.open_files().unwrap();
    assert!(
        files.len() > 2,
        "expected several segments: {}",
        files.len()
    );
    // Change everything, then merge the store down: the old segments' names go.
    for i in 0..1500 {
        let mut wb = WriteBatch::new();
        wb.put(&b, key(i), format!("w{i}"));
        s.write(&wb, WriteOptions::default()).unwrap();
    }
    s.flush().unwrap();
    s.compact().unwrap();
    let gone = files
        .iter()
        .filter(|(n, _)| !dir.path().join(n).exists())
        .count();
    assert!(gone > 0, "the merge removed none of the opened segments");
    // The opened files still make the store as it was when they were opened.
    let fs = Arc::new(FaultFs::new());
    let copy = Path::new("/copy");
    fs.create_dir_all(copy).unwrap();
    for (name, f) in &files {
        let mut data = vec![0u8; f.len() as usize];
        f.read_exact_at(&mut data, 0).unwrap();
        let w = fs.create(&copy.join(name)).unwrap();
        w.append(&data).unwrap();
        w.sync().unwrap();
    }
    let old = Store::open_read_only(fs, copy).unwrap();
    let ob = old.bucket("objects", Strategy::Replace).unwrap();
    for i in (0..1500).step_by(7) {
        assert_eq!(
            old.get(&ob, &key(i)).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    assert_eq!(s.get(&b, &key(7)).unwrap(), Some(b"w7".to_vec()));
}
