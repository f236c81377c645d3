//! Indigo's segment: a collection's read-optimised form, the LSM store (records,
//! id map, postings) beside the HNSW index, both at log offset
//! [`Segment::applied`]. The compactor writes it; the executor reads it.
//!
//! Store layout (one store per collection, `<dir>/store`):
//! - `ids` (replace): string id → internal id (u32 BE). Internal ids are never reused,
//!   so a label in the index always names one record's life.
//! - `rec` (replace): internal id → record body (id, document, uri, metadata).
//! - `emb` (replace): internal id → embedding (f32 LE), apart since few reads want it.
//! - `post` (set): posting key → internal ids; see [`posting`].
//! - `meta` (replace): `offset` (log offset of the last applied entry), `next_iid`.
//!
//! Every applied chunk of log entries is one store batch that also sets `offset`, so
//! the store recovers to exactly some applied offset S. The index is changed before
//! the batch; after a crash it may hold more or less than S, and
//! [`Segment::open`] reconciles it with the store.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use indigo_fs::{FileSystem, StdFs};
use indigo_health::Health;
use indigo_index::{Hnsw, HnswParams, RoaringBitmap, Space, SparseChange, SparseHit, SparseIndex};
use indigo_storage::{Bucket, Options, Store, Strategy, WriteBatch, WriteOptions};
use indigo_types::record::{
    decode_embedding, decode_record_body, decode_record_id, encode_embedding, encode_record_body,
};
use indigo_types::{MetaValue, Record, Resolver, WriteEntry};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

/// What can go wrong reading or changing a segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] indigo_storage::StorageError),
    #[error(transparent)]
    Index(#[from] indigo_index::IndexError),
    #[error(transparent)]
    Log(#[from] indigo_log::LogError),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("{0}")]
    Full(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The record operations in a collection's log entries after offset `after` up
/// to `upto`, counted from the entries' headers: indexing progress is reported
/// in them (Chroma's `indexing_status`), not in entries.
pub fn count_ops(
    log: &dyn indigo_log::Log,
    collection: indigo_log::CollectionId,
    after: u64,
    upto: u64,
) -> Result<u64> {
    let mut n = 0;
    let mut at = after;
    while at < upto {
        let recs = log.read_prefixes(
            collection,
            indigo_log::LogOffset(at),
            256,
            WriteEntry::HEADER_LEN,
        )?;
        if recs.is_empty() {
            break;
        }
        for r in &recs {
            if r.offset.0 > upto {
                return Ok(n);
            }
            n += u64::from(
                WriteEntry::record_count(&r.payload)
                    .map_err(|e| Error::Corrupt(format!("log entry {}: {e}", r.offset.0)))?,
            );
            at = r.offset.0;
        }
    }
    Ok(n)
}

/// Decodes log records into write entries, naming the offset of a bad one.
pub fn decode_records(recs: &[indigo_log::LogRecord]) -> Result<Vec<(u64, WriteEntry)>> {
    recs.iter()
        .map(|r| {
            WriteEntry::decode(&r.payload)
                .map(|e| (r.offset.0, e))
                .map_err(|e| Error::Corrupt(format!("log entry {}: {e}", r.offset.0)))
        })
        .collect()
}

/// Posting keys of the `post` bucket.
pub mod posting {
    use indigo_storage::keys::encode_f64;
    use indigo_types::Scalar;

    /// Every live record.
    pub const ALL: &[u8] = b"A";
    /// Records with a document.
    pub const HAS_DOC: &[u8] = b"D";
    /// Scalar metadata values: `s` + field + value.
    pub const SCALAR: u8 = b's';
    /// Elements of list metadata values: `l` + field + value.
    pub const LIST: u8 = b'l';
    /// Byte trigrams of documents: `t` + 3 bytes.
    pub const TRIGRAM: u8 = b't';

    /// Value tags; numbers share one so ints and floats interleave by value.
    pub const STR: u8 = 1;
    pub const BOOL: u8 = 2;
    pub const NUM: u8 = 3;

    /// `[ns][u16 BE len][field]`: the prefix of every posting of one field.
    pub fn field_prefix(ns: u8, field: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(3 + field.len() + 18);
        k.push(ns);
        k.extend_from_slice(&(field.len() as u16).to_be_bytes());
        k.extend_from_slice(field.as_bytes());
        k
    }

    /// Numbers: `NUM` + order-preserving f64 + (`0` float | `1` + i64 BE), so a range
    /// scan over the f64 part finds ints and floats, and the key still names the
    /// exact value (ints beyond 2^53 do not collide).
    pub fn value_key(ns: u8, field: &str, v: &Scalar) -> Vec<u8> {
        let mut k = field_prefix(ns, field);
        match v {
            Scalar::Str(s) => {
                k.push(STR);
                k.extend_from_slice(s.as_bytes());
            }
            Scalar::Bool(b) => {
                k.push(BOOL);
                k.push(*b as u8);
            }
            Scalar::Int(i) => {
                k.push(NUM);
                k.extend_from_slice(&encode_f64(*i as f64));
                k.push(1);
                k.extend_from_slice(&i.to_be_bytes());
            }
            Scalar::Float(f) => {
                k.push(NUM);
                k.extend_from_slice(&encode_f64(*f));
                k.push(0);
            }
        }
        k
    }

    /// The value named by a key's suffix after [`field_prefix`].
    pub fn decode_value(suffix: &[u8]) -> Option<Scalar> {
        let (&tag, rest) = suffix.split_first()?;
        Some(match tag {
            STR => Scalar::Str(String::from_utf8(rest.to_vec()).ok()?),
            BOOL => Scalar::Bool(*rest.first()? != 0),
            NUM => {
                let f = indigo_storage::keys::decode_f64(rest.get(..8)?.try_into().ok()?);
                match rest.get(8)? {
                    0 => Scalar::Float(f),
                    _ => Scalar::Int(i64::from_be_bytes(rest.get(9..17)?.try_into().ok()?)),
                }
            }
            _ => return None,
        })
    }

    /// Sparse vector postings (the `sp` bucket): `v` + field + dimension (u32
    /// BE) + internal id (u32 BE) → weight (f32 LE), so one scan of a field
    /// yields its postings in (dimension, id) order.
    pub const SPARSE: u8 = b'v';

    pub fn sparse_key(field: &str, dim: u32, iid: u32) -> Vec<u8> {
        let mut k = field_prefix(SPARSE, field);
        k.extend_from_slice(&dim.to_be_bytes());
        k.extend_from_slice(&iid.to_be_bytes());
        k
    }

    pub fn trigram_key(t: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(4);
        k.push(TRIGRAM);
        k.extend_from_slice(t);
        k
    }
}

/// The postings a collection does not keep because its schema switched their
/// index off (filters that would need them are refused before they reach a
/// segment). Fixed when the collection is created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unindexed {
    /// Document trigrams (full-text search is off).
    pub trigrams: bool,
    /// Per metadata field, which kinds of values are not indexed...
    pub fields: HashMap<String, Kinds>,
    /// ...and for the fields not named there.
    pub default: Kinds,
}

/// Kinds of metadata values left unindexed. Ints and floats share postings (a
/// filter on either finds both), so numbers go only when both indexes are off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Kinds {
    pub strings: bool,
    pub numbers: bool,
    pub bools: bool,
}

impl Unindexed {
    fn skips(&self, field: &str, v: &indigo_types::Scalar) -> bool {
        use indigo_types::Scalar;
        let k = self.fields.get(field).unwrap_or(&self.default);
        match v {
            Scalar::Str(_) => k.strings,
            Scalar::Int(_) | Scalar::Float(_) => k.numbers,
            Scalar::Bool(_) => k.bools,
        }
    }
}

/// A record's sparse vector under `key`, if it has one.
fn sparse_of<'r>(r: Option<&'r Record>, key: &str) -> Option<&'r indigo_types::SparseVector> {
    match r?.metadata.as_ref()?.get(key)? {
        MetaValue::Sparse(v) => Some(v),
        _ => None,
    }
}

/// Every posting key a record appears under.
/// Keys of postings: short byte strings, hashed per posting per record on the
/// compactor's path (SipHash's resistance to chosen keys is not needed there).
type FastState = foldhash::fast::RandomState;

fn postings_of(r: &Record, skip: &Unindexed) -> HashSet<Vec<u8>, FastState> {
    let mut keys = HashSet::with_hasher(FastState::default());
    keys.insert(posting::ALL.to_vec());
    if let Some(doc) = &r.document {
        keys.insert(posting::HAS_DOC.to_vec());
        if !skip.trigrams {
            for t in doc.as_bytes().windows(3) {
                keys.insert(posting::trigram_key(t));
            }
        }
    }
    if let Some(m) = &r.metadata {
        for (k, v) in m {
            match v {
                MetaValue::Scalar(s) if !skip.skips(k, s) => {
                    keys.insert(posting::value_key(posting::SCALAR, k, s));
                }
                MetaValue::Scalar(_) => {}
                MetaValue::List(l) => {
                    for s in l.iter().filter(|s| !skip.skips(k, s)) {
                        keys.insert(posting::value_key(posting::LIST, k, s));
                    }
                }
                // Sparse vectors have postings of their own (the `sp` bucket).
                MetaValue::Sparse(_) => {}
            }
        }
    }
    keys
}

/// How a collection's index is built and searched.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    pub space: Space,
    pub max_neighbors: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Answer every query by an exact scan (for tests against a reference model).
    pub exact: bool,
    /// Postings the collection does not keep.
    pub unindexed: Unindexed,
    /// Metadata keys whose sparse vectors are indexed (the schema's
    /// `sparse_vector_index`), with whether queries on them apply BM25's IDF.
    pub sparse: Vec<SparseKey>,
}

/// A metadata key with a sparse vector index.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseKey {
    pub key: String,
    pub bm25: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            space: Space::L2,
            max_neighbors: 16,
            ef_construction: 100,
            ef_search: 100,
            exact: false,
            unindexed: Unindexed::default(),
            sparse: Vec::new(),
        }
    }
}

/// Where a segment keeps its files and reports background failures.
#[derive(Clone)]
pub struct Env {
    pub fs: Arc<dyn FileSystem>,
    pub health: Arc<Health>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            fs: Arc::new(StdFs),
            health: Arc::new(Health::new()),
        }
    }
}

struct Buckets {
    ids: Bucket,
    rec: Bucket,
    emb: Bucket,
    post: Bucket,
    meta: Bucket,
    /// Sparse vector postings; `None` in a read-only copy made before sparse
    /// indexes existed.
    sp: Option<Bucket>,
}

/// One file of a sealed segment: its name relative to the segment's directory
/// and an open handle to its contents as of the seal.
pub struct SealedFile {
    pub name: String,
    pub file: Arc<dyn indigo_fs::ReadableFile>,
}

/// One collection's store and index.
pub struct Segment {
    dir: PathBuf,
    env: Env,
    store: Store,
    b: Buckets,
    index: RwLock<Option<Arc<Hnsw>>>,
    config: RwLock<IndexConfig>,
    /// Readers hold it shared for a whole read, so the store and `applied` do not
    /// move under them; the compactor holds it exclusively to install a batch.
    snapshot: RwLock<()>,
    applied: AtomicU64,
    /// Record operations in the entries this process applied (moves with
    /// `applied`, under the writer lock), and where the compactor last counted
    /// from: its next version's count comes from here, not from re-reading
    /// the log (which cost a second read of every entry).
    applied_ops: AtomicU64,
    ops_mark: Mutex<Option<(u64, u64)>>,
    /// Held through a whole checkpoint (see [`Segment::checkpointing`]).
    checkpointing: Mutex<()>,
    next_iid: AtomicU64,
    /// Labels the compactor has put in the index but not yet in the store.
    inflight: AtomicUsize,
    /// Base records whose index entries the chunk in progress deletes or moves.
    changing: RwLock<Arc<Changing>>,
    /// Serialises writers (the compactor, recovery).
    writer: Mutex<()>,
    /// Set once the collection is deleted; the compactor holds it shared while it
    /// works on the segment, so deletion waits for that work, then turns it away.
    retired: RwLock<bool>,
    /// Records deleted since the store was last compacted.
    deleted_since_compact: AtomicU64,
    /// Live records in the store (kept by `apply`, for cheap metrics).
    live_count: AtomicU64,
    /// Signalled whenever `applied` moves (writers held back by a bounded
    /// backlog wait on it).
    progress: (Mutex<()>, parking_lot::Condvar),
    /// The index's dimension once known (0 before).
    dim: AtomicUsize,
    /// Whether the index was put away by [`Segment::hibernate`] (its files are
    /// complete; the next use loads it).
    hibernated: std::sync::atomic::AtomicBool,
    /// Set by [`Segment::close`]: a fresh open owns the files now, so this one
    /// never loads its index again.
    closed: std::sync::atomic::AtomicBool,
    /// When the segment was last used, in [`now_ms`] (least recently used first
    /// to hibernate).
    last_used: AtomicU64,
    /// Sparse indexes of the keys a query has used, loaded from the `sp`
    /// bucket; changed only under the exclusive snapshot lock, so each is
    /// exactly the store's postings at `applied`.
    sparse: RwLock<HashMap<String, SparseIndex>>,
}

impl Drop for Segment {
    /// Closes the index, which waits for a condensation in progress: its
    /// maintenance thread outlives the segment only until its next pass, and
    /// a process that exits after dropping the database would otherwise cut
    /// the condensation short and leave its whole log to replay at the next
    /// open (1.9 GB, 6 s at 1M × 384), and a second open in the same process
    /// would share the directory with it meanwhile.
    fn drop(&mut self) {
        if let Some(idx) = self.index.get_mut().take() {
            idx.close();
        }
    }
}

/// Milliseconds since the process first asked: the clock of segments' last use.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// The base records a chunk being applied deletes from the index or moves in it,
/// with their vectors as the installed store holds them (prepared for the space).
///
/// A reader's snapshot is the installed store, but the index is shared and changes
/// before the chunk's store batch is installed (which waits for readers). So a
/// query drops these labels from what the index answers and scores the vectors
/// here instead: it sees exactly its snapshot, never a moved vector or a hole.
#[derive(Default)]
pub struct Changing {
    pub iids: RoaringBitmap,
    pub vectors: Vec<(u32, Arc<[f32]>)>,
}

/// A consistent view of a segment at [`Snapshot::applied`]; see [`Segment::snapshot`].
pub struct Snapshot<'a> {
    seg: &'a Segment,
    _guard: RwLockReadGuard<'a, ()>,
    pub applied: u64,
    /// Internal ids at or above this are not in the snapshot (the index may
    /// already hold some, from a chunk in progress).
    pub next_iid: u64,
}

const OFFSET_KEY: &[u8] = b"offset";

/// What [`Segment::fork_to`] did.
#[derive(Debug, Clone, Copy)]
pub struct ForkCopy {
    /// The source's log offset the fork holds everything up to.
    pub applied: u64,
    /// Bytes the fork shares with the source (hard links).
    pub linked: u64,
    /// Bytes written for the fork (write-ahead and commit logs).
    pub copied: u64,
}
const NEXT_IID_KEY: &[u8] = b"next_iid";

fn iid_key(iid: u32) -> [u8; 4] {
    iid.to_be_bytes()
}

fn low_bits(t: roaring::RoaringTreemap) -> RoaringBitmap {
    t.bitmaps()
        .find(|(hi, _)| *hi == 0)
        .map(|(_, b)| b.clone())
        .unwrap_or_default()
}

impl Segment {
    /// Opens (or creates) the segment in `dir`. `dim` is the collection's dimension
    /// if fixed. `durable` is the checkpoint the system database holds and `log`
    /// yields the log entries after it, so an index that a crash left out of step
    /// with the store can be reconciled; the caller then applies the entries after
    /// [`Segment::applied`].
    pub fn open(
        env: &Env,
        dir: &Path,
        config: IndexConfig,
        dim: Option<usize>,
        durable: u64,
        log: &[(u64, WriteEntry)],
    ) -> Result<Segment> {
        // One store per collection: a smaller memtable than a single big store's
        // keeps many collections' memory bounded; the log already batches writes.
        let opts = Options {
            memtable_bytes: 16 << 20,
            health: Some(env.health.clone()),
            ..Options::default()
        };
        let store = Store::open_with_fs(env.fs.clone(), &dir.join("store"), opts)?;
        let seg = Self::from_store(env, dir, config, store, true)?;
        if seg.applied() < durable {
            return Err(Error::Corrupt(format!(
                "{}: the store is at log offset {}, behind the checkpoint {durable}; \
                 its files were lost or replaced",
                dir.display(),
                seg.applied()
            )));
        }
        if let Some(dim) = dim {
            seg.dim.store(dim, Ordering::Relaxed);
            // With no index yet, reconciling inserts everything the store holds.
            let idx = seg.open_index(dim)?;
            seg.reconcile(&idx, durable, log)?;
            *seg.index.write() = Some(idx);
        }
        Ok(seg)
    }

    /// Opens a segment that is a sealed copy (an index version) for reading only:
    /// its store and index as they are, nothing reconciled or changed.
    pub fn open_read_only(
        env: &Env,
        dir: &Path,
        config: IndexConfig,
        dim: Option<usize>,
    ) -> Result<Segment> {
        let store = Store::open_read_only(env.fs.clone(), &dir.join("store"))?;
        let seg = Self::from_store(env, dir, config, store, false)?;
        if let Some(dim) = dim {
            let hnsw = dir.join("hnsw");
            if env.fs.exists(&hnsw) {
                let idx = Hnsw::open_read_only(env.fs.clone(), &hnsw, seg.hnsw_params(dim))?;
                *seg.index.write() = Some(Arc::new(idx));
            }
        }
        Ok(seg)
    }

    fn from_store(
        env: &Env,
        dir: &Path,
        config: IndexConfig,
        store: Store,
        writable: bool,
    ) -> Result<Segment> {
        let sp = match store.buckets().into_iter().find(|b| b.name() == "sp") {
            Some(b) => Some(b),
            None if writable => Some(store.bucket("sp", Strategy::Replace)?),
            None => None,
        };
        let b = Buckets {
            sp,
            ids: store.bucket("ids", Strategy::Replace)?,
            rec: store.bucket("rec", Strategy::Replace)?,
            emb: store.bucket("emb", Strategy::Replace)?,
            post: store.bucket("post", Strategy::Set)?,
            meta: store.bucket("meta", Strategy::Replace)?,
        };
        let read_u64 = |k: &[u8]| -> Result<u64> {
            Ok(match store.get(&b.meta, k)? {
                Some(v) => u64::from_le_bytes(v.as_slice().try_into().map_err(|_| {
                    Error::Corrupt(format!(
                        "{}: bad {} value",
                        dir.display(),
                        String::from_utf8_lossy(k)
                    ))
                })?),
                None => 0,
            })
        };
        let applied = read_u64(OFFSET_KEY)?;
        let next_iid = read_u64(NEXT_IID_KEY)?;
        let seg = Segment {
            dir: dir.to_path_buf(),
            env: env.clone(),
            store,
            b,
            index: RwLock::new(None),
            config: RwLock::new(config),
            snapshot: RwLock::new(()),
            applied: AtomicU64::new(applied),
            applied_ops: AtomicU64::new(0),
            ops_mark: Mutex::new(None),
            checkpointing: Mutex::new(()),
            next_iid: AtomicU64::new(next_iid),
            inflight: AtomicUsize::new(0),
            changing: RwLock::default(),
            writer: Mutex::new(()),
            retired: RwLock::new(false),
            deleted_since_compact: AtomicU64::new(0),
            live_count: AtomicU64::new(0),
            progress: Default::default(),
            dim: AtomicUsize::new(0),
            hibernated: Default::default(),
            closed: Default::default(),
            last_used: AtomicU64::new(now_ms()),
            sparse: RwLock::default(),
        };
        seg.live_count.store(seg.live()?.len(), Ordering::Relaxed);
        Ok(seg)
    }

    fn hnsw_params(&self, dim: usize) -> HnswParams {
        let c = self.config.read().clone();
        let mut p = HnswParams::new(c.space, dim);
        p.max_neighbors = c.max_neighbors;
        p.ef_construction = c.ef_construction;
        p.ef_search = c.ef_search;
        p
    }

    /// Makes every file of the segment immutable and complete (the store's
    /// memtable flushed into segments, the index's commit log closed) and names
    /// them, relative to the segment's directory: what an index version copies.
    /// The compactor waits meanwhile. The files come open, so background merges
    /// and condensations that run afterwards cannot remove them from under the
    /// caller.
    pub fn seal(&self) -> Result<Vec<SealedFile>> {
        let _w = self.writer.lock();
        self.store.flush()?;
        let mut files: Vec<SealedFile> = self
            .store
            .open_files()?
            .into_iter()
            .map(|(n, file)| SealedFile {
                name: format!("store/{n}"),
                file,
            })
            .collect();
        if let Some(i) = self.loaded_index()? {
            for (p, file) in i.seal()? {
                files.push(SealedFile {
                    name: format!(
                        "hnsw/{}",
                        p.file_name().unwrap_or_default().to_string_lossy()
                    ),
                    file,
                });
            }
        }
        Ok(files)
    }

    fn open_index(&self, dim: usize) -> Result<Arc<Hnsw>> {
        let p = self.hnsw_params(dim);
        let dir = self.dir.join("hnsw");
        let fs = self.env.fs.clone();
        let idx = match Hnsw::open_with_fs(fs.clone(), &dir, p.clone()) {
            Ok(i) => i,
            // The store holds every vector: a damaged index is set aside and rebuilt
            // (by `reconcile`) rather than leaving the collection unreadable.
            Err(indigo_index::IndexError::Corrupt { path, detail }) => {
                let aside = self.dir.join(format!(
                    "hnsw.damaged-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                tracing::error!(
                    "index file {} is damaged ({detail}); moved the index to {} and rebuilding it from the store",
                    path.display(),
                    aside.display()
                );
                fs.rename(&dir, &aside)
                    .and_then(|_| fs.sync_dir(&self.dir))
                    .map_err(|e| Error::Io(format!("move {} aside: {e}", dir.display())))?;
                Hnsw::open_with_fs(fs, &dir, p)?
            }
            Err(e) => return Err(e.into()),
        };
        let idx = Arc::new(idx);
        idx.spawn_maintenance(64 << 20, self.env.health.clone());
        Ok(idx)
    }

    /// Brings the index in step with the store after a crash: removes labels the
    /// store does not hold, adds live records it lacks, and re-inserts records the
    /// log changed after the checkpoint (their vectors may be stale).
    fn reconcile(&self, idx: &Hnsw, durable: u64, log: &[(u64, WriteEntry)]) -> Result<()> {
        let applied = self.applied.load(Ordering::Acquire);
        let live = self.live()?;
        let labels = idx.labels();
        for orphan in &labels - &live {
            idx.delete(orphan)?;
        }
        let mut redo: RoaringBitmap = &live - &labels;
        for (off, e) in log {
            if *off <= durable || *off > applied {
                continue;
            }
            for r in &e.records {
                if let Some(iid) = self.lookup(&r.id)? {
                    redo.insert(iid);
                }
            }
        }
        let mut vectors = Vec::with_capacity(redo.len() as usize);
        for iid in &redo {
            if let Some(v) = self.embedding(iid)? {
                vectors.push((iid, v));
            }
        }
        let items: Vec<(u32, &[f32])> = vectors.iter().map(|(i, v)| (*i, &v[..])).collect();
        idx.insert_parallel(&items, 2)?;
        // Re-inserting many labels leaves as many tombstones, and nodes inserted
        // among them may be reachable only through them: repair (which also
        // relinks nodes no live node links to) before the index serves reads.
        // An index that agreed with the store needs none (a hibernated one
        // loaded again).
        if !items.is_empty() || !(&labels - &live).is_empty() {
            idx.repair()?;
        }
        idx.sync()?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log offset of the last entry folded in.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    pub fn config(&self) -> IndexConfig {
        self.config.read().clone()
    }

    /// Changes search-time settings (ef_search) of a live collection.
    pub fn set_ef_search(&self, ef: usize) {
        self.config.write().ef_search = ef;
        if let Some(i) = &*self.index.read() {
            i.set_ef_search(ef);
        }
    }

    /// A consistent view: the store and `applied` do not change until it is dropped.
    pub fn snapshot(&self) -> Snapshot<'_> {
        self.touch();
        let g = self.snapshot.read();
        Snapshot {
            seg: self,
            applied: self.applied(),
            next_iid: self.next_iid.load(Ordering::Acquire),
            _guard: g,
        }
    }

    fn lookup(&self, id: &str) -> Result<Option<u32>> {
        Ok(match self.store.get(&self.b.ids, id.as_bytes())? {
            Some(v) => Some(u32::from_be_bytes(v.as_slice().try_into().map_err(
                |_| {
                    Error::Corrupt(format!(
                        "{}: bad internal id for {id:?}",
                        self.dir.display()
                    ))
                },
            )?)),
            None => None,
        })
    }

    fn embedding(&self, iid: u32) -> Result<Option<Arc<[f32]>>> {
        Ok(self
            .store
            .get(&self.b.emb, &iid_key(iid))?
            .map(|b| decode_embedding(&b)))
    }

    fn live(&self) -> Result<RoaringBitmap> {
        Ok(low_bits(self.store.get_set(&self.b.post, posting::ALL)?))
    }

    fn record(&self, iid: u32, with_embedding: bool) -> Result<Option<Record>> {
        let Some(body) = self.store.get(&self.b.rec, &iid_key(iid))? else {
            return Ok(None);
        };
        let body = decode_record_body(&body)
            .map_err(|e| Error::Corrupt(format!("{}: record {iid}: {e}", self.dir.display())))?;
        let embedding = if with_embedding {
            self.embedding(iid)?.ok_or_else(|| {
                Error::Corrupt(format!(
                    "{}: record {iid} has no embedding",
                    self.dir.display()
                ))
            })?
        } else {
            Arc::from(Vec::new())
        };
        Ok(Some(Record {
            id: body.id,
            embedding,
            document: body.document,
            uri: body.uri,
            metadata: body.metadata,
        }))
    }

    /// Folds `entries` (consecutive, after [`Segment::applied`]) into the store and
    /// the index.
    pub fn apply(&self, entries: &[(u64, WriteEntry)]) -> Result<()> {
        let _w = self.writer.lock();
        self.touch();
        // Two compactions may race to the same entries (the worker and an explicit
        // drain); what is already applied must not be applied twice.
        let applied = self.applied();
        let entries = &entries[entries.partition_point(|e| e.0 <= applied)..];
        let Some(last) = entries.last().map(|e| e.0) else {
            return Ok(());
        };
        if entries[0].0 != applied + 1 {
            return Err(Error::Corrupt(format!(
                "{}: log entry {} does not follow the applied offset {applied}",
                self.dir.display(),
                entries[0].0
            )));
        }
        let mut res: Resolver<u32> = Resolver::default();
        for (_, e) in entries {
            res.apply(e, |id| -> Result<_> {
                Ok(match self.lookup(id)? {
                    Some(iid) => self.record(iid, true)?.map(|r| (iid, Arc::new(r))),
                    None => None,
                })
            })?;
        }
        let (space, skip, sparse_keys) = {
            let c = self.config.read();
            (c.space, c.unindexed.clone(), c.sparse.clone())
        };
        // First what the chunk does to the index (cheap); the store batch is
        // built while the index inserts.
        let touched: Vec<_> = res.touched.into_values().collect();
        let mut deletes: Vec<u32> = Vec::new();
        let mut inserts: Vec<(u32, Arc<[f32]>)> = Vec::new();
        let mut created: Vec<(u64, Arc<Record>)> = Vec::new();
        let mut changing = Changing::default();
        {
            let mut was = |iid: u32, old: &Record| {
                changing.iids.insert(iid);
                let v = space.prepare_cow(&old.embedding).into_owned();
                changing.vectors.push((iid, v.into()));
            };
            for r in &touched {
                match (&r.base, &r.current) {
                    (Some((iid, old)), Some(new)) if r.created.is_none() => {
                        if old.embedding != new.embedding {
                            inserts.push((*iid, new.embedding.clone()));
                            was(*iid, old);
                        }
                        continue;
                    }
                    (Some((iid, old)), _) => {
                        deletes.push(*iid);
                        was(*iid, old);
                    }
                    (None, _) => {}
                }
                if let (Some(cur), Some(n)) = (&r.current, r.created) {
                    created.push((n, cur.clone()));
                }
            }
        }
        // New records get internal ids in the order they were created.
        created.sort_unstable_by_key(|c| c.0);
        let first_new = self.next_iid.load(Ordering::Acquire);
        let next = first_new + created.len() as u64;
        if next > 1 << 32 {
            return Err(Error::Full(format!(
                "collection at {} has used all 2^32 internal ids",
                self.dir.display()
            )));
        }
        let created: Vec<(u32, Arc<Record>)> = created
            .into_iter()
            .enumerate()
            .map(|(i, (_, rec))| ((first_new + i as u64) as u32, rec))
            .collect();
        inserts.extend(created.iter().map(|(iid, r)| (*iid, r.embedding.clone())));

        let build = || {
            let mut batch = WriteBatch::new();
            // Posting changes grouped by key: one set change per key per chunk
            // rather than one per (record, key), most of a chunk's store write
            // when records carry documents.
            let mut post: HashMap<Vec<u8>, (Vec<u64>, Vec<u64>), FastState> = HashMap::default();
            // Per sparse key, the records whose vectors change: (iid, old dims, new).
            let mut sparse: Vec<Vec<SparseChange>> = vec![Vec::new(); sparse_keys.len()];
            let mut sparse_change =
                |batch: &mut WriteBatch, iid: u32, old: Option<&Record>, new: Option<&Record>| {
                    let Some(sp) = &self.b.sp else { return };
                    for (i, sk) in sparse_keys.iter().enumerate() {
                        let (o, n) = (sparse_of(old, &sk.key), sparse_of(new, &sk.key));
                        if o == n {
                            continue;
                        }
                        let new_pairs: Vec<(u32, f32)> = n
                            .map(|v| {
                                v.indices
                                    .iter()
                                    .copied()
                                    .zip(v.values.iter().copied())
                                    .collect()
                            })
                            .unwrap_or_default();
                        let old_dims: Vec<u32> = o.map(|v| v.indices.clone()).unwrap_or_default();
                        for d in &old_dims {
                            if new_pairs.binary_search_by_key(d, |p| p.0).is_err() {
                                batch.delete(sp, posting::sparse_key(&sk.key, *d, iid));
                            }
                        }
                        for (d, w) in &new_pairs {
                            batch.put(sp, posting::sparse_key(&sk.key, *d, iid), w.to_le_bytes());
                        }
                        sparse[i].push(SparseChange {
                            label: iid,
                            old: old_dims,
                            new: new_pairs,
                        });
                    }
                };
            for r in &touched {
                match (&r.base, &r.current) {
                    (Some((iid, old)), Some(new)) if r.created.is_none() => {
                        let (a, b) = (postings_of(old, &skip), postings_of(new, &skip));
                        for k in a.difference(&b) {
                            post.entry(k.clone()).or_default().1.push(*iid as u64);
                        }
                        for k in b.difference(&a) {
                            post.entry(k.clone()).or_default().0.push(*iid as u64);
                        }
                        batch.put(&self.b.rec, iid_key(*iid), encode_record_body(new));
                        sparse_change(&mut batch, *iid, Some(old), Some(new));
                        if old.embedding != new.embedding {
                            batch.put(&self.b.emb, iid_key(*iid), encode_embedding(&new.embedding));
                        }
                    }
                    (Some((iid, old)), _) => {
                        for k in postings_of(old, &skip) {
                            post.entry(k).or_default().1.push(*iid as u64);
                        }
                        batch.delete(&self.b.rec, iid_key(*iid));
                        batch.delete(&self.b.emb, iid_key(*iid));
                        batch.delete(&self.b.ids, old.id.as_bytes());
                        sparse_change(&mut batch, *iid, Some(old), None);
                    }
                    (None, _) => {}
                }
            }
            for (iid, rec) in &created {
                let iid = *iid;
                batch.put(&self.b.ids, rec.id.as_bytes(), iid_key(iid));
                batch.put(&self.b.rec, iid_key(iid), encode_record_body(rec));
                batch.put(&self.b.emb, iid_key(iid), encode_embedding(&rec.embedding));
                for k in postings_of(rec, &skip) {
                    post.entry(k).or_default().0.push(iid as u64);
                }
                sparse_change(&mut batch, iid, None, Some(rec));
            }
            // A record's old and new postings differ, and an iid is either the
            // old or the new one: no key both adds and removes one id.
            for (k, (adds, dels)) in post {
                // Most keys only gain ids (new records): no copy of the key
                // for an empty removal.
                if !dels.is_empty() {
                    batch.set_remove_many(&self.b.post, k.clone(), dels);
                }
                batch.set_add_many(&self.b.post, k, adds);
            }
            batch.put(&self.b.meta, OFFSET_KEY, last.to_le_bytes());
            batch.put(&self.b.meta, NEXT_IID_KEY, next.to_le_bytes());
            (batch, sparse)
        };

        // The index first: readers ignore labels the store does not hold yet, and
        // ids this chunk touches are still overlaid from the log tail.
        let (batch, sparse) = if !inserts.is_empty() || !deletes.is_empty() {
            let idx = self.index_for(inserts.first().map(|v| v.1.len()))?;
            self.inflight.store(inserts.len(), Ordering::Release);
            if !changing.iids.is_empty() {
                *self.changing.write() = Arc::new(changing);
            }
            for iid in &deletes {
                idx.delete(*iid)?;
            }
            let items: Vec<(u32, &[f32])> = inserts.iter().map(|(i, v)| (*i, &v[..])).collect();
            let threads = if items.len() >= 64 { 2 } else { 1 };
            let (inserted, built) = idx.insert_parallel_beside(&items, threads, build);
            inserted?;
            built
        } else {
            build()
        };
        {
            let _x = self.snapshot.write();
            // Readers wait on this lock: a memtable rotation (flush
            // backpressure, an fsync of the old WAL) comes after it.
            self.store.write_unrotated(&batch)?;
            self.applied.store(last, Ordering::Release);
            let ops: usize = entries.iter().map(|e| e.1.records.len()).sum();
            self.applied_ops.fetch_add(ops as u64, Ordering::Release);
            self.next_iid.store(next, Ordering::Release);
            self.inflight.store(0, Ordering::Release);
            *self.changing.write() = Arc::default();
            // Under the lock, so a snapshot's count is its store's.
            let live = self.live_count.load(Ordering::Relaxed) + created.len() as u64;
            self.live_count
                .store(live.saturating_sub(deletes.len() as u64), Ordering::Relaxed);
            let mut loaded = self.sparse.write();
            for (sk, changes) in sparse_keys.iter().zip(&sparse) {
                if let Some(ix) = loaded.get_mut(&sk.key) {
                    ix.apply(changes);
                }
            }
        }
        {
            let _p = self.progress.0.lock();
            self.progress.1.notify_all();
        }
        self.store.rotate_if_full()?;
        self.deleted_since_compact
            .fetch_add(deletes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn index_for(&self, dim: Option<usize>) -> Result<Arc<Hnsw>> {
        if let Some(i) = &*self.index.read() {
            return Ok(i.clone());
        }
        // Checked again under the lock: two opens of one directory would both
        // append to its commit log.
        let mut w = self.index.write();
        if let Some(i) = &*w {
            return Ok(i.clone());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Io(format!(
                "{}: the collection's files were reopened meanwhile; retry",
                self.dir.display()
            )));
        }
        let known = self.dim.load(Ordering::Relaxed);
        let dim = dim
            .or((known > 0).then_some(known))
            .ok_or_else(|| Error::Corrupt("a vector change without a dimension".into()))?;
        let idx = self.open_index(dim)?;
        if self.hibernated.load(Ordering::Acquire) {
            // As at open: an index whose files failed their checks was set aside
            // and starts empty, and is rebuilt from the store here.
            self.reconcile(&idx, self.applied(), &[])?;
        }
        self.dim.store(dim, Ordering::Relaxed);
        *w = Some(idx.clone());
        self.hibernated.store(false, Ordering::Release);
        Ok(idx)
    }

    /// The index, loaded again if it was hibernated; `None` before the first vector.
    fn loaded_index(&self) -> Result<Option<Arc<Hnsw>>> {
        if let Some(i) = &*self.index.read() {
            return Ok(Some(i.clone()));
        }
        if self.hibernated.load(Ordering::Acquire) {
            return self.index_for(None).map(Some);
        }
        Ok(None)
    }

    fn touch(&self) {
        self.last_used.store(now_ms(), Ordering::Relaxed);
    }

    /// When the segment was last read or written, in [`now_ms`].
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// About the memory the segment holds: its index's vectors and links, and
    /// the store's memtables.
    pub fn memory_bytes(&self) -> u64 {
        // Not waiting for an index being loaded (counted once it is).
        let index = self
            .index
            .try_read()
            .and_then(|i| i.as_ref().map(|i| i.graph_bytes()))
            .unwrap_or(0);
        let sparse = self
            .sparse
            .try_read()
            .map_or(0, |s| s.values().map(|i| i.memory_bytes() as u64).sum());
        index + sparse + self.store.stats().memtable_bytes
    }

    /// Gives back the segment's memory while it is not in use: its index is
    /// synced, closed and dropped (loaded again from its files on the next use)
    /// and the store's memtable is flushed. Returns whether it freed anything.
    /// The caller checks the segment is idle (its log folded) and holds
    /// [`Segment::hold`]; a write or read meanwhile simply loads the index again.
    pub fn hibernate(&self) -> Result<bool> {
        let _w = self.writer.lock();
        if self.is_retired() || self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut freed = false;
        {
            let mut sparse = self.sparse.write();
            freed |= !sparse.is_empty();
            sparse.clear();
        }
        {
            let mut w = self.index.write();
            if let Some(idx) = w.take() {
                if let Err(e) = idx.sync() {
                    *w = Some(idx);
                    return Err(e.into());
                }
                // Waits for a condensation in progress; no other opens the
                // directory until this one is closed.
                idx.close();
                self.hibernated.store(true, Ordering::Release);
                freed = true;
            }
        }
        if self.store.stats().memtable_bytes > 0 {
            self.store.flush()?;
            freed = true;
        }
        Ok(freed)
    }

    /// Makes everything applied durable; returns the offset it covers.
    pub fn sync(&self) -> Result<u64> {
        Ok(self.sync_counted()?.0)
    }

    /// [`Segment::sync`], also returning how many record operations this
    /// process has applied up to that offset (see [`Segment::ops_since`]).
    pub fn sync_counted(&self) -> Result<(u64, u64)> {
        let _w = self.writer.lock();
        let applied = self.applied();
        let ops = self.applied_ops.load(Ordering::Acquire);
        if let Some(i) = &*self.index.read() {
            i.sync()?;
        }
        self.store.sync()?;
        Ok((applied, ops))
    }

    /// The record operations between log offset `from` and a point returned
    /// by [`Segment::sync_counted`] (`upto`, `ops`), if this process applied
    /// all of them and `from` is the last [`Segment::mark_ops`]; otherwise
    /// `None` (the caller counts them in the log).
    pub fn ops_since(&self, from: u64, upto: (u64, u64)) -> Option<u64> {
        match *self.ops_mark.lock() {
            Some((at, ops)) if at == from && upto.0 >= at => upto.1.checked_sub(ops),
            _ => None,
        }
    }

    /// Records that a count was taken at `at` (offset, ops) from
    /// [`Segment::sync_counted`]; a mark never moves back.
    pub fn mark_ops(&self, at: (u64, u64)) {
        let mut m = self.ops_mark.lock();
        if m.is_none_or(|(o, _)| o < at.0) {
            *m = Some(at);
        }
    }

    /// Serialises checkpoints of this segment (the compactor's thread and an
    /// explicit drain): two interleaved ones could commit an older offset
    /// after a newer one, and count the ops between them twice.
    pub fn checkpointing(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.checkpointing.lock()
    }

    /// Gives back space: once deletes outnumber live records, the store is merged
    /// into one segment (dropping the deleted data), and an index left empty is
    /// replaced by a fresh one. Returns whether it did anything.
    pub fn reclaim(&self) -> Result<bool> {
        let deleted = self.deleted_since_compact.load(Ordering::Relaxed);
        if deleted == 0 {
            return Ok(false);
        }
        let live = self.live()?.len();
        if deleted < live.max(1000) {
            return Ok(false);
        }
        let _w = self.writer.lock();
        self.deleted_since_compact.store(0, Ordering::Relaxed);
        self.store.compact()?;
        if let Some(idx) = self.loaded_index()? {
            idx.repair()?;
            idx.condense()?;
        }
        Ok(true)
    }

    /// The index (loaded again if it was hibernated); `None` before the first
    /// vector.
    pub fn index(&self) -> Result<Option<Arc<Hnsw>>> {
        self.touch();
        self.loaded_index()
    }

    /// Copies the segment as it is at one moment into the new directory `dest`
    /// (`store/` and `hnsw/`): the compactor waits meanwhile, so store and index
    /// agree at [`Segment::applied`], which is returned with the bytes copied.
    pub fn backup_to(&self, dest: &Path) -> Result<(u64, u64)> {
        let _w = self.writer.lock();
        let mut bytes = self.store.checkpoint_to(&dest.join("store"))?;
        if let Some(i) = self.loaded_index()? {
            bytes += i.backup_to(&dest.join("hnsw"))?;
        }
        Ok((self.applied(), bytes))
    }

    /// Makes `dest` (a new directory) a fork of this segment as it is at one
    /// moment: files that never change are hard-linked (no space until either
    /// side rewrites them), the rest copied; the fork's store then says nothing of
    /// its own log is folded yet, since the fork's log starts afresh (its first
    /// entries are this segment's log after [`ForkCopy::applied`]).
    pub fn fork_to(&self, dest: &Path) -> Result<ForkCopy> {
        // The compactor waits meanwhile, so store and index agree at `applied`.
        let (applied, linked, copied) = {
            let _w = self.writer.lock();
            // Flushed, the memtable's records go to a segment both sides share,
            // rather than to a write-ahead log copied for the fork.
            self.store.flush()?;
            let (mut linked, mut copied) = self.store.fork_to(&dest.join("store"))?;
            if let Some(i) = self.loaded_index()? {
                let (l, c) = i.fork_to(&dest.join("hnsw"))?;
                linked += l;
                copied += c;
            }
            (self.applied(), linked, copied)
        };
        let store =
            Store::open_with_fs(self.env.fs.clone(), &dest.join("store"), Options::default())?;
        let meta = store.bucket("meta", Strategy::Replace)?;
        let mut batch = WriteBatch::new();
        batch.put(&meta, OFFSET_KEY, 0u64.to_le_bytes());
        store.write(&batch, WriteOptions::SYNC)?;
        drop(store);
        Ok(ForkCopy {
            applied,
            linked,
            copied,
        })
    }

    /// Stops the store's and the index's background work and refuses further
    /// changes; reads still work. After a failure that left memory and disk in
    /// doubt, the collection is opened afresh from its files and this one, still
    /// held by readers, must not touch them again.
    pub fn close(&self) {
        let _w = self.writer.lock();
        // Under the index lock, so no reader is loading it meanwhile: a
        // hibernated index stays on disk for the fresh open, and readers of this
        // one must not load a second writer of its files.
        let w = self.index.write();
        self.closed.store(true, Ordering::Release);
        if let Some(i) = &*w {
            i.close();
        }
        drop(w);
        self.store.close();
    }

    /// Waits until [`Segment::applied`] is past `offset` or `timeout` passes;
    /// returns whether it is.
    pub fn wait_applied_past(&self, offset: u64, timeout: std::time::Duration) -> bool {
        let mut g = self.progress.0.lock();
        if self.applied() <= offset {
            self.progress.1.wait_for(&mut g, timeout);
        }
        self.applied() > offset
    }

    /// Records the store holds (what the log tail changes is not counted).
    pub fn live_count(&self) -> u64 {
        self.live_count.load(Ordering::Relaxed)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Keeps the segment from being retired while the caller works on it; `None`
    /// once it is retired.
    pub fn hold(&self) -> Option<RwLockReadGuard<'_, bool>> {
        let g = self.retired.read();
        (!*g).then_some(g)
    }

    /// Retiring waits for compactor work on the segment to finish and turns away
    /// any more, so its collection can be deleted.
    pub fn set_retired(&self, retired: bool) {
        *self.retired.write() = retired;
    }

    /// Whether the segment's collection was deleted.
    pub fn is_retired(&self) -> bool {
        // Recursive: callers may hold `hold()` already, and a plain read queued
        // behind a deleter waiting to write would never be granted.
        *self.retired.read_recursive()
    }

    /// Runs `f` on `key`'s sparse index, loading it from the store first if no
    /// query has yet. The caller holds a snapshot, so the store does not move
    /// while it loads.
    fn with_sparse<T>(&self, key: &str, f: impl FnOnce(&SparseIndex) -> T) -> Result<T> {
        if let Some(ix) = self.sparse.read().get(key) {
            return Ok(f(ix));
        }
        let ix = match &self.b.sp {
            Some(sp) => {
                let prefix = posting::field_prefix(posting::SPARSE, key);
                let rows = self.store.scan_prefix(sp, &prefix)?;
                let mut postings = Vec::with_capacity(rows.len());
                for (k, v) in rows {
                    let rest = &k[prefix.len()..];
                    let (Ok(d), Ok(l), Ok(w)) = (
                        <[u8; 4]>::try_from(rest.get(..4).unwrap_or_default()),
                        <[u8; 4]>::try_from(rest.get(4..).unwrap_or_default()),
                        <[u8; 4]>::try_from(v.as_slice()),
                    ) else {
                        return Err(Error::Corrupt(format!(
                            "{}: a malformed sparse posting of {key:?}",
                            self.dir.display()
                        )));
                    };
                    postings.push((
                        u32::from_be_bytes(d),
                        u32::from_be_bytes(l),
                        f32::from_le_bytes(w),
                    ));
                }
                SparseIndex::from_postings(postings)
            }
            None => SparseIndex::new(),
        };
        let mut w = self.sparse.write();
        let ix = w.entry(key.to_string()).or_insert(ix);
        Ok(f(ix))
    }

    /// What the chunk in progress changes in the index; see [`Changing`].
    pub fn changing(&self) -> Arc<Changing> {
        self.changing.read().clone()
    }
}

impl<'a> Snapshot<'a> {
    pub fn segment(&self) -> &'a Segment {
        self.seg
    }
    pub fn lookup(&self, id: &str) -> Result<Option<u32>> {
        self.seg.lookup(id)
    }
    pub fn record(&self, iid: u32, with_embedding: bool) -> Result<Option<Record>> {
        self.seg.record(iid, with_embedding)
    }
    /// Every live internal id.
    pub fn live(&self) -> Result<RoaringBitmap> {
        self.seg.live()
    }
    /// How many records are live (without reading them).
    pub fn live_count(&self) -> u64 {
        self.seg.live_count()
    }
    /// A record's id alone (its metadata is not decoded).
    pub fn record_id(&self, iid: u32) -> Result<Option<String>> {
        let Some(body) = self.seg.store.get(&self.seg.b.rec, &iid_key(iid))? else {
            return Ok(None);
        };
        decode_record_id(&body)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: record {iid}: {e}", self.seg.dir.display())))
    }
    pub fn posting(&self, key: &[u8]) -> Result<RoaringBitmap> {
        Ok(low_bits(self.seg.store.get_set(&self.seg.b.post, key)?))
    }
    /// Postings whose keys start with `prefix`, with the rest of each key.
    pub fn postings_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, RoaringBitmap)>> {
        Ok(self
            .seg
            .store
            .scan_set_prefix(&self.seg.b.post, prefix)?
            .into_iter()
            .map(|(k, s)| (k[prefix.len()..].to_vec(), low_bits(s)))
            .collect())
    }
    /// The `k` records whose sparse vectors under `key` have the largest dot
    /// product with `query` (sorted by dimension), among those `allow` admits.
    pub fn sparse_search(
        &self,
        key: &str,
        query: &[(u32, f32)],
        k: usize,
        allow: impl Fn(u32) -> bool,
    ) -> Result<Vec<SparseHit>> {
        self.seg.with_sparse(key, |ix| ix.search(query, k, allow))
    }

    /// How many records have each of `dims` under `key` (BM25's document
    /// frequencies).
    pub fn sparse_df(&self, key: &str, dims: &[u32]) -> Result<Vec<usize>> {
        self.seg
            .with_sparse(key, |ix| dims.iter().map(|d| ix.df(*d)).collect())
    }

    /// Postings with keys in `[lo, hi]`.
    pub fn postings_between(&self, lo: &[u8], hi: &[u8]) -> Result<Vec<(Vec<u8>, RoaringBitmap)>> {
        use std::ops::Bound;
        Ok(self
            .seg
            .store
            .scan_set(&self.seg.b.post, Bound::Included(lo), Bound::Included(hi))?
            .into_iter()
            .map(|(k, s)| (k, low_bits(s)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indigo_types::{RecordOp, Scalar, WriteKind};
    use std::collections::BTreeMap;

    fn meta(pairs: &[(&str, MetaValue)]) -> BTreeMap<String, Option<MetaValue>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.clone())))
            .collect()
    }

    /// A switched-off index keeps no postings (the store is smaller for it), and
    /// an update or delete does not look for ones that were never written.
    #[test]
    fn unindexed_fields_and_documents_keep_no_postings() {
        let dir = tempfile::tempdir().unwrap();
        let mut unindexed = Unindexed {
            trigrams: true,
            ..Default::default()
        };
        unindexed.fields.insert(
            "secret".into(),
            Kinds {
                strings: true,
                numbers: false,
                bools: false,
            },
        );
        let config = IndexConfig {
            unindexed,
            ..Default::default()
        };
        let seg = Segment::open(&Env::default(), dir.path(), config, None, 0, &[]).unwrap();
        let s = |v: &str| MetaValue::Scalar(Scalar::Str(v.into()));
        let add = |id: &str, m: BTreeMap<String, Option<MetaValue>>, kind| WriteEntry {
            kind,
            records: vec![RecordOp {
                id: id.into(),
                embedding: Some(vec![1.0, 0.0].into()),
                document: Some("alpha beta".into()),
                uri: None,
                metadata: Some(m),
            }],
        };
        let m = meta(&[
            ("secret", s("x")),
            ("tag", s("t")),
            ("secret_n", MetaValue::Scalar(Scalar::Int(1))),
        ]);
        let mut m2 = meta(&[("secret", MetaValue::Scalar(Scalar::Int(7)))]);
        m2.insert("tag".into(), Some(s("u")));
        seg.apply(&[
            (1, add("a", m, WriteKind::Add)),
            (2, add("b", m2.clone(), WriteKind::Add)),
            (3, add("a", m2, WriteKind::Update)),
        ])
        .unwrap();
        let snap = seg.snapshot();
        let field = |f: &str| {
            snap.postings_with_prefix(&posting::field_prefix(posting::SCALAR, f))
                .unwrap()
                .into_iter()
                .map(|(k, b)| (posting::decode_value(&k).unwrap(), b.len()))
                .collect::<Vec<_>>()
        };
        // "secret" keeps its numbers (their index is on) but no strings.
        assert_eq!(field("secret"), vec![(Scalar::Int(7), 2)]);
        assert_eq!(field("tag"), vec![(Scalar::Str("u".into()), 2)]);
        assert_eq!(
            snap.postings_with_prefix(&[posting::TRIGRAM])
                .unwrap()
                .len(),
            0
        );
        assert_eq!(snap.posting(posting::HAS_DOC).unwrap().len(), 2);
        assert_eq!(snap.posting(posting::ALL).unwrap().len(), 2);
    }

    fn adds(from: usize, to: usize) -> WriteEntry {
        WriteEntry {
            kind: WriteKind::Add,
            records: (from..to)
                .map(|i| RecordOp {
                    id: format!("r{i}"),
                    embedding: Some(vec![i as f32, (i % 7) as f32, 1.0].into()),
                    document: None,
                    uri: None,
                    metadata: None,
                })
                .collect(),
        }
    }

    /// A fresh segment in `dir` with the default index configuration.
    fn open_default(dir: &std::path::Path) -> Segment {
        Segment::open(&Env::default(), dir, IndexConfig::default(), None, 0, &[]).unwrap()
    }

    /// A hibernated segment gives its index back and loads it on the next use,
    /// whole; an index whose files were damaged meanwhile is rebuilt from the
    /// store on that load, as at open; a closed segment never loads it again.
    #[test]
    fn hibernated_index_loads_again_and_is_rebuilt_if_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let seg = open_default(dir.path());
        seg.apply(&[(1, adds(0, 300))]).unwrap();
        let held = seg.hold().unwrap();
        assert!(seg.hibernate().unwrap());
        drop(held);
        assert_eq!(seg.memory_bytes(), 0);
        // Loaded again on use, with every record.
        assert_eq!(seg.index().unwrap().unwrap().len(), 300);
        seg.apply(&[(2, adds(300, 400))]).unwrap();
        let held = seg.hold().unwrap();
        assert!(seg.hibernate().unwrap());
        drop(held);
        // Damage every index file: the load sets them aside and rebuilds.
        let hnsw = dir.path().join("hnsw");
        for e in std::fs::read_dir(&hnsw).unwrap().flatten() {
            let p = e.path();
            let len = std::fs::metadata(&p).unwrap().len();
            if len > 64 {
                let mut b = std::fs::read(&p).unwrap();
                let n = b.len();
                b[n / 2] ^= 0xff;
                b[n - 8] ^= 0xff;
                std::fs::write(&p, b).unwrap();
            }
        }
        let idx = seg.index().unwrap().unwrap();
        assert_eq!(idx.len(), 400);
        let hit = idx.search(&[123.0, 4.0, 1.0], 1, None).unwrap();
        assert_eq!(hit[0].label, 123);
        // Hibernated and then closed: readers get an error, not an empty index.
        let held = seg.hold().unwrap();
        assert!(seg.hibernate().unwrap());
        drop(held);
        seg.close();
        assert!(seg.index().is_err());
    }

    /// Dropping a segment closes its index (waiting for a condensation in
    /// progress): whoever still holds the index can search it but not change
    /// its files.
    #[test]
    fn a_dropped_segment_closes_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let seg = open_default(dir.path());
        seg.apply(&[(1, adds(0, 300))]).unwrap();
        let idx = seg.index().unwrap().unwrap();
        idx.insert(1000, &[1.0, 2.0, 3.0]).unwrap();
        drop(seg);
        assert_eq!(
            idx.search(&[123.0, 4.0, 1.0], 1, None).unwrap()[0].label,
            123
        );
        assert!(
            idx.insert(1001, &[1.0, 2.0, 3.0]).is_err(),
            "a closed index takes no change"
        );
    }
}
