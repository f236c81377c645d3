//! Indigo's LSM-tree store: named buckets of sorted byte keys, written through a
//! write-ahead log into a memtable, flushed into immutable bloom-filtered segments
//! and merged in the background.
//!
//! Invariants:
//! - A batch is applied to the WAL and then to the memtable under one lock, so
//!   after a crash it is wholly present or wholly absent, and readers see all or none
//!   of it.
//! - `MANIFEST` names every live segment; a file it does not name is garbage. It is
//!   replaced atomically and only after the files it names are durable.
//! - A WAL file is deleted only after the manifest records that its memtable is in
//!   segments (`wal_min` has moved past it).
//! - Segments are immutable; a merged-away segment's file is removed when its last
//!   reader drops it.

pub use indigo_fs as fs;
use indigo_health::{Backoff, Health};
pub mod keys;

mod bloom;
mod codec;
mod error;
mod manifest;
mod memtable;
mod segment;
mod wal;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

pub use error::{Result, StorageError};
pub use roaring::RoaringTreemap;

use fs::{FileSystem, StdFs, WritableFile};
use manifest::{BucketMeta, Manifest, SegmentMeta};
use memtable::{AsEntryRef, Entry, MemTable, Op};
use segment::{ReadStats, Segment, SegmentIter, SegmentWriter};

/// How many equal-level segments a background merge combines.
const MERGE_FANOUT: usize = 4;

/// How a bucket interprets its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Strategy {
    /// key → value; the latest write wins, deletes are tombstones.
    Replace = 0,
    /// key → set of u64 ids (roaring bitmaps), additions and removals merged on read.
    Set = 1,
}

impl Strategy {
    fn from_u8(v: u8) -> Option<Strategy> {
        match v {
            0 => Some(Strategy::Replace),
            1 => Some(Strategy::Set),
            _ => None,
        }
    }
}

/// Tuning knobs. The defaults suit a server; tests shrink the memtable.
#[derive(Debug, Clone)]
pub struct Options {
    /// Freeze and flush the memtable once it holds about this many bytes.
    pub memtable_bytes: usize,
    /// Flush and merge on a background thread. When false, flushes happen inline in
    /// the writer and merges only on [`Store::compact`] / [`Store::merge_step`], which
    /// makes I/O deterministic for crash tests.
    pub background: bool,
    /// Writers wait when this many frozen memtables are queued for flushing.
    pub max_frozen: usize,
    /// Where the background threads report failures (subject: the store's
    /// directory). Without one they are only seen by writers, as errors.
    pub health: Option<Arc<Health>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memtable_bytes: 64 << 20,
            background: true,
            max_frozen: 2,
            health: None,
        }
    }
}

/// Per-write durability.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Make this batch (and everything before it) durable before returning.
    pub sync: bool,
}

impl WriteOptions {
    pub const SYNC: WriteOptions = WriteOptions { sync: true };
}

/// A handle to a bucket, from [`Store::bucket`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bucket {
    id: u32,
    name: Arc<str>,
    strategy: Strategy,
}

impl Bucket {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }
}

/// Operations applied atomically by [`Store::write`].
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<Op>,
    /// The first operation that did not fit its bucket's strategy.
    invalid: Option<(String, Strategy)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn clear(&mut self) {
        self.ops.clear();
        self.invalid = None;
    }
    fn check(&mut self, b: &Bucket, want: Strategy) -> bool {
        if b.strategy != want && self.invalid.is_none() {
            self.invalid = Some((b.name.to_string(), b.strategy));
        }
        b.strategy == want
    }
    pub fn put(&mut self, b: &Bucket, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        if self.check(b, Strategy::Replace) {
            self.ops.push(Op::Put {
                bucket: b.id,
                key: key.into(),
                value: value.into(),
            });
        }
    }
    pub fn delete(&mut self, b: &Bucket, key: impl Into<Vec<u8>>) {
        if self.check(b, Strategy::Replace) {
            self.ops.push(Op::Delete {
                bucket: b.id,
                key: key.into(),
            });
        }
    }
    pub fn set_add(&mut self, b: &Bucket, key: impl Into<Vec<u8>>, id: u64) {
        self.set_add_many(b, key, [id]);
    }
    pub fn set_remove(&mut self, b: &Bucket, key: impl Into<Vec<u8>>, id: u64) {
        self.set_remove_many(b, key, [id]);
    }
    /// Adds every id of `ids` to the set at `key` in one change (cheaper than one
    /// change per id: the set is composed, and its key logged, once).
    pub fn set_add_many(
        &mut self,
        b: &Bucket,
        key: impl Into<Vec<u8>>,
        ids: impl IntoIterator<Item = u64>,
    ) {
        self.set_change(b, key.into(), sorted(ids), true);
    }
    pub fn set_remove_many(
        &mut self,
        b: &Bucket,
        key: impl Into<Vec<u8>>,
        ids: impl IntoIterator<Item = u64>,
    ) {
        self.set_change(b, key.into(), sorted(ids), false);
    }
    fn set_change(&mut self, b: &Bucket, key: Vec<u8>, ids: Vec<u64>, add: bool) {
        if ids.is_empty() || !self.check(b, Strategy::Set) {
            return;
        }
        let bucket = b.id;
        self.ops.push(if add {
            Op::SetAdd { bucket, key, ids }
        } else {
            Op::SetRemove { bucket, key, ids }
        });
    }
}

fn sorted(ids: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = ids.into_iter().collect();
    if !v.is_sorted_by(|a, b| a < b) {
        v.sort_unstable();
        v.dedup();
    }
    v
}

/// Read-path counters, for checking that bloom filters do their job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Point lookups that reached a segment.
    pub segment_probes: u64,
    /// Of those, how many the bloom filter answered without reading a block.
    pub bloom_negatives: u64,
    pub block_reads: u64,
    /// Live segments over all buckets.
    pub segments: usize,
    /// Bytes in live segment files.
    pub segment_bytes: u64,
    /// About the bytes the memtables (active and frozen) hold.
    pub memtable_bytes: u64,
}

/// Live segments per bucket (oldest first) and the bucket directory.
#[derive(Clone, Default)]
struct Version {
    segments: HashMap<u32, Vec<Arc<Segment>>>,
    by_name: HashMap<String, Bucket>,
    by_id: HashMap<u32, Bucket>,
}

/// What a reader needs, captured in one step so that a concurrent flush can neither
/// hide a key nor show it twice.
struct View {
    active: Arc<MemTable>,
    /// Frozen memtables waiting to be flushed, oldest first.
    frozen: Vec<Arc<MemTable>>,
    version: Arc<Version>,
}

struct Writer {
    wal: Arc<dyn WritableFile>,
    wal_no: u64,
    /// Batches appended so far (the group-commit sequence).
    seq: u64,
    /// Encoding space reused across appends; a batch above [`WAL_BUF_KEEP`] does not
    /// leave its size behind (an ingest's 1000-vector batches are megabytes, held
    /// per open collection).
    buf: Vec<u8>,
}

/// The largest encoding buffer a writer keeps between appends.
const WAL_BUF_KEEP: usize = 256 << 10;

#[derive(Default)]
struct Background {
    shutdown: bool,
    /// Frozen memtables are waiting for the flush thread.
    flush: bool,
    /// New segments may have made a merge worthwhile.
    merge: bool,
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    opts: Options,
    next_file: AtomicU64,
    writer: Mutex<Writer>,
    view: RwLock<Arc<View>>,
    /// The current manifest; holding it serialises changes to it (flush, bucket
    /// creation, installing a merge). Never held while a merge writes its output.
    maint: Mutex<Manifest>,
    /// Serialises merges, so the segments a merge reads stay in place until it installs.
    merging: Mutex<()>,
    /// Highest batch sequence known durable.
    synced: Mutex<u64>,
    poisoned: Mutex<Option<String>>,
    stats: ReadStats,
    bg: Mutex<Background>,
    bg_cv: Condvar,
    /// Signalled whenever a frozen memtable has been flushed.
    flushed_cv: Condvar,
}

/// The WAL of a read-only store: every write fails.
struct ReadOnly;

impl WritableFile for ReadOnly {
    fn append(&self, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("the store is open for reading only"))
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The LSM store. Cheap to share by reference across threads.
pub struct Store {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

fn wal_name(no: u64) -> String {
    format!("{no:010}.wal")
}
fn seg_name(no: u64) -> String {
    format!("{no:010}.seg")
}
/// A segment being written: flushes (level 0) and merges apart, so an operator
/// (and a test) can tell which was interrupted. Open removes both.
fn tmp_seg_name(no: u64, level: u32) -> String {
    if level == 0 {
        format!("{no:010}.seg.tmp")
    } else {
        format!("{no:010}.seg.merge.tmp")
    }
}
fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (num, ext) = name.split_once('.')?;
    Some((num.parse().ok()?, ext))
}

impl Store {
    /// Opens (or creates) a store in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        Self::open_with_fs(Arc::new(StdFs), dir.as_ref(), opts)
    }

    /// Opens the store in `dir` for reading only: the segments its manifest names,
    /// nothing else (no WAL is replayed or written, no file is changed, writes are
    /// refused). For an immutable copy, such as an index version in object
    /// storage read through a caching [`FileSystem`]; segments are opened lazily by
    /// that file system's ranged reads.
    pub fn open_read_only(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<Store> {
        let manifest = Manifest::load(&*fs, dir)?.ok_or_else(|| {
            StorageError::corrupt(dir.join(manifest::NAME), "no manifest: not a store")
        })?;
        let version = Self::load_version(&fs, dir, &manifest, &mut Default::default())?;
        let inner = Arc::new(Inner {
            fs,
            dir: dir.to_path_buf(),
            opts: Options {
                background: false,
                ..Options::default()
            },
            next_file: AtomicU64::new(manifest.next_file),
            writer: Mutex::new(Writer {
                wal: Arc::new(ReadOnly),
                wal_no: 0,
                seq: 0,
                buf: Vec::new(),
            }),
            view: RwLock::new(Arc::new(View {
                active: Arc::new(MemTable::new(0)),
                frozen: Vec::new(),
                version: Arc::new(version),
            })),
            maint: Mutex::new(manifest),
            merging: Mutex::new(()),
            synced: Mutex::new(u64::MAX),
            poisoned: Mutex::new(Some("the store is open for reading only".into())),
            stats: ReadStats::default(),
            bg: Mutex::new(Background::default()),
            bg_cv: Condvar::new(),
            flushed_cv: Condvar::new(),
        });
        Ok(Store {
            inner,
            workers: Mutex::new(Vec::new()),
        })
    }

    /// The buckets and segments a manifest names, opened.
    fn load_version(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        manifest: &Manifest,
        live_files: &mut std::collections::HashSet<u64>,
    ) -> Result<Version> {
        let mut version = Version::default();
        for b in &manifest.buckets {
            let handle = Bucket {
                id: b.id,
                name: b.name.as_str().into(),
                strategy: b.strategy,
            };
            let mut segs = Vec::new();
            for s in &b.segments {
                let path = dir.join(seg_name(s.file_no));
                if !fs.exists(&path) {
                    return Err(StorageError::corrupt(
                        path,
                        "segment named by MANIFEST is missing",
                    ));
                }
                segs.push(Arc::new(Segment::open(
                    fs.clone(),
                    &path,
                    s.file_no,
                    s.level,
                    b.strategy,
                )?));
                live_files.insert(s.file_no);
            }
            version.segments.insert(b.id, segs);
            version.by_name.insert(b.name.clone(), handle.clone());
            version.by_id.insert(b.id, handle);
        }
        Ok(version)
    }

    /// The files that make up the store now, opened: the manifest and the segments
    /// it names (not the WAL: call [`Store::flush`] first so it holds nothing).
    /// They are opened under the lock merges take to swap files, so the set is
    /// one consistent state, and an open file stays readable after a later merge
    /// removes its name.
    pub fn open_files(&self) -> Result<Vec<(String, Arc<dyn fs::ReadableFile>)>> {
        let man = self.inner.maint.lock();
        let mut names = vec![manifest::NAME.to_string()];
        for b in &man.buckets {
            names.extend(b.segments.iter().map(|s| seg_name(s.file_no)));
        }
        names
            .into_iter()
            .map(|n| {
                let path = self.inner.dir.join(&n);
                let f = self
                    .inner
                    .fs
                    .open(&path)
                    .map_err(StorageError::io("open", &path))?;
                Ok((n, f))
            })
            .collect()
    }

    /// Opens a store on any [`FileSystem`]; replays and flushes WAL left by a crash.
    pub fn open_with_fs(fs: Arc<dyn FileSystem>, dir: &Path, opts: Options) -> Result<Store> {
        fs::create_dir_durable(&*fs, dir).map_err(StorageError::io("create directory", dir))?;
        let manifest = match Manifest::load(&*fs, dir)? {
            Some(m) => m,
            None => {
                let m = Manifest::default();
                m.store(&*fs, dir)?;
                m
            }
        };

        let mut live_files = std::collections::HashSet::new();
        let version = Self::load_version(&fs, dir, &manifest, &mut live_files)?;

        // Sort the directory: orphans from interrupted flushes and merges go, WAL files
        // not yet covered by segments are replayed.
        let mut next_file = manifest.next_file;
        let mut wals = Vec::new();
        for name in fs
            .list(dir)
            .map_err(StorageError::io("list directory", dir))?
        {
            let path = dir.join(&name);
            if name.ends_with(".tmp") {
                fs.remove(&path)
                    .map_err(StorageError::io("remove temporary file", &path))?;
                continue;
            }
            let Some((no, ext)) = parse_name(&name) else {
                continue;
            };
            next_file = next_file.max(no + 1);
            match ext {
                "seg" if !live_files.contains(&no) => fs
                    .remove(&path)
                    .map_err(StorageError::io("remove orphan segment", &path))?,
                "wal" if no < manifest.wal_min => fs
                    .remove(&path)
                    .map_err(StorageError::io("remove flushed WAL", &path))?,
                "wal" => wals.push(no),
                _ => {}
            }
        }
        wals.sort_unstable();

        let replayed = MemTable::new(wals.last().copied().unwrap_or(0));
        for (i, &no) in wals.iter().enumerate() {
            let path = dir.join(wal_name(no));
            let r = wal::replay(&*fs, &path)?;
            if r.torn && i + 1 < wals.len() {
                return Err(StorageError::corrupt(
                    path,
                    "damaged record in a WAL that is not the newest; later writes depend on it",
                ));
            }
            for ops in &r.batches {
                if let Some(op) = ops
                    .iter()
                    .find(|op| !version.by_id.contains_key(&op.bucket()))
                {
                    return Err(StorageError::corrupt(
                        path,
                        format!("record names unknown bucket id {}", op.bucket()),
                    ));
                }
                replayed.apply(ops);
            }
        }

        let wal_no = next_file;
        let wal_path = dir.join(wal_name(wal_no));
        let wal = fs
            .create(&wal_path)
            .map_err(StorageError::io("create WAL", &wal_path))?;
        wal.append(&wal::header())
            .map_err(StorageError::io("write WAL", &wal_path))?;
        wal.sync()
            .map_err(StorageError::io("fsync WAL", &wal_path))?;
        fs.sync_dir(dir)
            .map_err(StorageError::io("fsync directory", dir))?;

        let frozen = if wals.is_empty() {
            Vec::new()
        } else {
            vec![Arc::new(replayed)]
        };
        let inner = Arc::new(Inner {
            fs,
            dir: dir.to_path_buf(),
            opts,
            next_file: AtomicU64::new(wal_no + 1),
            writer: Mutex::new(Writer {
                wal,
                wal_no,
                seq: 0,
                buf: Vec::new(),
            }),
            view: RwLock::new(Arc::new(View {
                active: Arc::new(MemTable::new(wal_no)),
                frozen,
                version: Arc::new(version),
            })),
            maint: Mutex::new(manifest),
            merging: Mutex::new(()),
            synced: Mutex::new(0),
            poisoned: Mutex::new(None),
            stats: ReadStats::default(),
            bg: Mutex::new(Background::default()),
            bg_cv: Condvar::new(),
            flushed_cv: Condvar::new(),
        });
        // Recovery ends with the replayed WAL in a segment, so the next crash has less
        // to replay.
        while inner.flush_oldest()? {}

        let mut workers = Vec::new();
        if inner.opts.background {
            for (name, low_priority) in [("indigo-flush", false), ("indigo-merge", true)] {
                let w = inner.clone();
                let h = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || w.background_loop(low_priority))
                    .map_err(StorageError::io("spawn background thread", dir))?;
                workers.push(h);
            }
        }
        inner.recovered(indigo_health::FLUSH);
        inner.recovered(indigo_health::MERGE);
        Ok(Store {
            inner,
            workers: Mutex::new(workers),
        })
    }

    /// Returns the bucket `name`, creating it (durably) if it does not exist.
    pub fn bucket(&self, name: &str, strategy: Strategy) -> Result<Bucket> {
        let check = |b: &Bucket| {
            if b.strategy == strategy {
                Ok(b.clone())
            } else {
                Err(StorageError::StrategyMismatch {
                    name: name.to_string(),
                    existing: b.strategy,
                    requested: strategy,
                })
            }
        };
        if let Some(b) = self.inner.view.read().version.by_name.get(name) {
            return check(b);
        }
        let mut man = self.inner.maint.lock();
        if let Some(b) = self.inner.view.read().version.by_name.get(name) {
            return check(b);
        }
        self.inner.check_poisoned()?;
        let id = man.buckets.iter().map(|b| b.id + 1).max().unwrap_or(1);
        let mut next = man.clone();
        next.buckets.push(BucketMeta {
            id,
            name: name.to_string(),
            strategy,
            segments: Vec::new(),
        });
        next.next_file = self.inner.next_file.load(Ordering::SeqCst);
        next.store(&*self.inner.fs, &self.inner.dir)?;
        *man = next;
        let b = Bucket {
            id,
            name: name.into(),
            strategy,
        };
        self.inner.update_version(|v| {
            v.segments.insert(id, Vec::new());
            v.by_name.insert(name.to_string(), b.clone());
            v.by_id.insert(id, b.clone());
        });
        Ok(b)
    }

    /// Every bucket, in no particular order.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.inner
            .view
            .read()
            .version
            .by_id
            .values()
            .cloned()
            .collect()
    }

    /// Appends a batch to the WAL and applies it. With `opts.sync`, returns only once
    /// the batch is durable; concurrent syncing writers share one fsync.
    pub fn write(&self, batch: &WriteBatch, opts: WriteOptions) -> Result<()> {
        self.write_inner(batch, opts, true)
    }

    /// [`Store::write`] (not synced) that leaves a full memtable for
    /// [`Store::rotate_if_full`]: rotating waits for room among the frozen
    /// tables and fsyncs the old WAL, which a caller holding its readers off
    /// (a segment publishing a chunk) does after letting them in.
    pub fn write_unrotated(&self, batch: &WriteBatch) -> Result<()> {
        self.write_inner(batch, WriteOptions::default(), false)
    }

    /// Freezes the active memtable if it is full (see [`Store::write_unrotated`]).
    pub fn rotate_if_full(&self) -> Result<()> {
        let mut w = self.inner.writer.lock();
        self.inner.check_poisoned()?;
        let full = self.inner.view.read().active.approx_bytes() >= self.inner.opts.memtable_bytes;
        if full {
            self.inner.rotate(&mut w)?;
        }
        Ok(())
    }

    fn write_inner(&self, batch: &WriteBatch, opts: WriteOptions, rotate: bool) -> Result<()> {
        if let Some((name, strategy)) = &batch.invalid {
            return Err(StorageError::WrongStrategy {
                name: name.clone(),
                strategy: *strategy,
            });
        }
        let seq = {
            let mut w = self.inner.writer.lock();
            self.inner.check_poisoned()?;
            let Writer { wal, buf, .. } = &mut *w;
            buf.clear();
            wal::encode_record(&batch.ops, buf);
            if let Err(e) = wal.append(buf) {
                return Err(self.inner.poison(StorageError::Io {
                    op: "append to WAL",
                    path: self.inner.dir.join(wal_name(w.wal_no)),
                    source: e,
                }));
            }
            if buf.capacity() > WAL_BUF_KEEP {
                *buf = Vec::new();
            }
            w.seq += 1;
            // Only the active table: holding the whole view could leave this writer
            // the last owner of a flushed table, paying for its deallocation.
            let active = self.inner.view.read().active.clone();
            active.apply(&batch.ops);
            if rotate && active.approx_bytes() >= self.inner.opts.memtable_bytes {
                self.inner.rotate(&mut w)?;
            }
            w.seq
        };
        if opts.sync {
            self.inner.sync_to(seq)?;
        }
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn sync(&self) -> Result<()> {
        let seq = self.inner.writer.lock().seq;
        self.inner.sync_to(seq)
    }

    /// Writes the memtable to segments now (and waits until it is done).
    pub fn flush(&self) -> Result<()> {
        {
            let mut w = self.inner.writer.lock();
            self.inner.check_poisoned()?;
            if !self.inner.view.read().active.is_empty() {
                self.inner.rotate(&mut w)?;
            }
        }
        while self.inner.flush_oldest()? {}
        Ok(())
    }

    /// One step of the background merge policy; `false` when nothing needed merging.
    pub fn merge_step(&self) -> Result<bool> {
        self.inner.merge_once()
    }

    /// Flushes, then merges every bucket into one segment, dropping tombstones and
    /// overwritten values so their space comes back.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        let ids: Vec<u32> = self
            .inner
            .view
            .read()
            .version
            .by_id
            .keys()
            .copied()
            .collect();
        for id in ids {
            let _m = self.inner.merging.lock();
            let n = self.inner.view.read().version.segments[&id].len();
            if n > 1 {
                self.inner.merge_range(id, 0..n)?;
            }
        }
        Ok(())
    }

    /// The value of `key` in a replace bucket.
    pub fn get(&self, b: &Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.expect(b, Strategy::Replace)?;
        Ok(match self.inner.lookup(b.id, key)? {
            Some(Entry::Value(v)) => Some(v),
            _ => None,
        })
    }

    /// The set stored under `key` in a set bucket (empty if none).
    pub fn get_set(&self, b: &Bucket, key: &[u8]) -> Result<RoaringTreemap> {
        self.expect(b, Strategy::Set)?;
        Ok(match self.inner.lookup(b.id, key)? {
            Some(Entry::Set { adds, .. }) => adds,
            _ => RoaringTreemap::new(),
        })
    }

    /// Key/value pairs of a replace bucket in `(lo, hi)`, in key order.
    pub fn scan(
        &self,
        b: &Bucket,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.expect(b, Strategy::Replace)?;
        let mut out = Vec::new();
        for r in self.inner.range(b.id, lo, hi) {
            if let (k, Entry::Value(v)) = r? {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Key/set pairs of a set bucket in `(lo, hi)`, in key order; empty sets omitted.
    pub fn scan_set(
        &self,
        b: &Bucket,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, RoaringTreemap)>> {
        self.expect(b, Strategy::Set)?;
        let mut out = Vec::new();
        for r in self.inner.range(b.id, lo, hi) {
            if let (k, Entry::Set { adds, .. }) = r? {
                out.push((k, adds));
            }
        }
        Ok(out)
    }

    /// All pairs of a replace bucket whose key starts with `prefix`.
    pub fn scan_prefix(&self, b: &Bucket, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = keys::prefix_end(prefix);
        let hi = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.scan(b, Bound::Included(prefix), hi)
    }

    /// All pairs of a set bucket whose key starts with `prefix`.
    pub fn scan_set_prefix(
        &self,
        b: &Bucket,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, RoaringTreemap)>> {
        let end = keys::prefix_end(prefix);
        let hi = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.scan_set(b, Bound::Included(prefix), hi)
    }

    pub fn stats(&self) -> StoreStats {
        let view = self.inner.view.read().clone();
        let segs = view.version.segments.values().flatten();
        StoreStats {
            segment_probes: self.inner.stats.probes.load(Ordering::Relaxed),
            bloom_negatives: self.inner.stats.bloom_negatives.load(Ordering::Relaxed),
            block_reads: self.inner.stats.block_reads.load(Ordering::Relaxed),
            segments: view.version.segments.values().map(Vec::len).sum(),
            segment_bytes: segs.map(|s| s.size).sum(),
            memtable_bytes: std::iter::once(&view.active)
                .chain(view.frozen.iter())
                .map(|m| m.approx_bytes() as u64)
                .sum(),
        }
    }

    fn expect(&self, b: &Bucket, s: Strategy) -> Result<()> {
        if b.strategy != s {
            return Err(StorageError::WrongStrategy {
                name: b.name.to_string(),
                strategy: b.strategy,
            });
        }
        Ok(())
    }
}

impl Store {
    /// Stops the background threads, makes what was written durable (if it can),
    /// and refuses every later write; reads still work. For handing the directory
    /// to a fresh [`Store::open`] while readers still hold this one.
    pub fn close(&self) {
        {
            let mut g = self.inner.bg.lock();
            g.shutdown = true;
            self.inner.bg_cv.notify_all();
        }
        for h in self.workers.lock().drain(..) {
            let _ = h.join();
        }
        // A clean close makes buffered writes durable; failure here is reported by
        // the next open's replay, which cuts at the last whole record.
        let _ = self.sync();
        let _w = self.inner.writer.lock();
        let mut p = self.inner.poisoned.lock();
        p.get_or_insert_with(|| "the store was closed".to_string());
    }

    /// Copies a consistent image of the store into the new directory `dest`: the
    /// manifest, the segments it names and the WAL it has not yet folded, each as
    /// it is at one moment (flushes and merges wait meanwhile; the caller keeps
    /// writers out). Opening `dest` gives exactly the batches written so far.
    /// Returns the bytes copied.
    pub fn checkpoint_to(&self, dest: &Path) -> Result<u64> {
        let (linked, copied) = self.image_to(dest, false)?;
        Ok(linked + copied)
    }

    /// Like [`Store::checkpoint_to`], for a copy that lives on beside this store
    /// (a collection's fork): segments and the manifest, which never change, are
    /// hard-linked, so they cost no space until one side rewrites them; only the
    /// write-ahead logs are copied. Returns (bytes linked, bytes copied).
    pub fn fork_to(&self, dest: &Path) -> Result<(u64, u64)> {
        self.image_to(dest, true)
    }

    /// The consistent image both take: the manifest and its segments (linked if
    /// `link`, else copied) and the unfolded WALs (always copied: they grow).
    /// Returns (bytes linked, bytes copied).
    fn image_to(&self, dest: &Path, link: bool) -> Result<(u64, u64)> {
        let fs = &*self.inner.fs;
        self.sync()?;
        let _m = self.inner.merging.lock();
        let man = self.inner.maint.lock();
        fs::create_dir_durable(fs, dest).map_err(StorageError::io("create directory", dest))?;
        let mut fixed: Vec<String> = vec![manifest::NAME.to_string()];
        for b in &man.buckets {
            fixed.extend(b.segments.iter().map(|s| seg_name(s.file_no)));
        }
        let mut wals = Vec::new();
        for name in fs
            .list(&self.inner.dir)
            .map_err(StorageError::io("list directory", &self.inner.dir))?
        {
            if let Some((no, "wal")) = parse_name(&name) {
                if no >= man.wal_min {
                    wals.push(name);
                }
            }
        }
        let (mut linked, mut copied) = (0, 0);
        for name in fixed {
            let (from, to) = (self.inner.dir.join(&name), dest.join(&name));
            if link {
                linked += fs
                    .open(&from)
                    .map_err(StorageError::io("open", &from))?
                    .len();
                fs.hard_link(&from, &to)
                    .map_err(StorageError::io("link into copy", &to))?;
            } else {
                copied +=
                    fs::copy_file(fs, &from, &to, None).map_err(StorageError::io("copy", &to))?;
            }
        }
        // A WAL is copied up to what it holds now (every batch in it was synced
        // above).
        for name in wals {
            let (from, to) = (self.inner.dir.join(&name), dest.join(&name));
            copied += fs::copy_file(fs, &from, &to, None).map_err(StorageError::io("copy", &to))?;
        }
        fs.sync_dir(dest)
            .map_err(StorageError::io("fsync directory", dest))?;
        Ok((linked, copied))
    }

    /// Why writes are refused, if they are.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.poisoned.lock().clone()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// A sorted stream of entries from one layer.
type EntryIter = Box<dyn Iterator<Item = Result<(Vec<u8>, Entry)>> + Send>;

/// K-way merge of sorted sources, newest source first; yields each key once with
/// its entries folded oldest to newest. A min-heap over the sources' current keys
/// keeps each step at O(log sources), and keys move rather than being copied.
struct MergeIter {
    sources: Vec<EntryIter>,
    /// The entry under each source's current key (the key itself is in `heap`).
    heads: Vec<Option<Entry>>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(Vec<u8>, usize)>>,
    /// Sources holding the current key (reused between steps).
    group: Vec<usize>,
    started: bool,
    failed: bool,
}

impl MergeIter {
    fn new(sources: Vec<EntryIter>) -> Self {
        let n = sources.len();
        MergeIter {
            sources,
            heads: (0..n).map(|_| None).collect(),
            heap: std::collections::BinaryHeap::with_capacity(n),
            group: Vec::with_capacity(n),
            started: false,
            failed: false,
        }
    }

    /// Moves source `i` to its next entry.
    fn advance(&mut self, i: usize) -> Result<()> {
        if let Some((k, e)) = self.sources[i].next().transpose()? {
            self.heads[i] = Some(e);
            self.heap.push(std::cmp::Reverse((k, i)));
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.advance(i)?;
            }
        }
        let Some(std::cmp::Reverse((key, first))) = self.heap.pop() else {
            return Ok(None);
        };
        let mut group = std::mem::take(&mut self.group);
        group.clear();
        group.push(first);
        while self
            .heap
            .peek()
            .is_some_and(|std::cmp::Reverse((k, _))| *k == key)
        {
            group.push(self.heap.pop().unwrap().0 .1);
        }
        // Oldest source (highest index) first, so newer entries fold on top.
        group.sort_unstable_by(|a, b| b.cmp(a));
        let mut acc: Option<Entry> = None;
        for &i in &group {
            let e = self.heads[i].take().expect("a queued source has a head");
            acc = Some(match acc {
                None => e,
                Some(older) => older.compose(e),
            });
        }
        let advanced = group.iter().try_for_each(|&i| self.advance(i));
        self.group = group;
        advanced?;
        Ok(Some((key, acc.expect("group is not empty"))))
    }
}

impl Iterator for MergeIter {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl Inner {
    fn check_poisoned(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(why) => Err(StorageError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Records that memory and disk may disagree; every later write fails until reopen.
    fn poison(&self, e: StorageError) -> StorageError {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(e.to_string());
        }
        e
    }

    fn update_version(&self, f: impl FnOnce(&mut Version)) {
        let mut v = self.view.write();
        let mut version = (*v.version).clone();
        f(&mut version);
        *v = Arc::new(View {
            active: v.active.clone(),
            frozen: v.frozen.clone(),
            version: Arc::new(version),
        });
    }

    fn sync_to(&self, seq: u64) -> Result<()> {
        let mut synced = self.synced.lock();
        if *synced >= seq {
            return Ok(());
        }
        let (wal, upto, no) = {
            let w = self.writer.lock();
            (w.wal.clone(), w.seq, w.wal_no)
        };
        self.check_poisoned()?;
        // Earlier WAL files were fsynced when they were rotated out.
        wal.sync().map_err(|e| {
            self.poison(StorageError::Io {
                op: "fsync WAL",
                path: self.dir.join(wal_name(no)),
                source: e,
            })
        })?;
        // The WAL is read only after a crash: its synced pages need not stay cached.
        wal.drop_cache();
        *synced = upto;
        Ok(())
    }

    /// Freezes the active memtable and starts a new WAL file.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        if self.opts.background {
            let mut g = self.bg.lock();
            while self.view.read().frozen.len() >= self.opts.max_frozen {
                self.check_poisoned()?;
                self.flushed_cv.wait_for(&mut g, Duration::from_millis(50));
            }
        }
        let old_path = self.dir.join(wal_name(w.wal_no));
        w.wal.sync().map_err(|e| {
            self.poison(StorageError::Io {
                op: "fsync WAL",
                path: old_path,
                source: e,
            })
        })?;
        w.wal.drop_cache();
        let no = self.next_file.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(wal_name(no));
        let wal = (|| {
            let f = self.fs.create(&path)?;
            f.append(&wal::header())?;
            self.fs.sync_dir(&self.dir)?;
            Ok(f)
        })()
        .map_err(|e| {
            self.poison(StorageError::Io {
                op: "create WAL",
                path: path.clone(),
                source: e,
            })
        })?;
        {
            let mut v = self.view.write();
            let mut frozen = v.frozen.clone();
            frozen.push(v.active.clone());
            *v = Arc::new(View {
                active: Arc::new(MemTable::new(no)),
                frozen,
                version: v.version.clone(),
            });
        }
        w.wal = wal;
        w.wal_no = no;
        if self.opts.background {
            let mut g = self.bg.lock();
            g.flush = true;
            self.bg_cv.notify_all();
        } else {
            while self.flush_oldest()? {}
        }
        Ok(())
    }

    /// Writes the oldest frozen memtable into segments and registers them.
    fn flush_oldest(&self) -> Result<bool> {
        let mut man = self.maint.lock();
        let view = self.view.read().clone();
        let Some(mem) = view.frozen.first().cloned() else {
            return Ok(false);
        };
        let r = (|| {
            let mut added: Vec<(u32, Arc<Segment>)> = Vec::new();
            mem.for_each_bucket(|id, entries| {
                let strategy = view.version.by_id[&id].strategy;
                // With no older segment, this memtable is the bottom of the tree.
                let bottom = view.version.segments[&id].is_empty();
                let no = self.next_file.fetch_add(1, Ordering::SeqCst);
                let entries = entries.iter().map(|(k, e)| Ok((*k, e)));
                if let Some(seg) = self.write_segment(no, 0, strategy, entries, bottom)? {
                    added.push((id, seg));
                }
                Ok::<(), StorageError>(())
            })?;
            if !added.is_empty() {
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(StorageError::io("fsync directory", &self.dir))?;
            }
            let mut next = man.clone();
            for (id, seg) in &added {
                let b = next.buckets.iter_mut().find(|b| b.id == *id).unwrap();
                b.segments.push(SegmentMeta {
                    file_no: seg.file_no,
                    level: 0,
                });
            }
            next.wal_min = mem.wal_no + 1;
            next.next_file = self.next_file.load(Ordering::SeqCst);
            next.store(&*self.fs, &self.dir)?;
            Ok((next, added))
        })();
        let (next, added) = r.map_err(|e| self.poison(e))?;
        *man = next;
        {
            let mut v = self.view.write();
            let mut version = (*v.version).clone();
            for (id, seg) in added {
                version.segments.get_mut(&id).unwrap().push(seg);
            }
            debug_assert!(Arc::ptr_eq(&v.frozen[0], &mem));
            *v = Arc::new(View {
                active: v.active.clone(),
                frozen: v.frozen[1..].to_vec(),
                version: Arc::new(version),
            });
        }
        self.remove_flushed_wals(man.wal_min);
        drop(man);
        let mut g = self.bg.lock();
        g.merge = true;
        self.flushed_cv.notify_all();
        self.bg_cv.notify_all();
        Ok(true)
    }

    fn remove_flushed_wals(&self, wal_min: u64) {
        // Failure leaves garbage that the next open removes; nothing depends on it.
        if let Ok(names) = self.fs.list(&self.dir) {
            for name in names {
                if let Some((no, "wal")) = parse_name(&name) {
                    if no < wal_min {
                        let _ = self.fs.remove(&self.dir.join(name));
                    }
                }
            }
        }
    }

    /// Writes sorted entries as segment `no` (temp name, fsync, rename). Returns `None`
    /// if nothing remained to write.
    fn write_segment<K: AsRef<[u8]>, E: AsEntryRef>(
        &self,
        no: u64,
        level: u32,
        strategy: Strategy,
        entries: impl Iterator<Item = Result<(K, E)>>,
        bottom: bool,
    ) -> Result<Option<Arc<Segment>>> {
        let path = self.dir.join(seg_name(no));
        let tmp = self.dir.join(tmp_seg_name(no, level));
        let mut w = SegmentWriter::create(&*self.fs, &tmp, strategy)?;
        let empty = RoaringTreemap::new();
        for r in entries {
            let (k, e) = r?;
            let e = e.entry_ref();
            if !bottom {
                w.add(k.as_ref(), e)?;
            } else if let Some(e) = e.at_bottom(&empty) {
                w.add(k.as_ref(), e)?;
            }
        }
        if w.is_empty() {
            drop(w);
            self.fs
                .remove(&tmp)
                .map_err(StorageError::io("remove temporary file", &tmp))?;
            return Ok(None);
        }
        w.finish()?;
        self.fs
            .rename(&tmp, &path)
            .map_err(StorageError::io("rename segment", &path))?;
        Ok(Some(Arc::new(Segment::open(
            self.fs.clone(),
            &path,
            no,
            level,
            strategy,
        )?)))
    }

    /// Merges, in some bucket, the oldest run of [`MERGE_FANOUT`] adjacent segments
    /// of equal level (or an older segment of lower level than its successor, which
    /// only a crash-interrupted history can leave). Taking the oldest run keeps levels
    /// non-increasing from oldest to newest, so no segment is stranded; a bucket then
    /// holds at most `(MERGE_FANOUT - 1)` segments per level and every byte is
    /// rewritten about log_fanout(flushes) times. The lowest-level (cheapest)
    /// candidate over all buckets goes first.
    fn merge_once(&self) -> Result<bool> {
        let _m = self.merging.lock();
        let view = self.view.read().clone();
        let mut best: Option<(u32, std::ops::Range<usize>, u32)> = None;
        for (&id, segs) in &view.version.segments {
            let inversion = (0..segs.len().saturating_sub(1))
                .find(|&i| segs[i].level < segs[i + 1].level)
                .map(|i| i..i + 2);
            let run = (0..(segs.len() + 1).saturating_sub(MERGE_FANOUT))
                .find(|&i| {
                    segs[i..i + MERGE_FANOUT]
                        .iter()
                        .all(|s| s.level == segs[i].level)
                })
                .map(|i| i..i + MERGE_FANOUT);
            if let Some(r) = inversion.or(run) {
                let level = segs[r.start].level;
                if best.as_ref().is_none_or(|(_, _, l)| level < *l) {
                    best = Some((id, r, level));
                }
            }
        }
        let Some((id, range, _)) = best else {
            return Ok(false);
        };
        self.merge_range(id, range)?;
        Ok(true)
    }

    /// Replaces segments `range` of bucket `id` by their merge. The caller holds
    /// `merging`; flushes go on meanwhile (they only append newer segments, so the
    /// range stays where it is).
    fn merge_range(&self, id: u32, range: std::ops::Range<usize>) -> Result<()> {
        let view = self.view.read().clone();
        let segs: Vec<Arc<Segment>> = view.version.segments[&id][range.clone()].to_vec();
        let strategy = view.version.by_id[&id].strategy;
        let level = segs.iter().map(|s| s.level).max().unwrap_or(0) + 1;
        let sources = segs
            .iter()
            .rev()
            .map(|s| Box::new(s.iter(Bound::Unbounded, Bound::Unbounded)) as Box<_>)
            .collect();
        let no = self.next_file.fetch_add(1, Ordering::SeqCst);
        // Nothing names the output yet, so a failure here changes nothing: the
        // partial file goes and the merge can be tried again.
        let written = (|| {
            let merged = MergeIter::new(sources);
            let seg = self.write_segment(no, level, strategy, merged, range.start == 0)?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(StorageError::io("fsync directory", &self.dir))?;
            Ok(seg)
        })()
        .inspect_err(|_| {
            for name in [tmp_seg_name(no, level), seg_name(no)] {
                let _ = self.fs.remove(&self.dir.join(name));
            }
        })?;
        let mut man = self.maint.lock();
        let r = (|| {
            let mut next = man.clone();
            let b = next.buckets.iter_mut().find(|b| b.id == id).unwrap();
            debug_assert!(b.segments[range.clone()]
                .iter()
                .zip(&segs)
                .all(|(m, s)| m.file_no == s.file_no));
            let replacement: Vec<SegmentMeta> = written
                .iter()
                .map(|s| SegmentMeta {
                    file_no: s.file_no,
                    level,
                })
                .collect();
            b.segments.splice(range.clone(), replacement);
            next.next_file = self.next_file.load(Ordering::SeqCst);
            next.store(&*self.fs, &self.dir)?;
            Ok(next)
        })();
        *man = r.map_err(|e| self.poison(e))?;
        self.update_version(|v| {
            let list = v.segments.get_mut(&id).unwrap();
            list.splice(range.clone(), written);
        });
        drop(man);
        for s in segs {
            s.mark_obsolete();
        }
        Ok(())
    }

    fn report(&self, component: &'static str, e: &StorageError) {
        if let Some(h) = &self.opts.health {
            h.failed(component, &self.dir.display().to_string(), e);
        }
    }

    fn recovered(&self, component: &'static str) {
        if let Some(h) = &self.opts.health {
            h.recovered(component, &self.dir.display().to_string());
        }
    }

    /// The flush thread (`low_priority == false`) writes frozen memtables; the merge
    /// thread runs at a lower CPU priority so merging yields to writers and flushes.
    /// A failed flush poisons the store (writers see it; reopening recovers); a
    /// merge that fails before it changes the manifest is retried with backoff.
    fn background_loop(&self, low_priority: bool) {
        if low_priority {
            lower_thread_priority();
        }
        let mut backoff = Backoff::default();
        loop {
            {
                let mut g = self.bg.lock();
                let pending = |g: &Background| if low_priority { g.merge } else { g.flush };
                if !g.shutdown && (!pending(&g) || !backoff.ready()) {
                    self.bg_cv.wait_for(&mut g, Duration::from_millis(200));
                }
                if g.shutdown {
                    return;
                }
                if !backoff.ready() {
                    continue;
                }
                if low_priority && !backoff.is_failing() {
                    g.merge = false;
                } else if !low_priority {
                    g.flush = false;
                }
            }
            if self.poisoned.lock().is_some() {
                continue;
            }
            if !low_priority {
                loop {
                    match self.flush_oldest() {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(e) => {
                            self.report(indigo_health::FLUSH, &e);
                            break;
                        }
                    }
                }
                continue;
            }
            while !self.bg.lock().shutdown {
                match self.merge_once() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        self.report(indigo_health::MERGE, &e);
                        backoff.failed();
                        break;
                    }
                }
                if backoff.is_failing() {
                    backoff.succeeded();
                    self.recovered(indigo_health::MERGE);
                }
            }
        }
    }

    /// The folded entry for `key` over all layers, as seen from the bottom.
    fn lookup(&self, bucket: u32, key: &[u8]) -> Result<Option<Entry>> {
        let view = self.view.read().clone();
        let mut found: Vec<Entry> = Vec::new();
        let last_word = |e: &Entry| !matches!(e, Entry::Set { .. });
        let mems = std::iter::once(&view.active).chain(view.frozen.iter().rev());
        for m in mems {
            if let Some(e) = m.get(bucket, key) {
                let stop = last_word(&e);
                found.push(e);
                if stop {
                    return Ok(fold(found));
                }
            }
        }
        let hash = bloom::key_hash(key);
        if let Some(segs) = view.version.segments.get(&bucket) {
            for s in segs.iter().rev() {
                if let Some(e) = s.get(key, hash, &self.stats)? {
                    let stop = last_word(&e);
                    found.push(e);
                    if stop {
                        break;
                    }
                }
            }
        }
        Ok(fold(found))
    }

    /// Live entries of a key range over all layers, folded and seen from the bottom.
    fn range(
        &self,
        bucket: u32,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Entry)>> {
        let view = self.view.read().clone();
        let mut sources: Vec<EntryIter> = Vec::new();
        for m in std::iter::once(&view.active).chain(view.frozen.iter().rev()) {
            sources.push(Box::new(m.range(bucket, lo, hi).into_iter().map(Ok)));
        }
        let owned = |b: Bound<&[u8]>| b.map(|k| k.to_vec());
        if let Some(segs) = view.version.segments.get(&bucket) {
            for s in segs.iter().rev() {
                let it: SegmentIter = s.iter(owned(lo), owned(hi));
                sources.push(Box::new(it));
            }
        }
        MergeIter::new(sources).filter_map(|r| match r {
            Ok((k, e)) => e.at_bottom().map(|e| Ok((k, e))),
            Err(e) => Some(Err(e)),
        })
    }
}

/// Puts the calling thread in Linux's SCHED_IDLE class, so merging uses only CPU
/// time that writers, flushes and queries leave unused (as RocksDB lowers the
/// priority of its compaction threads). Failure only costs fairness.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread; the param outlives the call.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
}

/// Folds entries found newest first into one, as seen from the bottom.
fn fold(found: Vec<Entry>) -> Option<Entry> {
    let mut acc: Option<Entry> = None;
    for e in found.into_iter().rev() {
        acc = Some(match acc {
            None => e,
            Some(older) => older.compose(e),
        });
    }
    acc.and_then(Entry::at_bottom)
}

/// Entry points for the fuzz targets (`fuzz/`): each decodes untrusted bytes the
/// way recovery does and must return an error, never panic or read out of bounds.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use std::ops::Bound;
    use std::path::Path;
    use std::sync::Arc;

    use crate::fs::{FaultFs, FileSystem};

    fn file(bytes: &[u8], name: &str) -> (Arc<FaultFs>, std::path::PathBuf) {
        let fs = Arc::new(FaultFs::new());
        let path = Path::new("/fuzz").join(name);
        let f = fs.create(&path).unwrap();
        f.append(bytes).unwrap();
        (fs, path)
    }

    /// A WAL file, replayed as recovery replays it.
    pub fn wal(bytes: &[u8]) {
        let (fs, path) = file(bytes, "0000000001.wal");
        if let Ok(r) = crate::wal::replay(&*fs, &path) {
            let _ = r.batches.len();
        }
    }

    /// A segment file: opened, scanned whole, and probed by key.
    pub fn segment(bytes: &[u8]) {
        for strategy in [crate::Strategy::Replace, crate::Strategy::Set] {
            let (fs, path) = file(bytes, "0000000001.seg");
            let Ok(seg) = crate::segment::Segment::open(fs, &path, 1, 0, strategy) else {
                continue;
            };
            let seg = Arc::new(seg);
            let stats = crate::segment::ReadStats::default();
            let mut keys = Vec::new();
            for e in seg.iter(Bound::Unbounded, Bound::Unbounded).take(10_000) {
                match e {
                    Ok((k, _)) => keys.push(k),
                    Err(_) => break,
                }
            }
            for k in keys.iter().take(100).chain([&b"probe".to_vec()]) {
                let _ = seg.get(k, crate::bloom::key_hash(k), &stats);
            }
        }
    }

    /// A `MANIFEST` file.
    pub fn manifest(bytes: &[u8]) {
        let (fs, _) = file(bytes, crate::manifest::NAME);
        let _ = crate::manifest::Manifest::load(&*fs, Path::new("/fuzz"));
    }
}
