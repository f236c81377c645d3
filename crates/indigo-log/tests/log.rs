use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indigo_log::{CollectionId, FileLog, Log, LogError, LogOffset, LogOptions};
use indigo_storage::fs::{FaultFs, FaultKind, FileSystem, ReadableFile, WritableFile};
use rand::{Rng, SeedableRng};

fn cid(n: u8) -> CollectionId {
    CollectionId([n; 16])
}

fn open(fs: &Arc<dyn FileSystem>) -> Result<FileLog, LogError> {
    FileLog::open_with_fs(
        fs.clone(),
        Path::new("/log"),
        LogOptions { file_bytes: 4096 },
    )
}

#[test]
fn offsets_are_per_collection_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = FileLog::open(dir.path()).unwrap();
        assert_eq!(log.append(cid(1), b"a").unwrap(), LogOffset(1));
        assert_eq!(log.append(cid(2), b"x").unwrap(), LogOffset(1));
        assert_eq!(log.append(cid(1), b"b").unwrap(), LogOffset(2));
        let r = log.read(cid(1), LogOffset(0), 10).unwrap();
        assert_eq!(
            r.iter().map(|r| &*r.payload).collect::<Vec<_>>(),
            [b"a", b"b"]
        );
        assert_eq!(
            log.read(cid(1), LogOffset(1), 10).unwrap()[0].offset,
            LogOffset(2)
        );
        assert!(log.read(cid(3), LogOffset(0), 10).unwrap().is_empty());
    }
    let log = FileLog::open(dir.path()).unwrap();
    assert_eq!(log.head(cid(1)), LogOffset(2));
    assert_eq!(log.append(cid(1), b"c").unwrap(), LogOffset(3));
    log.truncate(cid(1), LogOffset(2)).unwrap();
    let r = log.read(cid(1), LogOffset(0), 10).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].offset, LogOffset(3));
}

#[test]
fn prefixes_are_the_payloads_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path()).unwrap();
    log.append(cid(1), b"abcdef").unwrap();
    log.append(cid(1), b"xy").unwrap();
    log.append(cid(1), b"").unwrap();
    let r = log.read_prefixes(cid(1), LogOffset(0), 10, 3).unwrap();
    assert_eq!(
        r.iter()
            .map(|r| (r.offset.0, &*r.payload))
            .collect::<Vec<_>>(),
        [(1, &b"abc"[..]), (2, b"xy"), (3, b"")]
    );
    let whole = log.read(cid(1), LogOffset(1), 10).unwrap();
    assert_eq!(&*whole[0].payload, b"xy");
}

#[test]
fn truncation_deletes_files_only_when_every_collection_is_past_them() {
    let fs: Arc<dyn FileSystem> = Arc::new(FaultFs::new());
    let log = open(&fs).unwrap();
    for i in 0..200u32 {
        log.append(cid((i % 2) as u8), &[7u8; 100]).unwrap();
    }
    let files = log.file_count();
    assert!(files > 3, "{files} files");
    log.truncate(cid(0), LogOffset(100)).unwrap();
    assert_eq!(
        log.file_count(),
        files,
        "collection 1 still needs every file"
    );
    log.truncate(cid(1), LogOffset(50)).unwrap();
    let left = log.file_count();
    assert!(left < files && left > 1, "{left} of {files}");
    drop(log);
    // Reopening replays only what is left; offsets continue.
    let log = open(&fs).unwrap();
    assert_eq!(log.head(cid(1)), LogOffset(100));
    assert_eq!(log.append(cid(1), b"z").unwrap(), LogOffset(101));
}

/// A file system whose fsync takes time, like a real disk, counting fsyncs.
struct SlowSync {
    inner: FaultFs,
    syncs: Arc<AtomicU64>,
}
struct SlowFile {
    inner: Arc<dyn WritableFile>,
    syncs: Arc<AtomicU64>,
}
impl WritableFile for SlowFile {
    fn append(&self, d: &[u8]) -> std::io::Result<()> {
        self.inner.append(d)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(2));
        self.inner.sync()
    }
}
impl FileSystem for SlowSync {
    fn create(&self, p: &Path) -> std::io::Result<Arc<dyn WritableFile>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.create(p)?,
            syncs: self.syncs.clone(),
        }))
    }
    fn open_append(&self, p: &Path) -> std::io::Result<Arc<dyn WritableFile>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.open_append(p)?,
            syncs: self.syncs.clone(),
        }))
    }
    fn open(&self, p: &Path) -> std::io::Result<Arc<dyn ReadableFile>> {
        self.inner.open(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> std::io::Result<()> {
        self.inner.rename(a, b)
    }
    fn remove(&self, p: &Path) -> std::io::Result<()> {
        self.inner.remove(p)
    }
    fn list(&self, d: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(d)
    }
    fn create_dir_all(&self, d: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(d)
    }
    fn remove_dir_all(&self, d: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(d)
    }
    fn sync_dir(&self, d: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(d)
    }
    fn exists(&self, p: &Path) -> bool {
        self.inner.exists(p)
    }
    fn is_dir(&self, p: &Path) -> bool {
        self.inner.is_dir(p)
    }
}

#[test]
fn concurrent_appenders_share_fsyncs_and_get_dense_offsets() {
    let syncs = Arc::new(AtomicU64::new(0));
    let fs: Arc<dyn FileSystem> = Arc::new(SlowSync {
        inner: FaultFs::new(),
        syncs: syncs.clone(),
    });
    let log = Arc::new(
        FileLog::open_with_fs(fs.clone(), Path::new("/log"), LogOptions::default()).unwrap(),
    );
    let before = syncs.load(Ordering::Relaxed);
    let threads = 8;
    let per = 50;
    let got: Vec<Vec<(u8, u64)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || {
                    (0..per)
                        .map(|i| {
                            let c = ((t + i) % 3) as u8;
                            (
                                c,
                                log.append(cid(c), format!("{t}-{i}").as_bytes()).unwrap().0,
                            )
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let n = (threads * per) as u64;
    let used = syncs.load(Ordering::Relaxed) - before;
    assert!(
        used < n / 2,
        "{used} fsyncs for {n} appends: no group commit"
    );
    let mut by_c: HashMap<u8, Vec<u64>> = HashMap::new();
    for (c, off) in got.into_iter().flatten() {
        by_c.entry(c).or_default().push(off);
    }
    for (c, mut offs) in by_c {
        offs.sort_unstable();
        let want: Vec<u64> = (1..=offs.len() as u64).collect();
        assert_eq!(offs, want, "collection {c}: offsets not dense and unique");
        let recs = log.read(cid(c), LogOffset(0), usize::MAX).unwrap();
        assert_eq!(recs.len(), want.len());
    }
}

#[test]
fn every_crash_point_keeps_acknowledged_records_and_no_partial_one() {
    let total = {
        let f = FaultFs::new();
        let fs: Arc<dyn FileSystem> = Arc::new(f.clone());
        let log = open(&fs).unwrap();
        let before = f.op_count();
        for i in 0..60u32 {
            log.append(cid((i % 3) as u8), &vec![i as u8; 20 + i as usize * 7])
                .unwrap();
        }
        f.op_count() - before
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for point in 1..=total {
        for torn in [false, true] {
            let f = FaultFs::new();
            let fs: Arc<dyn FileSystem> = Arc::new(f.clone());
            let log = open(&fs).unwrap();
            f.fail_after(None, point, FaultKind::Crash);
            let mut acked: Vec<(u8, u64, Vec<u8>)> = Vec::new();
            let mut attempted = 0;
            for i in 0..60u32 {
                let c = (i % 3) as u8;
                let payload = vec![i as u8; 20 + i as usize * 7];
                attempted += 1;
                match log.append(cid(c), &payload) {
                    Ok(off) => acked.push((c, off.0, payload)),
                    Err(_) => break,
                }
            }
            std::mem::forget(log);
            let seed: u64 = rng.gen();
            let mut r = rand::rngs::StdRng::seed_from_u64(seed);
            f.crash(|n| if torn { r.gen_range(0..=n) } else { 0 });
            let log = open(&fs).unwrap_or_else(|e| panic!("point {point}: reopen: {e}"));
            let mut survived = 0;
            for c in 0..3u8 {
                let recs = log.read(cid(c), LogOffset(0), usize::MAX).unwrap();
                for (i, r) in recs.iter().enumerate() {
                    assert_eq!(r.offset.0, i as u64 + 1, "point {point}: offsets dense");
                }
                let mine: Vec<_> = acked.iter().filter(|a| a.0 == c).collect();
                assert!(
                    recs.len() >= mine.len(),
                    "point {point}: acknowledged record lost"
                );
                for (a, r) in mine.iter().zip(&recs) {
                    assert_eq!(
                        &*r.payload,
                        a.2.as_slice(),
                        "point {point}: payload differs"
                    );
                }
                survived += recs.len();
            }
            // At most the one append in flight can be there unacknowledged, whole.
            assert!(survived <= acked.len() + 1 && survived <= attempted);
        }
    }
}

#[test]
fn offsets_continue_after_every_record_of_a_collection_was_truncated() {
    let fs: Arc<dyn FileSystem> = Arc::new(FaultFs::new());
    let log = open(&fs).unwrap();
    for _ in 0..100 {
        log.append(cid(1), &[1u8; 100]).unwrap();
    }
    log.append(cid(2), b"other").unwrap();
    log.truncate(cid(1), LogOffset(100)).unwrap();
    for _ in 0..60 {
        log.append(cid(2), &[2u8; 100]).unwrap();
    }
    log.truncate(cid(2), LogOffset(61)).unwrap();
    drop(log);
    let log = open(&fs).unwrap();
    assert!(log.read(cid(1), LogOffset(0), 10).unwrap().is_empty());
    assert_eq!(log.head(cid(1)), LogOffset(100));
    assert_eq!(log.append(cid(1), b"next").unwrap(), LogOffset(101));
    assert_eq!(log.append(cid(2), b"next").unwrap(), LogOffset(62));
}

#[test]
fn a_failed_fsync_refuses_further_appends_and_reopen_keeps_acknowledged_records() {
    use indigo_storage::fs::FaultOp;
    let f = FaultFs::new();
    let fs: Arc<dyn FileSystem> = Arc::new(f.clone());
    let log = open(&fs).unwrap();
    log.append(cid(1), b"kept").unwrap();
    f.fail_after(Some(FaultOp::Sync), 1, FaultKind::Io);
    let err = log.append(cid(1), b"failed").unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    assert!(matches!(
        log.append(cid(1), b"later"),
        Err(LogError::Poisoned(_))
    ));
    assert_eq!(
        log.read(cid(1), LogOffset(0), 10).unwrap().len(),
        1,
        "the failed append is not visible"
    );
    drop(log);
    f.clear_fault();
    let log = open(&fs).unwrap();
    let recs = log.read(cid(1), LogOffset(0), 10).unwrap();
    assert_eq!(&*recs[0].payload, b"kept");
    // The unacknowledged record may have reached the page cache; if so it is whole.
    assert!(recs.len() <= 2);
    let next = log.append(cid(1), b"after reopen").unwrap();
    assert_eq!(next.0, recs.len() as u64 + 1);
}

#[test]
fn truncating_everything_gives_back_the_space_of_a_large_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path()).unwrap();
    for _ in 0..40 {
        log.append(cid(1), &[1u8; 64 << 10]).unwrap();
    }
    let bytes = || -> u64 {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    assert!(bytes() > 2 << 20);
    log.truncate(cid(1), LogOffset(39)).unwrap();
    assert!(bytes() > 2 << 20, "a record is still live");
    log.truncate(cid(1), LogOffset(40)).unwrap();
    assert!(bytes() < 4096, "{} bytes left", bytes());
    drop(log);
    let log = FileLog::open(dir.path()).unwrap();
    assert_eq!(log.append(cid(1), b"next").unwrap(), LogOffset(41));
}
