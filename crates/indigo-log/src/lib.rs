//! Indigo's write-ahead log: every write request becomes one record, durable before
//! the request is acknowledged. Records carry a per-collection offset (1, 2, 3, …),
//! so consumers (the compactor, the executor's tail merge) track progress per
//! collection, and the log drops records only below what every consumer has
//! checkpointed ([`Log::truncate`], called with the minimum of the checkpoints the
//! system database keeps).
//!
//! Invariants:
//! - `append` returns only after its record is fsynced; concurrent appenders share
//!   one fsync (group commit: the first waiter writes and syncs everything queued).
//! - Reads see exactly the acknowledged records, in offset order, with no gaps.
//! - After any I/O failure the log refuses appends until reopened, since what is on
//!   disk may then differ from what was acknowledged.
//!
//! [`Log`] is a trait so the distributed mode can keep the log in object storage;
//! [`FileLog`] is the local implementation on the storage engine's file-system seam.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indigo_storage::fs::{FileSystem, ReadableFile, StdFs, WritableFile};
use parking_lot::{Condvar, Mutex};

/// A collection's id (a UUID's 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionId(pub [u8; 16]);

impl CollectionId {
    /// A collection id from its UUID text (dashes optional); `None` unless it is
    /// exactly 32 hex digits.
    pub fn parse_uuid(s: &str) -> Option<CollectionId> {
        let hex: Vec<u8> = s.bytes().filter(|c| *c != b'-').collect();
        if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        let mut b = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            b[i] = (digit(pair[0]) << 4) | digit(pair[1]);
        }
        Some(CollectionId(b))
    }
}

/// A record's position in its collection's log; 0 means "before the first record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LogOffset(pub u64);

#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub collection: CollectionId,
    pub offset: LogOffset,
    pub payload: Arc<[u8]>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("log I/O error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt log file {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// An earlier write or fsync failed; reopen the log to recover from disk.
    #[error("log refuses writes after an earlier I/O failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// Another writer took over the log (distributed mode): nothing of this append
    /// was written, so retrying it is safe.
    #[error("{0}")]
    Fenced(String),
    /// Whether this append was stored cannot be known now (distributed mode): a
    /// read after the log recovers tells. Retrying could apply it twice.
    #[error("{0}")]
    Ambiguous(String),
}

impl LogError {
    /// The same error again (every append of a failed group commit gets one).
    pub fn duplicate(&self) -> LogError {
        match self {
            LogError::Io { op, path, source } => LogError::Io {
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            LogError::Corrupt { path, detail } => LogError::Corrupt {
                path: path.clone(),
                detail: detail.clone(),
            },
            LogError::Poisoned(s) => LogError::Poisoned(s.clone()),
            LogError::Fenced(s) => LogError::Fenced(s.clone()),
            LogError::Ambiguous(s) => LogError::Ambiguous(s.clone()),
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// What every log implementation offers.
pub trait Log: Send + Sync {
    /// Appends one record for `collection` and returns its offset once durable.
    fn append(&self, collection: CollectionId, payload: &[u8]) -> Result<LogOffset>;
    /// Records of `collection` after offset `after`, oldest first, at most `limit`.
    fn read(
        &self,
        collection: CollectionId,
        after: LogOffset,
        limit: usize,
    ) -> Result<Vec<LogRecord>>;
    /// Like [`Log::read`], but each payload may be cut to its first `prefix`
    /// bytes: for callers that need only a header (counting a tail's record
    /// operations), so they need not copy the rest.
    fn read_prefixes(
        &self,
        collection: CollectionId,
        after: LogOffset,
        limit: usize,
        prefix: usize,
    ) -> Result<Vec<LogRecord>> {
        let _ = prefix;
        self.read(collection, after, limit)
    }
    /// The newest acknowledged offset of `collection` (0 if none).
    fn head(&self, collection: CollectionId) -> LogOffset;
    /// Every consumer has `collection`'s records up to `upto`: the log may drop them.
    fn truncate(&self, collection: CollectionId, upto: LogOffset) -> Result<()>;
    /// Collections that still have records (not yet truncated), so recovery can
    /// drop those of collections deleted by a process that crashed mid-delete.
    fn collections(&self) -> Vec<CollectionId>;
    /// Whether the log's storage still holds records of `collection`, truncated or
    /// not (a reopened log would read them again), so a deleted collection's
    /// tombstone can go only once it does not.
    fn holds(&self, collection: CollectionId) -> bool;
}

const MAGIC: &[u8; 6] = b"IDGLOG";
/// Reserved id of the record that opens every file and lists each collection's head
/// at that point, so offsets continue even after all of a collection's records
/// were truncated with the files that held them.
const HEADS: CollectionId = CollectionId([0xff; 16]);
const VERSION: u16 = 1;
const HEADER_LEN: usize = 8;
/// A current file past this size is closed early once every record in it is
/// truncated.
const ROTATE_DEAD_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Start a new file past this size, so truncated prefixes can be deleted.
    pub file_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            file_bytes: 64 << 20,
        }
    }
}

fn file_name(no: u64) -> String {
    format!("{no:010}.ilog")
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(MAGIC);
    h[6..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// `[u32 len][u32 crc32c(body)][body = collection 16 B, offset u64, payload]`.
fn encode(out: &mut Vec<u8>, c: CollectionId, off: u64, payload: &[u8]) {
    let len = (16 + 8 + payload.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&c.0);
    out.extend_from_slice(&off.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn heads_record(collections: &HashMap<CollectionId, Collection>) -> Vec<u8> {
    let mut payload = Vec::with_capacity(collections.len() * 24);
    for (c, col) in collections {
        payload.extend_from_slice(&c.0);
        payload.extend_from_slice(&col.head.to_le_bytes());
    }
    let mut out = header().to_vec();
    encode(&mut out, HEADS, 0, &payload);
    out
}

#[derive(Default)]
struct Collection {
    /// Highest offset handed out, durable or still in a group commit.
    assigned: u64,
    head: u64,
    truncated: u64,
    /// Acknowledged records above `truncated`, oldest first: where each payload
    /// is. Payloads are read back from the files (the page cache), so a log that
    /// consumers lag far behind costs disk, not memory.
    records: VecDeque<Loc>,
}

#[derive(Clone, Copy)]
struct Loc {
    offset: u64,
    file: u64,
    pos: u64,
    len: u32,
}

struct Queued {
    collection: CollectionId,
    offset: u64,
    /// Where the payload starts in the commit buffer, and its length.
    buf_pos: usize,
    len: u32,
}

/// Bytes before a payload in a record: len, crc, collection, offset.
const RECORD_PREFIX: usize = 8 + 16 + 8;

struct State {
    collections: HashMap<CollectionId, Collection>,
    /// Encoded records waiting for the next group commit, and what they are.
    buf: Vec<u8>,
    queued: Vec<Queued>,
    /// Sequence numbers: every append gets one; `durable` covers those synced.
    next_seq: u64,
    durable: u64,
    leader: bool,
    poisoned: Option<String>,
    file: Arc<dyn WritableFile>,
    file_no: u64,
    file_len: u64,
    /// For each file: the highest offset it holds per collection (to know when
    /// every record in it is truncated).
    files: BTreeMap<u64, HashMap<CollectionId, u64>>,
    /// Live [`TruncationHold`]s: while any, truncation changes nothing.
    holds: usize,
}

/// While it lives, [`Log::truncate`] on its log changes nothing (a backup reads
/// records below checkpoints that move meanwhile). Truncation is idempotent, so
/// the compactor's next call catches up.
pub struct TruncationHold<'a>(&'a FileLog);

impl Drop for TruncationHold<'_> {
    fn drop(&mut self) {
        self.0.state.lock().holds -= 1;
    }
}

/// The local log: numbered files in a directory.
pub struct FileLog {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    opts: LogOptions,
    state: Mutex<State>,
    synced: Condvar,
    /// Open read handles of recent files.
    readers: Mutex<HashMap<u64, Arc<dyn ReadableFile>>>,
}

impl FileLog {
    pub fn open(dir: impl AsRef<Path>) -> Result<FileLog> {
        Self::open_with_fs(Arc::new(StdFs), dir.as_ref(), LogOptions::default())
    }

    /// Opens the log in `dir`, replaying every file; a torn tail (a crash mid-write)
    /// is cut at the last whole record.
    pub fn open_with_fs(fs: Arc<dyn FileSystem>, dir: &Path, opts: LogOptions) -> Result<FileLog> {
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| LogError::Io {
                op,
                path: p,
                source,
            }
        };
        indigo_storage::fs::create_dir_durable(&*fs, dir)
            .map_err(io("create log directory", dir))?;
        let mut nos: Vec<u64> = fs
            .list(dir)
            .map_err(io("list log directory", dir))?
            .iter()
            .filter_map(|n| n.strip_suffix(".ilog")?.parse().ok())
            .collect();
        nos.sort_unstable();
        let mut collections: HashMap<CollectionId, Collection> = HashMap::new();
        let mut files = BTreeMap::new();
        for (i, &no) in nos.iter().enumerate() {
            let path = dir.join(file_name(no));
            let data = fs.read_all(&path).map_err(io("read log file", &path))?;
            let mut maxes = HashMap::new();
            let valid = replay(&data, &path, |c, off, payload| {
                if c == HEADS {
                    for e in payload.chunks_exact(24) {
                        let c = CollectionId(e[..16].try_into().unwrap());
                        let h = u64::from_le_bytes(e[16..].try_into().unwrap());
                        let col = collections.entry(c).or_default();
                        if col.head < h {
                            col.head = h;
                            col.assigned = h;
                            col.truncated = col.truncated.max(h);
                            col.records.retain(|r| r.offset > h);
                        }
                    }
                    return Ok(());
                }
                let col = collections.entry(c).or_default();
                if col.head == 0 && off > 1 {
                    // Its earlier records were truncated with the files that held them.
                    col.truncated = off - 1;
                    col.head = off - 1;
                }
                if off != col.head + 1 {
                    return Err(format!("collection offset {off} follows {}", col.head));
                }
                col.head = off;
                col.assigned = off;
                col.records.push_back(Loc {
                    offset: off,
                    file: no,
                    pos: (payload.as_ptr() as usize - data.as_ptr() as usize) as u64,
                    len: payload.len() as u32,
                });
                maxes.insert(c, off);
                Ok(())
            })?;
            if valid < data.len() {
                if i + 1 < nos.len() {
                    return Err(LogError::Corrupt {
                        path,
                        detail: "damaged record in a log file that is not the newest".into(),
                    });
                }
                // Keep only the whole records, so later appends follow them.
                let tmp = dir.join(format!("{}.tmp", file_name(no)));
                let f = fs.create(&tmp).map_err(io("create log file", &tmp))?;
                f.append(&data[..valid])
                    .map_err(io("write log file", &tmp))?;
                f.sync().map_err(io("fsync log file", &tmp))?;
                fs.rename(&tmp, &path)
                    .map_err(io("rename log file", &path))?;
                fs.sync_dir(dir).map_err(io("fsync log directory", dir))?;
            }
            files.insert(no, maxes);
        }
        for name in fs.list(dir).map_err(io("list log directory", dir))? {
            if name.ends_with(".tmp") {
                let p = dir.join(&name);
                fs.remove(&p).map_err(io("remove temporary file", &p))?;
            }
        }
        let file_no = nos.last().map_or(1, |n| n + 1);
        let path = dir.join(file_name(file_no));
        let file = fs.create(&path).map_err(io("create log file", &path))?;
        let first = heads_record(&collections);
        file.append(&first).map_err(io("write log file", &path))?;
        file.sync().map_err(io("fsync log file", &path))?;
        fs.sync_dir(dir).map_err(io("fsync log directory", dir))?;
        files.insert(file_no, HashMap::new());
        Ok(FileLog {
            fs,
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(State {
                collections,
                buf: Vec::new(),
                queued: Vec::new(),
                next_seq: 0,
                durable: 0,
                leader: false,
                poisoned: None,
                file,
                file_no,
                file_len: first.len() as u64,
                files,
                holds: 0,
            }),
            synced: Condvar::new(),
            readers: Mutex::new(HashMap::new()),
        })
    }

    /// A reader of log file `no` that sees at least `end` bytes (a file still being
    /// appended to is reopened once a read goes past what an earlier handle saw).
    fn reader(&self, no: u64, end: u64) -> Result<Arc<dyn ReadableFile>> {
        let mut cache = self.readers.lock();
        if let Some(f) = cache.get(&no) {
            if f.len() >= end {
                return Ok(f.clone());
            }
        }
        let path = self.dir.join(file_name(no));
        let f = self.fs.open(&path).map_err(|source| LogError::Io {
            op: "open log file",
            path,
            source,
        })?;
        cache.retain(|&n, _| n >= no.saturating_sub(1));
        cache.insert(no, f.clone());
        Ok(f)
    }

    /// Why appends are refused, if they are (an I/O failure; reopening recovers).
    pub fn poisoned(&self) -> Option<String> {
        self.state.lock().poisoned.clone()
    }

    /// Keeps truncation from dropping anything while the hold lives.
    pub fn hold_truncation(&self) -> TruncationHold<'_> {
        self.state.lock().holds += 1;
        TruncationHold(self)
    }

    /// Every collection's newest acknowledged offset, all at one moment: a write
    /// acknowledged before the call is at or below its collection's head, one
    /// acknowledged after it is above.
    pub fn heads(&self) -> HashMap<CollectionId, u64> {
        self.state
            .lock()
            .collections
            .iter()
            .map(|(c, col)| (*c, col.head))
            .collect()
    }

    /// Writes a new log directory `dest` (through `fs`) that holds, for each
    /// collection in `ranges`, its records in `(after, upto]`, and opens as a log
    /// whose offsets continue from there. The records must not be truncated (hold
    /// truncation first). Returns the number of records written.
    pub fn export(
        &self,
        fs: &dyn FileSystem,
        dest: &Path,
        ranges: &HashMap<CollectionId, (u64, u64)>,
    ) -> Result<u64> {
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| LogError::Io {
                op,
                path: p,
                source,
            }
        };
        indigo_storage::fs::create_dir_durable(fs, dest)
            .map_err(io("create log directory", dest))?;
        let path = dest.join(file_name(1));
        let file = fs.create(&path).map_err(io("create log file", &path))?;
        // The file opens with each collection's offset before its first record.
        let starts: HashMap<CollectionId, Collection> = ranges
            .iter()
            .map(|(c, &(after, _))| {
                (
                    *c,
                    Collection {
                        head: after,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let mut buf = heads_record(&starts);
        let mut n = 0;
        for (c, &(after, upto)) in ranges {
            let mut at = after;
            while at < upto {
                let recs = self.read(*c, LogOffset(at), 256)?;
                let Some(first) = recs.first() else { break };
                if first.offset.0 != at + 1 {
                    return Err(LogError::Corrupt {
                        path: self.dir.clone(),
                        detail: format!(
                            "records after {at} were truncated while exporting; hold truncation"
                        ),
                    });
                }
                for r in recs.iter().take_while(|r| r.offset.0 <= upto) {
                    encode(&mut buf, *c, r.offset.0, &r.payload);
                    at = r.offset.0;
                    n += 1;
                }
                if buf.len() > 8 << 20 {
                    file.append(&buf).map_err(io("write log file", &path))?;
                    buf.clear();
                }
            }
        }
        file.append(&buf).map_err(io("write log file", &path))?;
        file.sync().map_err(io("fsync log file", &path))?;
        fs.sync_dir(dest).map_err(io("fsync log directory", dest))?;
        Ok(n)
    }

    /// Files currently on disk (for tests of truncation).
    pub fn file_count(&self) -> usize {
        self.state.lock().files.len()
    }

    /// Writes and fsyncs what is queued; called by the leader without the lock.
    fn commit(&self, file: &Arc<dyn WritableFile>, no: u64, buf: &[u8]) -> Result<()> {
        let path = self.dir.join(file_name(no));
        file.append(buf).map_err(|source| LogError::Io {
            op: "append to log",
            path: path.clone(),
            source,
        })?;
        file.sync().map_err(|source| LogError::Io {
            op: "fsync log",
            path,
            source,
        })?;
        // Synced pages are clean: let them go rather than grow the page cache.
        file.drop_cache();
        Ok(())
    }

    /// Starts a new file once the current one is large (called by the leader).
    fn rotate(&self, st: &mut State) -> Result<()> {
        let no = st.file_no + 1;
        let path = self.dir.join(file_name(no));
        let first = heads_record(&st.collections);
        let f = (|| {
            let f = self.fs.create(&path)?;
            f.append(&first)?;
            f.sync()?;
            self.fs.sync_dir(&self.dir)?;
            Ok(f)
        })()
        .map_err(|source| LogError::Io {
            op: "create log file",
            path,
            source,
        })?;
        st.file = f;
        st.file_no = no;
        st.file_len = first.len() as u64;
        st.files.insert(no, HashMap::new());
        Ok(())
    }
}

/// Calls `f` for each whole record; returns the length of the valid prefix.
fn replay(
    data: &[u8],
    path: &Path,
    mut f: impl FnMut(CollectionId, u64, &[u8]) -> std::result::Result<(), String>,
) -> Result<usize> {
    if data.len() < HEADER_LEN {
        // Created, but the header never reached the disk: nothing in it was acknowledged.
        return Ok(0);
    }
    if &data[..6] != MAGIC {
        return Err(LogError::Corrupt {
            path: path.into(),
            detail: "not a log file (bad magic)".into(),
        });
    }
    let v = u16::from_le_bytes([data[6], data[7]]);
    if v != VERSION {
        return Err(LogError::Corrupt {
            path: path.into(),
            detail: format!("log version {v} is not supported (this build reads {VERSION})"),
        });
    }
    let mut pos = HEADER_LEN;
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        let Some(body) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if len < 24 || crc32c::crc32c(body) != crc {
            break;
        }
        let c = CollectionId(body[..16].try_into().unwrap());
        let off = u64::from_le_bytes(body[16..24].try_into().unwrap());
        f(c, off, &body[24..]).map_err(|detail| LogError::Corrupt {
            path: path.into(),
            detail,
        })?;
        pos += 8 + len;
    }
    Ok(pos)
}

impl Log for FileLog {
    fn append(&self, collection: CollectionId, payload: &[u8]) -> Result<LogOffset> {
        assert!(
            collection != HEADS,
            "collection id ff…ff is reserved by the log"
        );
        let mut st = self.state.lock();
        if let Some(why) = &st.poisoned {
            return Err(LogError::Poisoned(why.clone()));
        }
        let offset = {
            let c = st.collections.entry(collection).or_default();
            c.assigned += 1;
            c.assigned
        };
        let buf_pos = st.buf.len() + RECORD_PREFIX;
        encode(&mut st.buf, collection, offset, payload);
        st.queued.push(Queued {
            collection,
            offset,
            buf_pos,
            len: payload.len() as u32,
        });
        st.next_seq += 1;
        let my_seq = st.next_seq;
        loop {
            if st.durable >= my_seq {
                return Ok(LogOffset(offset));
            }
            if let Some(why) = &st.poisoned {
                return Err(LogError::Poisoned(why.clone()));
            }
            if st.leader {
                self.synced.wait(&mut st);
                continue;
            }
            // Lead a group commit of everything queued so far.
            st.leader = true;
            if st.file_len > self.opts.file_bytes {
                if let Err(e) = self.rotate(&mut st) {
                    st.poisoned = Some(e.to_string());
                    st.leader = false;
                    self.synced.notify_all();
                    return Err(e);
                }
            }
            let buf = std::mem::take(&mut st.buf);
            let queued = std::mem::take(&mut st.queued);
            let upto = st.next_seq;
            let (file, no) = (st.file.clone(), st.file_no);
            drop(st);
            let r = self.commit(&file, no, &buf);
            st = self.state.lock();
            st.leader = false;
            match r {
                Ok(()) => {
                    let base = st.file_len;
                    st.file_len += buf.len() as u64;
                    for q in queued {
                        let col = st.collections.entry(q.collection).or_default();
                        debug_assert_eq!(q.offset, col.head + 1);
                        col.head = q.offset;
                        col.records.push_back(Loc {
                            offset: q.offset,
                            file: no,
                            pos: base + q.buf_pos as u64,
                            len: q.len,
                        });
                        let maxes = st.files.get_mut(&no).expect("current file is tracked");
                        maxes.insert(q.collection, q.offset);
                    }
                    st.durable = upto;
                    self.synced.notify_all();
                }
                Err(e) => {
                    st.poisoned = Some(e.to_string());
                    self.synced.notify_all();
                    return Err(e);
                }
            }
        }
    }

    fn read(
        &self,
        collection: CollectionId,
        after: LogOffset,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        self.read_prefixes(collection, after, limit, usize::MAX)
    }

    fn read_prefixes(
        &self,
        collection: CollectionId,
        after: LogOffset,
        limit: usize,
        prefix: usize,
    ) -> Result<Vec<LogRecord>> {
        let locs: Vec<Loc> = {
            let st = self.state.lock();
            let Some(c) = st.collections.get(&collection) else {
                return Ok(Vec::new());
            };
            // Offsets are dense, so the position of `after` follows from the first one.
            let first = c.records.front().map_or(0, |r| r.offset);
            let skip = (after.0 + 1).saturating_sub(first) as usize;
            c.records
                .range(skip.min(c.records.len())..)
                .take(limit)
                .copied()
                .collect()
        };
        // Read outside the lock. Files a reader needs are not deleted under it:
        // only records every consumer has passed are truncated, and an open handle
        // outlives the file's name anyway.
        let mut out = Vec::with_capacity(locs.len());
        let mut file: Option<(u64, Arc<dyn ReadableFile>)> = None;
        for l in locs {
            let path = self.dir.join(file_name(l.file));
            let end = l.pos + l.len as u64;
            let stale = file
                .as_ref()
                .is_none_or(|(no, f)| *no != l.file || f.len() < end);
            if stale {
                let f = self.reader(l.file, end)?;
                file = Some((l.file, f));
            }
            let f = &file.as_ref().unwrap().1;
            // Read straight into the shared buffer: `Arc::from(Vec)` would copy
            // every payload a second time.
            let zeroed = Arc::<[u8]>::new_zeroed_slice((l.len as usize).min(prefix));
            // SAFETY: zero bytes are valid u8s.
            let mut payload = unsafe { zeroed.assume_init() };
            let buf = Arc::get_mut(&mut payload).expect("a fresh Arc is unique");
            f.read_exact_at(buf, l.pos).map_err(|source| LogError::Io {
                op: "read log",
                path,
                source,
            })?;
            out.push(LogRecord {
                collection,
                offset: LogOffset(l.offset),
                payload,
            });
        }
        Ok(out)
    }

    fn head(&self, collection: CollectionId) -> LogOffset {
        LogOffset(
            self.state
                .lock()
                .collections
                .get(&collection)
                .map_or(0, |c| c.head),
        )
    }

    fn collections(&self) -> Vec<CollectionId> {
        self.state
            .lock()
            .collections
            .iter()
            .filter(|(_, c)| c.head > c.truncated)
            .map(|(id, _)| *id)
            .collect()
    }

    fn holds(&self, collection: CollectionId) -> bool {
        self.state
            .lock()
            .files
            .values()
            .any(|maxes| maxes.contains_key(&collection))
    }

    fn truncate(&self, collection: CollectionId, upto: LogOffset) -> Result<()> {
        let mut st = self.state.lock();
        if st.holds > 0 {
            return Ok(());
        }
        if let Some(c) = st.collections.get_mut(&collection) {
            c.truncated = c.truncated.max(upto.0.min(c.head));
            while c.records.front().is_some_and(|r| r.offset <= c.truncated) {
                c.records.pop_front();
            }
        }
        // A large current file whose records are all truncated is closed, so its
        // space comes back now rather than after the next 64 MiB of writes.
        let current_dead = st.files[&st.file_no]
            .iter()
            .all(|(c, &max)| st.collections.get(c).is_none_or(|col| max <= col.truncated));
        if current_dead && !st.leader && st.queued.is_empty() && st.file_len > ROTATE_DEAD_BYTES {
            if let Err(e) = self.rotate(&mut st) {
                st.poisoned = Some(e.to_string());
                return Err(e);
            }
        }
        // A closed file goes once every record in it is truncated.
        let current = st.file_no;
        let dead: Vec<u64> = st
            .files
            .iter()
            .filter(|(&no, maxes)| {
                no != current
                    && maxes.iter().all(|(c, &max)| {
                        st.collections.get(c).is_none_or(|col| max <= col.truncated)
                    })
            })
            .map(|(&no, _)| no)
            .collect();
        for no in dead {
            let path = self.dir.join(file_name(no));
            self.fs.remove(&path).map_err(|source| LogError::Io {
                op: "remove truncated log file",
                path,
                source,
            })?;
            st.files.remove(&no);
        }
        Ok(())
    }
}

#[cfg(test)]
mod collection_id_tests {
    use super::CollectionId;

    #[test]
    fn uuid_text_parses_with_or_without_dashes_and_nothing_else_does() {
        let want = CollectionId([
            0xff, 0xb2, 0x78, 0x3b, 0xad, 0x3b, 0x44, 0xd2, 0x99, 0xa5, 0xf7, 0x2c, 0x34, 0x4a,
            0x37, 0x33,
        ]);
        assert_eq!(
            CollectionId::parse_uuid("ffb2783b-ad3b-44d2-99a5-f72c344a3733"),
            Some(want)
        );
        assert_eq!(
            CollectionId::parse_uuid("FFB2783BAD3B44D299A5F72C344A3733"),
            Some(want)
        );
        for bad in [
            "",
            "ffb2783b-ad3b-44d2-99a5-f72c344a373",
            "ffb2783b-ad3b-44d2-99a5-f72c344a37333",
            "+fb2783b-ad3b-44d2-99a5-f72c344a3733",
            "ffb2783b-ad3b-44d2-99a5-f72c344a37é",
            "gfb2783b-ad3b-44d2-99a5-f72c344a3733",
        ] {
            assert_eq!(CollectionId::parse_uuid(bad), None, "{bad:?}");
        }
    }
}
