//! Crash tests for the commit log and condensation: the index always loads, and
//! what it loads equals the graph built by the surviving prefix of operations.

use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::persist::{self, GraphState, Op};
use crate::{Hnsw, HnswParams, Space};

fn params() -> HnswParams {
    let mut p = HnswParams::new(Space::L2, 8);
    p.max_neighbors = 6;
    p.ef_construction = 20;
    p
}

/// A workload with inserts, an update, deletes and a repair; returns the ops logged.
fn workload(idx: &Hnsw, rng: &mut impl Rng, n: u32) {
    for i in 0..n {
        let v: Vec<f32> = (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect();
        idx.insert(i, &v).unwrap();
        if i % 9 == 8 {
            idx.delete(i - 4).unwrap();
        }
        if i % 40 == 39 {
            idx.repair().unwrap();
        }
    }
}

fn recorded(idx: &Hnsw) -> Vec<Op> {
    idx.log.as_ref().unwrap().lock().recorded.clone()
}

fn replay(ops: &[Op]) -> GraphState {
    let p = params();
    let mut st = GraphState::new(persist::FileParams {
        dim: 8,
        space: p.space,
        m: p.max_neighbors as u32,
        ef_construction: p.ef_construction as u32,
    });
    for op in ops {
        st.apply(op.clone()).unwrap();
    }
    st
}

/// Syncs `idx`, closes it and checks that its files load back as the graph
/// it held; returns the reopened index.
fn reloads_as_is(idx: Hnsw, dir: &Path, p: HnswParams) -> Hnsw {
    idx.sync().unwrap();
    let want = idx.dump();
    drop(idx);
    let back = Hnsw::open(dir, p).unwrap();
    assert_eq!(back.dump(), want);
    back
}

/// Byte offset at which each record ends, from the record layout.
fn record_ends(path: &Path) -> Vec<u64> {
    let b = std::fs::read(path).unwrap();
    let mut pos = 8 + 4 + 4 + 1 + 4 + 4;
    let mut ends = vec![];
    while pos + 8 <= b.len() {
        let len = u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
        ends.push(pos as u64);
    }
    ends
}

#[test]
fn replaying_the_log_gives_the_live_graph() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Hnsw::open(dir.path(), params()).unwrap();
    workload(&idx, &mut rand::rngs::StdRng::seed_from_u64(1), 300);
    assert_eq!(replay(&recorded(&idx)), idx.dump());
    idx.sync().unwrap();
    let dumped = idx.dump();
    drop(idx);
    let back = Hnsw::open(dir.path(), params()).unwrap();
    assert_eq!(back.dump(), dumped);
}

#[test]
fn a_log_cut_at_any_offset_loads_as_the_surviving_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Hnsw::open(dir.path(), params()).unwrap();
    workload(&idx, &mut rand::rngs::StdRng::seed_from_u64(2), 200);
    idx.sync().unwrap();
    let ops = recorded(&idx);
    drop(idx);
    let log = persist::log_path(dir.path(), 0);
    let bytes = std::fs::read(&log).unwrap();
    let ends = record_ends(&log);
    assert_eq!(ends.len(), ops.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for round in 0..300 {
        let cut = if round < 3 {
            [27u64, 28, bytes.len() as u64][round]
        } else {
            rng.gen_range(27..=bytes.len() as u64)
        };
        let d = tempfile::tempdir().unwrap();
        let path = persist::log_path(d.path(), 0);
        std::fs::write(&path, &bytes[..cut as usize]).unwrap();
        // Garbage after the cut, as a torn sector would leave.
        if round % 2 == 1 {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(&mut f, &[0xab; 13]).unwrap();
        }
        let whole = ends.iter().take_while(|&&e| e <= cut).count();
        let idx = Hnsw::open(d.path(), params())
            .unwrap_or_else(|e| panic!("cut at {cut}: load failed: {e}"));
        assert_eq!(idx.dump(), replay(&ops[..whole]), "cut at {cut}");
        // The torn tail was cut: appending and reloading works.
        idx.insert(100_000, &[0.5; 8]).unwrap();
        idx.sync().unwrap();
        drop(idx);
        let again = Hnsw::open(d.path(), params()).unwrap();
        assert!(
            again.contains(100_000),
            "cut at {cut}: append after recovery lost"
        );
    }
}

#[test]
fn a_crash_during_condensation_loses_nothing() {
    for crash_after in [Some(1u8), Some(2), None] {
        let dir = tempfile::tempdir().unwrap();
        let idx = Hnsw::open(dir.path(), params()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        workload(&idx, &mut rng, 150);
        idx.condense_inner(crash_after).unwrap();
        // Changes after the condensation go to the new log.
        idx.insert(5000, &[0.25; 8]).unwrap();
        idx.delete(3).unwrap();
        idx.sync().unwrap();
        let want = idx.dump();
        drop(idx);
        let back = Hnsw::open(dir.path(), params())
            .unwrap_or_else(|e| panic!("crash after step {crash_after:?}: {e}"));
        assert_eq!(back.dump(), want, "crash after step {crash_after:?}");
        let (snaps, logs) = persist::list_gens(&indigo_fs::StdFs, dir.path()).unwrap();
        if crash_after.is_none() {
            assert_eq!((snaps, logs), (vec![1], vec![1]), "old files removed");
        }
        // And a second condensation on top works.
        back.condense().unwrap();
        let want = back.dump();
        drop(back);
        assert_eq!(Hnsw::open(dir.path(), params()).unwrap().dump(), want);
    }
}

/// The logs a load replays count toward the log maintenance condenses: after
/// a crash during a condensation, the old log is behind the open one, and an
/// index that only measured the open log would replay it at every restart.
#[test]
fn a_log_left_by_a_crashed_condensation_is_condensed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Hnsw::open(dir.path(), params()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    workload(&idx, &mut rng, 300);
    let old_log = idx.log_len();
    idx.condense_inner(Some(1)).unwrap();
    idx.sync().unwrap();
    let want = idx.dump();
    drop(idx);

    let back = std::sync::Arc::new(Hnsw::open(dir.path(), params()).unwrap());
    assert_eq!(back.dump(), want);
    assert!(
        back.log_len() >= old_log,
        "the replayed log counts: {} < {old_log}",
        back.log_len()
    );
    let health = std::sync::Arc::new(indigo_health::Health::new());
    let handle = back.spawn_maintenance(4 << 10, health.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !persist::list_gens(&indigo_fs::StdFs, dir.path())
        .unwrap()
        .0
        .contains(&2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replayed log was never condensed: {:?}",
            health.failures()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The condensation that wrote the snapshot removes the old logs after it.
    while persist::list_gens(&indigo_fs::StdFs, dir.path()).unwrap().1 != vec![2] {
        assert!(std::time::Instant::now() < deadline, "old logs not removed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(back.log_len() < old_log, "nothing older is left to replay");
    drop(back);
    handle.join().unwrap();
    let again = Hnsw::open(dir.path(), params()).unwrap();
    assert_eq!(again.dump(), want);
    assert!(again.log_len() < 4 << 10);
}

/// Condensing from memory writes the snapshot the file-based condensation
/// writes (byte for byte), and loads back as the live graph.
#[test]
fn a_condensation_from_memory_equals_one_from_the_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (x, y) = (
        Hnsw::open(a.path(), params()).unwrap(),
        Hnsw::open(b.path(), params()).unwrap(),
    );
    for (idx, seed) in [(&x, 6), (&y, 6)] {
        workload(idx, &mut rand::rngs::StdRng::seed_from_u64(seed), 300);
        // Deletes left for the snapshot: tombstones and vacant slots both.
        idx.delete(7).unwrap();
    }
    x.condense().unwrap();
    y.condense_live().unwrap();
    let snap = |d: &Path| std::fs::read(persist::snapshot_path(d, 1)).unwrap();
    assert_eq!(snap(a.path()), snap(b.path()));
    y.insert(9999, &[0.5; 8]).unwrap();
    y.sync().unwrap();
    let want = y.dump();
    drop(y);
    assert_eq!(Hnsw::open(b.path(), params()).unwrap().dump(), want);
    let (snaps, logs) = persist::list_gens(&indigo_fs::StdFs, b.path()).unwrap();
    assert_eq!((snaps, logs), (vec![1], vec![1]), "old files removed");
}

/// Inserts and deletes racing condensations from memory: whatever interleaving,
/// the files load back as the graph.
#[test]
fn condensations_from_memory_beside_changes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let idx = std::sync::Arc::new(Hnsw::open(dir.path(), params()).unwrap());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let idx = idx.clone();
            let done = &done;
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(t));
                for i in 0..1000u32 {
                    let v: Vec<f32> = (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    idx.insert(t * 10_000 + i, &v).unwrap();
                    if i % 7 == 6 {
                        idx.delete(t * 10_000 + i - 3).unwrap();
                    }
                }
                done.fetch_or(t == 1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let idx = idx.clone();
        let done = &done;
        s.spawn(move || {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || n < 3 {
                idx.condense_live().unwrap();
                n += 1;
            }
        });
    });
    idx.repair().unwrap();
    idx.condense_live().unwrap();
    idx.insert(77_777, &[0.1; 8]).unwrap();
    let idx = std::sync::Arc::into_inner(idx).unwrap();
    reloads_as_is(idx, dir.path(), params());
}

#[test]
fn a_damaged_snapshot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Hnsw::open(dir.path(), params()).unwrap();
    workload(&idx, &mut rand::rngs::StdRng::seed_from_u64(5), 50);
    idx.condense().unwrap();
    drop(idx);
    let snap = persist::snapshot_path(dir.path(), 1);
    let mut b = std::fs::read(&snap).unwrap();
    b[40] ^= 1;
    std::fs::write(&snap, b).unwrap();
    let err = Hnsw::open(dir.path(), params()).unwrap_err();
    assert!(
        err.to_string().contains("snapshot-0000000001.hnsw"),
        "{err}"
    );
}

#[test]
fn opening_with_another_dimension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Hnsw::open(dir.path(), params()).unwrap();
    idx.insert(1, &[0.0; 8]).unwrap();
    idx.sync().unwrap();
    drop(idx);
    let mut p = params();
    p.dim = 9;
    assert!(matches!(
        Hnsw::open(dir.path(), p),
        Err(crate::IndexError::ParamsMismatch(_))
    ));
}

#[test]
fn background_maintenance_repairs_and_condenses() {
    let dir = tempfile::tempdir().unwrap();
    let idx = std::sync::Arc::new(Hnsw::open(dir.path(), params()).unwrap());
    let health = std::sync::Arc::new(indigo_health::Health::new());
    let handle = idx.spawn_maintenance(4 << 10, health.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    for i in 0..400u32 {
        let v: Vec<f32> = (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect();
        idx.insert(i, &v).unwrap();
    }
    {
        // Hold maintenance off while deleting: a repair that lands between two
        // deletes would leave a remainder below the repair threshold, which by
        // design waits for more deletes.
        let _m = idx.maint.lock();
        for i in (0..400).step_by(5) {
            idx.delete(i).unwrap();
        }
    }
    // Waits for the outcome (listing the directory no longer races with the
    // condensation writing its temporary snapshot).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let (snaps, _) = persist::list_gens(&indigo_fs::StdFs, dir.path()).unwrap();
        if idx.tombstones() == 0 && !snaps.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "maintenance did not run: {:?}",
            health.failures()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(health.failures().is_empty());
    assert_eq!(idx.stats().free_slots, 80, "deleted slots freed for reuse");
    idx.sync().unwrap();
    let want = idx.dump();
    drop(idx);
    handle.join().unwrap(); // stops once the index is gone
    assert_eq!(Hnsw::open(dir.path(), params()).unwrap().dump(), want);
}

/// A condensation that cannot write its snapshot (disk full) is reported, shows
/// as a standing failure, is retried although the log does not grow, and clears
/// once the disk has room; nothing is lost meanwhile.
#[test]
fn maintenance_failures_are_reported_and_retried_until_they_clear() {
    use indigo_fs::{FaultFs, FaultKind, FaultOp};
    let fs = FaultFs::new();
    let dir = std::path::Path::new("/idx");
    let idx = std::sync::Arc::new(
        Hnsw::open_with_fs(std::sync::Arc::new(fs.clone()), dir, params()).unwrap(),
    );
    fs.fail_where(
        |p| p.to_string_lossy().contains("snapshot-"),
        Some(FaultOp::Write),
        FaultKind::NoSpace,
    );
    let health = std::sync::Arc::new(indigo_health::Health::new());
    let handle = idx.spawn_maintenance(4 << 10, health.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    for i in 0..300u32 {
        let v: Vec<f32> = (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect();
        idx.insert(i, &v).unwrap();
    }
    idx.sync().unwrap();
    let subject = dir.display().to_string();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait("the failure was not reported", &|| {
        health
            .is_failing(indigo_health::INDEX_MAINTENANCE, &subject)
            .is_some_and(|f| f.attempts >= 2)
    });
    let f = health
        .is_failing(indigo_health::INDEX_MAINTENANCE, &subject)
        .unwrap();
    assert!(f.error.contains("snapshot"), "{}", f.error);
    fs.clear_fault();
    wait("maintenance did not recover", &|| {
        health.failures().is_empty()
    });
    let (snaps, _) = persist::list_gens(&fs, dir).unwrap();
    assert!(
        !snaps.is_empty(),
        "the retried condensation wrote a snapshot"
    );
    let counts: std::collections::BTreeMap<_, _> = health.errors_total().into_iter().collect();
    assert!(counts[indigo_health::INDEX_MAINTENANCE] >= 2);
    let want = idx.dump();
    idx.close();
    drop(idx);
    handle.join().unwrap();
    let back = Hnsw::open_with_fs(std::sync::Arc::new(fs.clone()), dir, params()).unwrap();
    assert_eq!(back.dump(), want);
}

#[test]
fn a_failed_log_write_refuses_further_changes() {
    use indigo_fs::{FaultFs, FaultKind, FaultOp};
    let fs = FaultFs::new();
    let dir = std::path::Path::new("/idx");
    let idx = Hnsw::open_with_fs(std::sync::Arc::new(fs.clone()), dir, params()).unwrap();
    idx.insert(1, &[0.1; 8]).unwrap();
    idx.sync().unwrap();
    fs.fail_under(dir, Some(FaultOp::Write), FaultKind::NoSpace);
    idx.insert(2, &[0.2; 8]).unwrap(); // buffered, not yet written
    let err = idx.sync().unwrap_err();
    assert!(
        matches!(&err, crate::IndexError::Io { source, .. } if source.raw_os_error() == Some(28)),
        "{err}"
    );
    assert!(matches!(
        idx.insert(3, &[0.3; 8]),
        Err(crate::IndexError::LogFailed(_))
    ));
    assert!(matches!(idx.sync(), Err(crate::IndexError::LogFailed(_))));
    assert!(matches!(
        idx.delete(1),
        Err(crate::IndexError::LogFailed(_))
    ));
}

/// A snapshot whose checksum is right but whose links point past the slots is
/// refused as damaged (searches read vectors by slot without bounds checks).
#[test]
fn a_consistent_checksum_over_an_inconsistent_graph_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Hnsw::open(dir.path(), params()).unwrap();
    workload(&idx, &mut rand::rngs::StdRng::seed_from_u64(6), 60);
    idx.condense().unwrap();
    let mut st = idx.dump();
    drop(idx);
    let n = st.slots.len() as u32;
    let node = st.slots.iter_mut().flatten().next().unwrap();
    node.links[0].push(n + 7);
    persist::write_snapshot(&indigo_fs::StdFs, dir.path(), 1, &st).unwrap();
    let err = Hnsw::open(dir.path(), params()).unwrap_err();
    assert!(
        matches!(&err, crate::IndexError::Corrupt { .. })
            && err.to_string().contains("links to slot"),
        "{err}"
    );
    // And an entry point beyond the slots.
    let mut st2 = st.clone();
    st2.slots.iter_mut().flatten().next().unwrap().links[0].pop();
    st2.entry = Some((n + 100, 0));
    persist::write_snapshot(&indigo_fs::StdFs, dir.path(), 1, &st2).unwrap();
    let err = Hnsw::open(dir.path(), params()).unwrap_err();
    assert!(err.to_string().contains("entry point"), "{err}");
}

/// An index version copies the files `seal` returns while condensation goes on:
/// they stay readable after a condensation removes them, and load as the index
/// was at the seal.
#[test]
fn sealed_files_outlive_the_condensation_that_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let idx = Hnsw::open(dir.path(), params()).unwrap();
    workload(&idx, &mut rng, 200);
    let sealed = idx.seal().unwrap();
    assert!(!sealed.is_empty());
    let len = idx.len();
    workload(&idx, &mut rng, 300);
    idx.condense().unwrap();
    assert!(
        sealed.iter().any(|(p, _)| !p.exists()),
        "condensation removed none of the sealed files"
    );
    let copy = tempfile::tempdir().unwrap();
    for (p, f) in &sealed {
        let mut data = vec![0u8; f.len() as usize];
        f.read_exact_at(&mut data, 0).unwrap();
        std::fs::write(copy.path().join(p.file_name().unwrap()), data).unwrap();
    }
    let old = Hnsw::open(copy.path(), params()).unwrap();
    assert_eq!(old.len(), len);
}

/// Deleting the graph's top slots, condensing (the snapshot ends at the last
/// slot in use) and inserting again loads back: new slots are taken from the
/// lowest free, not from far past the snapshot's end, where a load takes a
/// logged slot for damage ([`persist::MAX_SLOT_JUMP`]).
#[test]
fn inserts_after_a_snapshot_without_its_vacant_tail_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Hnsw::open(dir.path(), params()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut v = || -> Vec<f32> { (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let n = 4 * persist::MAX_SLOT_JUMP as u32;
    for i in 0..n {
        idx.insert(i, &v()).unwrap();
    }
    for i in 50..n {
        idx.delete(i).unwrap();
    }
    assert_eq!(idx.repair().unwrap(), (n - 50) as usize);
    idx.condense_live().unwrap();
    for i in n..n + 20 {
        idx.insert(i, &v()).unwrap();
    }
    idx.sync().unwrap();
    // The live graph keeps its vacant tail; a load has no reason to.
    let trimmed = |mut g: GraphState| {
        while g.slots.last().is_some_and(|s| s.is_none()) {
            g.slots.pop();
        }
        g
    };
    let want = trimmed(idx.dump());
    drop(idx);
    assert_eq!(
        trimmed(Hnsw::open(dir.path(), params()).unwrap().dump()),
        want
    );
}

/// At 16 dimensions a row fills a cache line, so a load maps the snapshot's
/// rows rather than copying them ([`persist::ROWS_OFFSET`]).
fn params16() -> HnswParams {
    let mut p = HnswParams::new(Space::L2, 16);
    p.max_neighbors = 6;
    p.ef_construction = 20;
    p
}

fn v16(rng: &mut impl Rng) -> Vec<f32> {
    (0..16).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Builds an index in `dir` whose snapshot holds tombstones and vacant slots
/// and whose log holds changes after it, then closes it.
fn snapshot_and_log16(dir: &Path, rng: &mut impl Rng) {
    let idx = Hnsw::open(dir, params16()).unwrap();
    for i in 0..400u32 {
        idx.insert(i, &v16(rng)).unwrap();
    }
    for i in (0..400).step_by(3) {
        idx.delete(i).unwrap();
    }
    idx.repair().unwrap();
    idx.delete(1).unwrap();
    idx.condense_live().unwrap();
    for i in 400..430u32 {
        idx.insert(i, &v16(rng)).unwrap();
    }
    idx.delete(2).unwrap();
    idx.sync().unwrap();
}

/// Mappings of removed files under `dir` in this process.
fn deleted_mappings(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()) && l.ends_with("(deleted)"))
        .map(str::to_string)
        .collect()
}

/// A load maps the snapshot's rows; changes to them (slots reused, the log
/// replayed over them) stay in memory, the file is untouched, and the files
/// load back as the graph.
#[test]
fn a_mapped_snapshot_is_changed_in_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    snapshot_and_log16(dir.path(), &mut rng);
    let snap = persist::snapshot_path(dir.path(), 1);
    let bytes = std::fs::read(&snap).unwrap();
    let plain = persist::load_read_only(&indigo_fs::StdFs, dir.path(), {
        let p = params16();
        persist::FileParams {
            dim: 16,
            space: p.space,
            m: p.max_neighbors as u32,
            ef_construction: p.ef_construction as u32,
        }
    })
    .unwrap();
    let idx = Hnsw::open(dir.path(), params16()).unwrap();
    assert!(idx.rows_mapped());
    assert_eq!(idx.dump(), plain, "the mapped load equals a plain one");
    // Vacant slots inside the snapshot are reused first: their rows are
    // written over mapped pages.
    assert!(idx.stats().free_slots > 50);
    let mut fresh = vec![];
    for i in 1000..1100u32 {
        let v = v16(&mut rng);
        idx.insert(i, &v).unwrap();
        fresh.push((i, v));
    }
    assert!(idx.rows_mapped());
    for (i, v) in &fresh {
        assert_eq!(idx.search(v, 1, None).unwrap()[0].label, *i);
    }
    idx.sync().unwrap();
    assert_eq!(
        std::fs::read(&snap).unwrap(),
        bytes,
        "the snapshot is untouched"
    );
    reloads_as_is(idx, dir.path(), params16());
}

/// A condensation copies the rows off the mapped snapshot before removing it,
/// so the removed file's space is not held by the mapping; both ways of
/// condensing.
#[test]
fn a_condensation_lets_go_of_the_mapped_snapshot_it_removes() {
    for live in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        snapshot_and_log16(dir.path(), &mut rng);
        let idx = Hnsw::open(dir.path(), params16()).unwrap();
        assert!(idx.rows_mapped());
        idx.insert(5000, &v16(&mut rng)).unwrap();
        let before = idx.dump();
        if live {
            idx.condense_live().unwrap();
        } else {
            idx.condense().unwrap();
        }
        assert!(!idx.rows_mapped(), "live={live}");
        assert!(!persist::snapshot_path(dir.path(), 1).exists());
        assert_eq!(deleted_mappings(dir.path()), Vec::<String>::new());
        assert_eq!(idx.dump(), before, "the copy holds the same rows");
        idx.insert(5001, &v16(&mut rng)).unwrap();
        let again = reloads_as_is(idx, dir.path(), params16());
        assert!(again.rows_mapped(), "the new snapshot is mapped in turn");
    }
}

/// Inserts, deletes and condensations racing on an index that starts mapped.
#[test]
fn changes_beside_condensations_of_a_mapped_index_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    snapshot_and_log16(dir.path(), &mut rand::rngs::StdRng::seed_from_u64(13));
    let idx = std::sync::Arc::new(Hnsw::open(dir.path(), params16()).unwrap());
    assert!(idx.rows_mapped());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let idx = idx.clone();
            let done = &done;
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(t));
                for i in 0..600u32 {
                    let key = 10_000 * (t + 1) + i;
                    idx.insert(key, &v16(&mut rng)).unwrap();
                    if i % 5 == 4 {
                        idx.delete(key - 2).unwrap();
                    }
                    let _ = idx.search(&v16(&mut rng), 5, None).unwrap();
                }
                done.fetch_or(t == 1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let idx = idx.clone();
        let done = &done;
        s.spawn(move || {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || n < 2 {
                if n % 2 == 0 {
                    idx.condense().unwrap();
                } else {
                    idx.condense_live().unwrap();
                }
                n += 1;
            }
        });
    });
    assert!(!idx.rows_mapped());
    let idx = std::sync::Arc::into_inner(idx).unwrap();
    reloads_as_is(idx, dir.path(), params16());
}

/// A version 1 snapshot (rows right after the fixed fields) still loads, by
/// reading its rows.
#[test]
fn a_version_1_snapshot_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    snapshot_and_log16(dir.path(), &mut rand::rngs::StdRng::seed_from_u64(14));
    let want = Hnsw::open(dir.path(), params16()).unwrap().dump();
    let snap = persist::snapshot_path(dir.path(), 1);
    let v2 = std::fs::read(&snap).unwrap();
    let fixed = persist::LOG_HEADER_LEN + 9;
    assert_eq!(u32::from_le_bytes(v2[8..12].try_into().unwrap()), 2);
    let mut v1 = v2[..fixed].to_vec();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&v2[persist::ROWS_OFFSET as usize..v2.len() - 4]);
    let crc = crc32c::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&snap, v1).unwrap();
    let idx = Hnsw::open(dir.path(), params16()).unwrap();
    assert!(!idx.rows_mapped());
    assert_eq!(idx.dump(), want);
}

/// Rows of two lines (32 dimensions) map too, and growing past the loaded
/// capacity copies the mapping into the index's own memory; either way the
/// graph loads back.
#[test]
fn a_mapped_index_of_wider_rows_grows_into_its_own_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = params16();
    p.dim = 32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let mut v = || -> Vec<f32> { (0..32).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    {
        let idx = Hnsw::open(dir.path(), p.clone()).unwrap();
        for i in 0..300u32 {
            idx.insert(i, &v()).unwrap();
        }
        idx.condense_live().unwrap();
    }
    let idx = Hnsw::open(dir.path(), p.clone()).unwrap();
    assert!(idx.rows_mapped());
    let probe = v();
    let before = idx.search(&probe, 10, None).unwrap();
    for i in 300..1000u32 {
        idx.insert(i, &v()).unwrap();
    }
    assert!(!idx.rows_mapped(), "growth copied the rows");
    assert!(idx.search(&probe, 10, None).unwrap()[0].distance <= before[0].distance);
    reloads_as_is(idx, dir.path(), p);
}

/// The parameters of the 64-dimension tests below (builds score codes from
/// 64 dimensions up).
fn params64() -> HnswParams {
    let mut p = HnswParams::new(Space::L2, 64);
    p.ef_construction = 64;
    p
}

/// `n` points of 64 coordinates uniform in [-1, 1).
fn points64(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..64).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect()
}

/// `vs` labelled by position, as `insert_parallel` takes them.
fn labelled(vs: &[Vec<f32>]) -> Vec<(u32, &[f32])> {
    vs.iter()
        .enumerate()
        .map(|(i, v)| (i as u32, &v[..]))
        .collect()
}

/// At least 95% of the `probes` find themselves as their nearest.
fn most_find_themselves(idx: &Hnsw, vs: &[Vec<f32>], probes: impl Iterator<Item = usize>) {
    let (mut found, mut n) = (0, 0);
    for i in probes {
        n += 1;
        found += usize::from(idx.search(&vs[i], 1, None).unwrap()[0].label == i as u32);
    }
    assert!(found * 100 >= n * 95, "{found} of {n} found themselves");
}

/// Rows past a mebibyte are an anonymous mapping that grows in place
/// (`mremap`) between parallel inserts: every vector reads back as inserted,
/// and searches find them.
#[test]
fn rows_grown_in_place_keep_every_vector() {
    let idx = Hnsw::new(params64());
    idx.set_ef_search(100);
    let vs = points64(5000, 16);
    let items = labelled(&vs);
    let grown = || crate::hnsw::GROWN_IN_PLACE.with(|g| g.get());
    idx.insert_parallel(&items[..2000], 2).unwrap();
    assert!(!idx.rows_anon(), "2000 rows of 256 bytes stay on the heap");
    // 2000 -> 4500 slots copies into a mapping of 1.1 MiB; 4500 -> 9000 remaps
    // it (`reserve`, on this thread, before the inserting threads start).
    idx.insert_parallel(&items[2000..4500], 2).unwrap();
    assert!(idx.rows_anon());
    let before = grown();
    idx.insert_parallel(&items[4500..], 2).unwrap();
    assert!(idx.rows_anon());
    assert_eq!(grown(), before + 1, "grown in place");
    assert_eq!(idx.stats().slots, 5000);
    for (i, v) in vs.iter().enumerate() {
        assert_eq!(
            idx.get_vector(i as u32).as_deref(),
            Some(&v[..]),
            "vector {i}"
        );
    }
    most_find_themselves(&idx, &vs, (0..5000).step_by(7));
}

/// Every written 8-bit code (what builds score) is its row's encoding: through
/// growth, deletes and repair; after a restart (which leaves them unwritten,
/// for the changes that walk them to write); and the graph built on them finds
/// what exact search finds.
#[test]
fn codes_follow_rows_through_growth_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let p = params64();
    let vs = points64(4000, 17);
    let items = labelled(&vs);
    {
        let idx = Hnsw::open(dir.path(), p.clone()).unwrap();
        idx.insert_parallel(&items[..3000], 2).unwrap();
        for i in (0..3000).step_by(5) {
            idx.delete(i).unwrap();
        }
        idx.repair().unwrap();
        assert_eq!(idx.coded_rows(), idx.len());
        assert_eq!(idx.stale_codes(), Vec::<u32>::new());
        idx.condense_live().unwrap();
        idx.insert_parallel(&items[3000..3500], 2).unwrap();
        idx.sync().unwrap();
    }
    // Snapshot plus log: the codes wait for the first change.
    let idx = Hnsw::open(dir.path(), p.clone()).unwrap();
    assert_eq!(idx.coded_rows(), 0);
    assert!(!idx.search(&vs[1], 10, None).unwrap().is_empty());
    assert_eq!(idx.coded_rows(), 0, "a search does not write them");
    idx.insert_parallel(&items[3500..], 2).unwrap();
    assert!(idx.coded_rows() > 500);
    assert_eq!(idx.stale_codes(), Vec::<u32>::new());
    idx.set_ef_search(64);
    let live = (0..4000).filter(|i| i % 5 != 0 || *i >= 3000);
    most_find_themselves(&idx, &vs, live.step_by(7));
    idx.sync().unwrap();
    drop(idx);
    // A repair first also writes them.
    let idx = Hnsw::open(dir.path(), p).unwrap();
    idx.delete(3999).unwrap();
    assert_eq!(idx.coded_rows(), 0);
    idx.repair().unwrap();
    assert!(idx.coded_rows() > 0);
    assert_eq!(idx.stale_codes(), Vec::<u32>::new());
}

/// A quiet index gives its build codes back (maintenance drops them once no
/// change has come for a second); later inserts write back only the codes
/// their walks score, and the graph they build is as good.
#[test]
fn a_quiet_index_drops_its_codes_and_changes_write_back_what_they_walk() {
    let dir = tempfile::tempdir().unwrap();
    let p = params64();
    let vs = points64(9000, 23);
    let items = labelled(&vs);
    let idx = std::sync::Arc::new(Hnsw::open(dir.path(), p).unwrap());
    // Codes of 1 MiB and more are a mapping of their own (smaller ones stay).
    idx.reserve(9000);
    idx.insert_parallel(&items[..6000], 2).unwrap();
    assert_eq!(idx.coded_rows(), 6000);

    let health = std::sync::Arc::new(indigo_health::Health::new());
    let handle = idx.spawn_maintenance(1 << 30, health.clone());
    let t = std::time::Instant::now();
    while idx.coded_rows() > 0 {
        assert!(
            t.elapsed().as_secs() < 120,
            "maintenance never dropped the codes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // One insert writes back the codes its walk scored, not all of them.
    idx.insert(6000, &vs[6000]).unwrap();
    let back = idx.coded_rows();
    assert!(back > 10 && back < 3000, "{back} codes written back");
    assert_eq!(idx.stale_codes(), Vec::<u32>::new());
    // Builds in three parts, the codes dropped before each (as maintenance
    // does, between changes), and a thread dropping them whenever no insert
    // is under way (one insert at a time from two threads: a batch holds
    // drops off for its whole course).
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let dropper = s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                idx.drop_codes();
                std::thread::yield_now();
            }
        });
        for part in items[6001..].chunks(1000) {
            // Refused only while the dropper thread holds the lock.
            while !idx.drop_codes() {}
            assert_eq!(idx.coded_rows(), 0);
            let (a, b) = part.split_at(part.len() / 2);
            let other = s.spawn(|| a.iter().for_each(|&(l, v)| idx.insert(l, v).unwrap()));
            b.iter().for_each(|&(l, v)| idx.insert(l, v).unwrap());
            other.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        dropper.join().unwrap();
    });
    assert_eq!(idx.stale_codes(), Vec::<u32>::new());
    idx.set_ef_search(64);
    most_find_themselves(&idx, &vs, (0..9000).step_by(7));
    idx.close();
    handle.join().unwrap();
    assert!(health.failures().is_empty());
}
