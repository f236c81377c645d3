//! Persistence of the HNSW graph: an append-only commit log of graph changes and a
//! checksummed snapshot that condensation writes from (snapshot + closed log).
//!
//! Files in the index directory (see `docs/format.md`):
//! - `snapshot-G.hnsw`: the whole graph as of the start of log generation G.
//! - `log-G.hnsw`: changes made after that snapshot, in order. Only the newest log
//!   is open for appends; older logs were fsynced when they were closed.
//!
//! Load = newest valid snapshot + replay of every log with generation ≥ its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indigo_fs::{FileSystem, ReadableFile, WritableFile};

use crate::distance::Space;
use crate::error::{IndexError, Result};

const LOG_MAGIC: &[u8; 8] = b"IDGHNSWL";
const SNAP_MAGIC: &[u8; 8] = b"IDGHNSWS";
/// Commit logs are at version 1.
const LOG_VERSION: u32 = 1;
/// Snapshots: version 2 starts the vector rows at [`ROWS_OFFSET`] (a load can
/// map them); version 1, right after the fixed fields, is still read.
const SNAP_VERSION: u32 = 2;
pub(crate) const LOG_HEADER_LEN: usize = 8 + 4 + 4 + 1 + 4 + 4;
/// Snapshot rows start at this file offset (version 2): page-aligned, so a load
/// can map them as the index's own rows instead of copying them into fresh
/// memory, which on virtual machines costs more than reading the file.
pub(crate) const ROWS_OFFSET: u64 = 4096;
/// The header and fixed fields before a snapshot's rows: n_slots, entry.
const SNAP_FIXED_LEN: usize = LOG_HEADER_LEN + 9;
/// Buffered log bytes are written to the OS beyond this size.
const LOG_BUFFER: usize = 1 << 20;

/// How far past the slots loaded so far a logged slot may be before the log is
/// judged damaged (rather than sizing the arrays for it). Slots are taken
/// lowest free first, so a log adds them from the snapshot's end upwards, out
/// of order only by as many as insert at once.
#[cfg(not(test))]
pub(crate) const MAX_SLOT_JUMP: usize = 1 << 20;
#[cfg(test)]
pub(crate) const MAX_SLOT_JUMP: usize = 64;

pub(crate) const NO_ENTRY: u32 = u32::MAX;

/// What is fixed for the life of an index and recorded in every file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileParams {
    pub dim: u32,
    pub space: Space,
    pub m: u32,
    pub ef_construction: u32,
}

/// One change to the graph, as logged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    AddNode {
        slot: u32,
        label: u32,
        level: u8,
        vector: Vec<f32>,
    },
    SetLinks {
        slot: u32,
        level: u8,
        links: Vec<u32>,
    },
    SetEntry {
        slot: u32,
        level: u8,
    },
    Tombstone {
        slot: u32,
    },
    Remove {
        slot: u32,
    },
}

const T_ADD: u8 = 1;
const T_LINKS: u8 = 2;
const T_ENTRY: u8 = 3;
const T_TOMB: u8 = 4;
const T_REMOVE: u8 = 5;

impl Op {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        match self {
            Op::AddNode {
                slot,
                label,
                level,
                vector,
            } => {
                out.push(T_ADD);
                out.extend_from_slice(&slot.to_le_bytes());
                out.extend_from_slice(&label.to_le_bytes());
                out.push(*level);
                for x in vector {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            Op::SetLinks { slot, level, links } => {
                out.push(T_LINKS);
                out.extend_from_slice(&slot.to_le_bytes());
                out.push(*level);
                out.extend_from_slice(&(links.len() as u16).to_le_bytes());
                for l in links {
                    out.extend_from_slice(&l.to_le_bytes());
                }
            }
            Op::SetEntry { slot, level } => {
                out.push(T_ENTRY);
                out.extend_from_slice(&slot.to_le_bytes());
                out.push(*level);
            }
            Op::Tombstone { slot } => {
                out.push(T_TOMB);
                out.extend_from_slice(&slot.to_le_bytes());
            }
            Op::Remove { slot } => {
                out.push(T_REMOVE);
                out.extend_from_slice(&slot.to_le_bytes());
            }
        }
        let len = (out.len() - start - 8) as u32;
        let crc = crc32c::crc32c(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(p: &[u8], dim: usize) -> Option<Op> {
        let mut r = Cursor { b: p, pos: 0 };
        let op = match r.u8()? {
            T_ADD => Op::AddNode {
                slot: r.u32()?,
                label: r.u32()?,
                level: r.u8()?,
                vector: (0..dim).map(|_| r.f32()).collect::<Option<_>>()?,
            },
            T_LINKS => {
                let slot = r.u32()?;
                let level = r.u8()?;
                let n = r.u16()?;
                Op::SetLinks {
                    slot,
                    level,
                    links: (0..n).map(|_| r.u32()).collect::<Option<_>>()?,
                }
            }
            T_ENTRY => Op::SetEntry {
                slot: r.u32()?,
                level: r.u8()?,
            },
            T_TOMB => Op::Tombstone { slot: r.u32()? },
            T_REMOVE => Op::Remove { slot: r.u32()? },
            _ => return None,
        };
        (r.pos == p.len()).then_some(op)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.b.get(self.pos..self.pos + N)?;
        self.pos += N;
        s.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take()?))
    }
    fn f32(&mut self) -> Option<f32> {
        Some(f32::from_le_bytes(self.take()?))
    }
}

/// Sequential reads of a file a chunk at a time: snapshots and logs can be as
/// large as the graph, and reading one whole doubled the memory a load or a
/// condensation needs. Keeps the crc32c of what it has handed out, if asked.
struct Chunked<'a> {
    f: &'a dyn ReadableFile,
    /// Bytes of the file this reader covers (from 0).
    len: u64,
    /// File offset of `buf[0]`.
    base: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` handed out.
    at: usize,
    crc: Option<u32>,
}

/// Small in unit tests, so their files span many chunks.
const READ_CHUNK: usize = if cfg!(test) { 4096 } else { 8 << 20 };

impl<'a> Chunked<'a> {
    fn new(f: &'a dyn ReadableFile, len: u64, sum: bool) -> Self {
        Chunked {
            f,
            len,
            base: 0,
            buf: Vec::new(),
            at: 0,
            crc: sum.then_some(0),
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.at as u64
    }

    fn remaining(&self) -> u64 {
        self.len - self.offset()
    }

    /// The next `n` bytes; `None` if the covered part of the file ends first.
    fn next(&mut self, n: usize) -> std::io::Result<Option<&[u8]>> {
        if n as u64 > self.remaining() {
            return Ok(None);
        }
        if self.at + n > self.buf.len() {
            self.buf.drain(..self.at);
            self.base += self.at as u64;
            self.at = 0;
            let keep = self.buf.len();
            let want = (n.max(READ_CHUNK) as u64).min(self.len - self.base) as usize;
            self.buf.resize(want, 0);
            self.f
                .read_exact_at(&mut self.buf[keep..], self.base + keep as u64)?;
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        if let Some(c) = &mut self.crc {
            *c = crc32c::crc32c_append(*c, s);
        }
        Ok(Some(s))
    }
}

impl Chunked<'_> {
    /// Moves past the next `bytes.len()` bytes, which the caller got another
    /// way (mapped): `bytes` holds them, for the checksum. The caller has
    /// checked that the file holds them.
    fn skip_read(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() as u64 <= self.remaining());
        if let Some(c) = &mut self.crc {
            *c = crc32c::crc32c_append(*c, bytes);
        }
        self.base = self.offset() + bytes.len() as u64;
        self.buf.clear();
        self.at = 0;
    }
}

/// Writes a file through a buffer of [`READ_CHUNK`] bytes, keeping the crc32c
/// of what it wrote.
struct ChunkedWriter {
    f: Arc<dyn WritableFile>,
    buf: Vec<u8>,
    crc: u32,
}

impl ChunkedWriter {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.buf.extend_from_slice(b);
        if self.buf.len() >= READ_CHUNK {
            self.f.append(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<Arc<dyn WritableFile>> {
        let crc = self.crc;
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.f.append(&self.buf)?;
        Ok(self.f)
    }
}

/// One slot of the graph in plain form (for replay, snapshots and comparisons).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SlotState {
    pub label: u32,
    pub deleted: bool,
    pub vector: Vec<f32>,
    /// Links per level, 0 ..= the node's level.
    pub links: Vec<Vec<u32>>,
}

/// The whole graph in plain form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GraphState {
    pub params: FileParams,
    pub slots: Vec<Option<SlotState>>,
    /// Entry point slot and level.
    pub entry: Option<(u32, u8)>,
    /// A snapshot's rows while it is read, until their nodes come.
    pending: Vec<Vec<f32>>,
}

impl GraphState {
    pub fn new(params: FileParams) -> Self {
        GraphState {
            params,
            slots: Vec::new(),
            entry: None,
            pending: Vec::new(),
        }
    }

    /// Applies a logged change; `None` if it does not fit the state (a damaged log).
    pub fn apply(&mut self, op: Op) -> Option<()> {
        match op {
            Op::AddNode {
                slot,
                label,
                level,
                vector,
            } => {
                let s = slot as usize;
                if s > self.slots.len() + MAX_SLOT_JUMP {
                    return None;
                }
                if self.slots.len() <= s {
                    self.slots.resize(s + 1, None);
                }
                self.slots[s] = Some(SlotState {
                    label,
                    deleted: false,
                    vector,
                    links: vec![Vec::new(); level as usize + 1],
                });
            }
            Op::SetLinks { slot, level, links } => {
                let n = self.slots.get_mut(slot as usize)?.as_mut()?;
                *n.links.get_mut(level as usize)? = links;
            }
            Op::SetEntry { slot, level } => {
                self.entry = (slot != NO_ENTRY).then_some((slot, level));
            }
            Op::Tombstone { slot } => {
                self.slots.get_mut(slot as usize)?.as_mut()?.deleted = true;
            }
            Op::Remove { slot } => {
                *self.slots.get_mut(slot as usize)? = None;
            }
        }
        Some(())
    }
}

impl GraphState {
    /// What a loaded graph must satisfy before the index trusts it (searches read
    /// vectors by slot without bounds checks): every link and the entry point name
    /// a slot that exists, and levels and vectors have sane sizes. (Any prefix of
    /// a real log satisfies it: a node is logged before links or the entry name it.)
    /// A file can pass its checksums and still break this (a bug, or a file made
    /// by hand); it is then damaged, never a reason to read out of bounds.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.slots.len();
        if n > u32::MAX as usize {
            return Err(format!("{n} slots"));
        }
        if let Some((slot, level)) = self.entry {
            match self.slots.get(slot as usize) {
                Some(Some(s)) if (level as usize) < s.links.len() => {}
                Some(Some(_)) => return Err(format!("entry point {slot} above its level")),
                _ => return Err(format!("entry point {slot} names no node")),
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            if s.links.is_empty() || s.links.len() > 64 {
                return Err(format!("slot {i} has {} levels", s.links.len()));
            }
            if s.vector.len() != self.params.dim as usize {
                return Err(format!("slot {i} has a vector of the wrong dimension"));
            }
            if let Some(bad) = s.links.iter().flatten().find(|&&l| l as usize >= n) {
                return Err(format!("slot {i} links to slot {bad} of {n}"));
            }
        }
        Ok(())
    }
}

pub(crate) fn log_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("log-{gen:010}.hnsw"))
}
pub(crate) fn snapshot_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("snapshot-{gen:010}.hnsw"))
}

fn header(p: &FileParams, magic: &[u8; 8], version: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(LOG_HEADER_LEN);
    h.extend_from_slice(magic);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&p.dim.to_le_bytes());
    h.push(p.space as u8);
    h.extend_from_slice(&p.m.to_le_bytes());
    h.extend_from_slice(&p.ef_construction.to_le_bytes());
    h
}

/// The parameters and format version in a file's header; versions 1 to
/// `newest` are read.
fn parse_header(
    buf: &[u8],
    magic: &[u8; 8],
    newest: u32,
    path: &Path,
) -> Result<(FileParams, u32)> {
    let mut r = Cursor { b: buf, pos: 0 };
    let bad = || IndexError::corrupt(path, "bad or truncated header");
    if r.take::<8>().ok_or_else(bad)? != *magic {
        return Err(IndexError::corrupt(path, "bad magic"));
    }
    let v = r.u32().ok_or_else(bad)?;
    if !(1..=newest).contains(&v) {
        return Err(IndexError::corrupt(
            path,
            format!("format version {v} is not supported (this build reads 1 to {newest})"),
        ));
    }
    let params = FileParams {
        dim: r.u32().ok_or_else(bad)?,
        space: Space::from_u8(r.u8().ok_or_else(bad)?).ok_or_else(bad)?,
        m: r.u32().ok_or_else(bad)?,
        ef_construction: r.u32().ok_or_else(bad)?,
    };
    Ok((params, v))
}

/// The open commit log. Appends are buffered; `sync` makes them durable.
pub(crate) struct LogWriter {
    file: Arc<dyn WritableFile>,
    pub path: PathBuf,
    pub gen: u64,
    buf: Vec<u8>,
    /// Bytes already handed to the OS.
    written: u64,
    /// Set by the first failed write or fsync: what reached the file is then unknown
    /// (a retry could leave a torn record mid-log), so every later call fails.
    failed: Option<String>,
    /// Every op appended, for tests that replay prefixes against a model.
    #[cfg(test)]
    pub recorded: Vec<Op>,
}

impl LogWriter {
    fn new(file: Arc<dyn WritableFile>, path: PathBuf, gen: u64, written: u64) -> LogWriter {
        LogWriter {
            file,
            path,
            gen,
            buf: Vec::with_capacity(LOG_BUFFER + 4096),
            written,
            failed: None,
            #[cfg(test)]
            recorded: Vec::new(),
        }
    }

    pub fn create(fs: &dyn FileSystem, dir: &Path, gen: u64, p: &FileParams) -> Result<LogWriter> {
        let path = log_path(dir, gen);
        let file = fs
            .create(&path)
            .map_err(IndexError::io("create commit log", &path))?;
        file.append(&header(p, LOG_MAGIC, LOG_VERSION))
            .map_err(IndexError::io("write commit log", &path))?;
        file.sync()
            .map_err(IndexError::io("fsync commit log", &path))?;
        sync_dir(fs, dir)?;
        Ok(LogWriter::new(file, path, gen, LOG_HEADER_LEN as u64))
    }

    /// Opens an existing log for appending after its last whole record. A torn
    /// tail is cut off first, by rewriting the whole records under a temporary
    /// name and renaming it over the log.
    pub fn reopen(fs: &dyn FileSystem, path: &Path, gen: u64, valid_len: u64) -> Result<LogWriter> {
        let len = fs
            .open(path)
            .map_err(IndexError::io("open commit log", path))?
            .len();
        if len > valid_len {
            let bytes = fs
                .read_all(path)
                .map_err(IndexError::io("read commit log", path))?;
            let tmp = path.with_extension("tmp");
            let f = fs
                .create(&tmp)
                .map_err(IndexError::io("create commit log", &tmp))?;
            f.append(&bytes[..valid_len as usize])
                .and_then(|_| f.sync())
                .map_err(IndexError::io("write commit log", &tmp))?;
            drop(f);
            fs.rename(&tmp, path)
                .map_err(IndexError::io("replace torn commit log", path))?;
            sync_dir(fs, path.parent().unwrap_or(Path::new(".")))?;
        }
        let file = fs
            .open_append(path)
            .map_err(IndexError::io("open commit log", path))?;
        Ok(LogWriter::new(file, path.to_path_buf(), gen, valid_len))
    }

    /// Refuses every later change (the index is being replaced).
    pub fn close(&mut self) {
        self.failed
            .get_or_insert_with(|| "the index was closed".to_string());
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(IndexError::LogFailed(why.clone())),
            None => Ok(()),
        }
    }

    pub fn append(&mut self, op: &Op) -> Result<()> {
        self.check()?;
        op.encode(&mut self.buf);
        #[cfg(test)]
        self.recorded.push(op.clone());
        if self.buf.len() >= LOG_BUFFER {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        self.check()?;
        if !self.buf.is_empty() {
            if let Err(e) = self.file.append(&self.buf) {
                self.failed = Some(e.to_string());
                return Err(IndexError::io("write commit log", &self.path)(e));
            }
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// The log's length, buffered bytes included.
    pub fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    pub fn sync(&mut self) -> Result<()> {
        self.write_out()?;
        if let Err(e) = self.file.sync() {
            self.failed = Some(e.to_string());
            return Err(IndexError::io("fsync commit log", &self.path)(e));
        }
        // The commit log is read only when the index is loaded: let its synced
        // pages go instead of growing the page cache.
        self.file.drop_cache();
        Ok(())
    }
}

/// Reads a commit log record by record, a chunk of the file at a time: checks
/// its header with `check`, then hands each whole record to `apply`, and stops
/// at the first torn or damaged one. Returns the header, how many bytes are
/// whole records, and whether a torn record followed them.
pub(crate) fn replay_log(
    fs: &dyn FileSystem,
    path: &Path,
    check: impl FnOnce(&FileParams) -> Result<()>,
    mut apply: impl FnMut(Op) -> Result<()>,
) -> Result<(FileParams, u64, bool)> {
    let f = fs
        .open(path)
        .map_err(IndexError::io("open commit log", path))?;
    // Records carry their own checksums.
    let mut r = Chunked::new(&*f, f.len(), false);
    let io = IndexError::io("read commit log", path);
    let head = r
        .next(LOG_HEADER_LEN)
        .map_err(&io)?
        .ok_or_else(|| IndexError::corrupt(path, "bad or truncated header"))?;
    let (params, _) = parse_header(head, LOG_MAGIC, LOG_VERSION, path)?;
    check(&params)?;
    let dim = params.dim as usize;
    let mut valid = r.offset();
    loop {
        if r.remaining() == 0 {
            return Ok((params, valid, false));
        }
        let Some(h) = r.next(8).map_err(&io)? else {
            return Ok((params, valid, true));
        };
        let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(h[4..].try_into().unwrap());
        let Some(payload) = r.next(len).map_err(&io)? else {
            return Ok((params, valid, true));
        };
        if crc32c::crc32c(payload) != crc {
            return Ok((params, valid, true));
        }
        let Some(op) = Op::decode(payload, dim) else {
            return Ok((params, valid, true));
        };
        apply(op)?;
        valid = r.offset();
    }
}

/// Writes `state` as snapshot `gen`: temporary name, fsync, rename, fsync directory.
pub(crate) fn write_snapshot(
    fs: &dyn FileSystem,
    dir: &Path,
    gen: u64,
    state: &GraphState,
) -> Result<()> {
    // Trailing vacant slots are left out, so an index emptied by deletes and repair
    // gives its space back; later log records may name them again, and replay
    // extends the slot array as needed.
    let used = state
        .slots
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |i| i + 1);
    let zero = vec![0f32; state.params.dim as usize];
    write_snapshot_with(
        fs,
        dir,
        gen,
        &state.params,
        used,
        state.entry,
        |i, out| {
            let v = state.slots[i].as_ref().map_or(&zero, |s| &s.vector);
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        },
        |i, out| match &state.slots[i] {
            None => out.push(0),
            Some(s) => slot_meta(out, s.deleted, s.label, s.links.iter().map(|l| &l[..])),
        },
    )
}

/// One slot's part of the snapshot after the vectors: tag (1 live, 2 deleted),
/// label, top level, and per level its links.
pub(crate) fn slot_meta<'a>(
    out: &mut Vec<u8>,
    deleted: bool,
    label: u32,
    links: impl ExactSizeIterator<Item = &'a [u32]>,
) {
    out.push(if deleted { 2 } else { 1 });
    out.extend_from_slice(&label.to_le_bytes());
    out.push((links.len() - 1) as u8);
    for l in links {
        out.extend_from_slice(&(l.len() as u16).to_le_bytes());
        for x in l {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Writes snapshot `gen` of `slots` slots a slot at a time: `vector(i, out)`
/// appends slot i's row (`dim` little-endian f32, zeros if vacant),
/// `meta(i, out)` its links part (a 0 byte if vacant). Temporary name, fsync,
/// rename, fsync directory.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_snapshot_with(
    fs: &dyn FileSystem,
    dir: &Path,
    gen: u64,
    p: &FileParams,
    slots: usize,
    entry: Option<(u32, u8)>,
    mut vector: impl FnMut(usize, &mut Vec<u8>),
    mut meta: impl FnMut(usize, &mut Vec<u8>),
) -> Result<()> {
    let path = snapshot_path(dir, gen);
    let tmp = path.with_extension("tmp");
    let f = fs
        .create(&tmp)
        .map_err(IndexError::io("create snapshot", &tmp))?;
    let mut out = ChunkedWriter {
        f,
        buf: Vec::with_capacity(READ_CHUNK + 4096),
        crc: 0,
    };
    let write = IndexError::io("write snapshot", &tmp);
    let (es, el) = entry.unwrap_or((NO_ENTRY, 0));
    let mut row = header(p, SNAP_MAGIC, SNAP_VERSION);
    row.extend_from_slice(&(slots as u32).to_le_bytes());
    row.extend_from_slice(&es.to_le_bytes());
    row.push(el);
    row.resize(ROWS_OFFSET as usize, 0);
    out.put(&row).map_err(&write)?;
    for i in 0..slots {
        row.clear();
        vector(i, &mut row);
        debug_assert_eq!(row.len(), p.dim as usize * 4);
        out.put(&row).map_err(&write)?;
    }
    for i in 0..slots {
        row.clear();
        meta(i, &mut row);
        out.put(&row).map_err(&write)?;
    }
    let f = out.finish().map_err(&write)?;
    f.sync().map_err(IndexError::io("fsync snapshot", &tmp))?;
    f.drop_cache();
    drop(f);
    fs.rename(&tmp, &path)
        .map_err(IndexError::io("rename snapshot", &path))?;
    sync_dir(fs, dir)
}

/// What a load builds from the files: a plain [`GraphState`] (condensation,
/// tests), or the index's own arrays (opening an index: no second copy).
pub(crate) trait Sink {
    /// Before anything else: at most how many slots the logs to be replayed
    /// add beyond the snapshot (from their sizes), so the sink can size its
    /// arrays once instead of growing them as records come.
    fn expect_added(&mut self, _slots: usize) {}
    /// A snapshot's header and shape, before its rows: `n` slots and the entry
    /// point (its dimension and space already checked).
    fn start(&mut self, params: &FileParams, n: usize, entry: Option<(u32, u8)>);
    /// Offered before a snapshot's `n` rows when they lie page-aligned in
    /// `file` from `offset`, `dim` little-endian f32 each: the sink may map
    /// them rather than be handed them one by one. Returns the mapped bytes
    /// (the reader checks them against the checksum), or `None` to be handed
    /// the rows.
    fn map_rows(&mut self, _file: &dyn ReadableFile, _offset: u64, _n: usize) -> Option<&[u8]> {
        None
    }
    /// Slot `i`'s row of `dim` little-endian f32 (every slot, vacant ones too).
    fn vector(&mut self, i: usize, row: &[u8]);
    /// Slot `i`'s node, after every row; vacant slots are not named.
    fn node(&mut self, i: usize, deleted: bool, label: u32, links: Vec<Vec<u32>>);
    /// After the snapshot's last node.
    fn end(&mut self, n: usize);
    /// A logged change; `None` if it does not fit the graph (a damaged log).
    fn apply(&mut self, op: Op) -> Option<()>;
    /// Checks the whole graph once loaded (see [`GraphState::validate`]).
    fn validate(&self) -> std::result::Result<(), String>;
}

impl Sink for GraphState {
    fn start(&mut self, params: &FileParams, n: usize, entry: Option<(u32, u8)>) {
        self.params = *params;
        self.slots = Vec::with_capacity(n);
        self.entry = entry;
        self.pending = Vec::with_capacity(n);
    }
    fn vector(&mut self, _i: usize, row: &[u8]) {
        self.pending.push(
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        );
    }
    fn node(&mut self, i: usize, deleted: bool, label: u32, links: Vec<Vec<u32>>) {
        self.slots.resize(i, None);
        let vector = std::mem::take(&mut self.pending[i]);
        self.slots.push(Some(SlotState {
            label,
            deleted,
            vector,
            links,
        }));
    }
    fn end(&mut self, n: usize) {
        self.slots.resize(n, None);
        self.pending = Vec::new();
    }
    fn apply(&mut self, op: Op) -> Option<()> {
        GraphState::apply(self, op)
    }
    fn validate(&self) -> std::result::Result<(), String> {
        GraphState::validate(self)
    }
}

/// Reads a snapshot into `sink` a chunk at a time, checking its checksum at
/// the end (the sink is to be thrown away on an error).
pub(crate) fn read_snapshot_into(
    fs: &dyn FileSystem,
    path: &Path,
    check: impl FnOnce(&FileParams) -> Result<()>,
    sink: &mut impl Sink,
) -> Result<()> {
    let f = fs
        .open(path)
        .map_err(IndexError::io("open snapshot", path))?;
    let len = f.len();
    if len < LOG_HEADER_LEN as u64 + 4 {
        return Err(IndexError::corrupt(path, "truncated"));
    }
    let mut r = Chunked::new(&*f, len - 4, true);
    let io = IndexError::io("read snapshot", path);
    let malformed = || IndexError::corrupt(path, "malformed body");
    let head = r
        .next(LOG_HEADER_LEN)
        .map_err(&io)?
        .ok_or_else(|| IndexError::corrupt(path, "truncated"))?;
    let (params, version) = parse_header(head, SNAP_MAGIC, SNAP_VERSION, path)?;
    check(&params)?;
    let dim = params.dim as usize;
    let mut fixed = [0u8; 9];
    fixed.copy_from_slice(r.next(9).map_err(&io)?.ok_or_else(malformed)?);
    let n = u32::from_le_bytes(fixed[..4].try_into().unwrap()) as usize;
    let es = u32::from_le_bytes(fixed[4..8].try_into().unwrap());
    let el = fixed[8];
    if version >= 2 {
        let pad = ROWS_OFFSET as usize - SNAP_FIXED_LEN;
        let pad = r.next(pad).map_err(&io)?.ok_or_else(malformed)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(malformed());
        }
    }
    if (n as u64).saturating_mul(dim as u64 * 4) > r.remaining() {
        return Err(malformed());
    }
    sink.start(&params, n, (es != NO_ENTRY).then_some((es, el)));
    let mapped = match version >= 2 && n > 0 {
        true => sink.map_rows(&*f, r.offset(), n),
        false => None,
    };
    match mapped {
        Some(rows) => r.skip_read(rows),
        None => {
            for i in 0..n {
                let row = r.next(dim * 4).map_err(&io)?.ok_or_else(malformed)?;
                sink.vector(i, row);
            }
        }
    }
    for i in 0..n {
        let tag = r.next(1).map_err(&io)?.ok_or_else(malformed)?[0];
        if tag == 0 {
            continue;
        }
        let mut b = [0u8; 5];
        b.copy_from_slice(r.next(5).map_err(&io)?.ok_or_else(malformed)?);
        let label = u32::from_le_bytes(b[..4].try_into().unwrap());
        let level = b[4] as usize;
        let mut links = Vec::with_capacity(level + 1);
        for _ in 0..=level {
            let k = r.next(2).map_err(&io)?.ok_or_else(malformed)?;
            let k = u16::from_le_bytes(k.try_into().unwrap()) as usize;
            let l = r.next(k * 4).map_err(&io)?.ok_or_else(malformed)?;
            links.push(
                l.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<u32>>(),
            );
        }
        sink.node(i, tag == 2, label, links);
    }
    sink.end(n);
    if r.remaining() != 0 {
        return Err(malformed());
    }
    let mut crc = [0u8; 4];
    f.read_exact_at(&mut crc, len - 4).map_err(&io)?;
    if r.crc != Some(u32::from_le_bytes(crc)) {
        return Err(IndexError::corrupt(path, "checksum mismatch"));
    }
    Ok(())
}

pub(crate) fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(IndexError::io("fsync directory", dir))
}

/// Generations of the snapshot and log files in `dir`, sorted. Only lists: a
/// condensation may be writing its temporary snapshot meanwhile.
pub(crate) fn list_gens(fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<u64>, Vec<u64>)> {
    let mut snaps = Vec::new();
    let mut logs = Vec::new();
    for name in fs
        .list(dir)
        .map_err(IndexError::io("list index directory", dir))?
    {
        let Some(stem) = name.strip_suffix(".hnsw") else {
            continue;
        };
        if let Some(g) = stem.strip_prefix("snapshot-").and_then(|g| g.parse().ok()) {
            snaps.push(g);
        } else if let Some(g) = stem.strip_prefix("log-").and_then(|g| g.parse().ok()) {
            logs.push(g);
        }
    }
    snaps.sort_unstable();
    logs.sort_unstable();
    Ok((snaps, logs))
}

/// Removes what an interrupted condensation or torn-log rewrite left: temporary
/// files. Only [`load`] calls it, when nothing else uses the directory.
fn remove_temporaries(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    for name in fs
        .list(dir)
        .map_err(IndexError::io("list index directory", dir))?
    {
        if name.ends_with(".tmp") {
            let p = dir.join(&name);
            fs.remove(&p)
                .map_err(IndexError::io("remove temporary file", &p))?;
        }
    }
    Ok(())
}

/// Loads the newest snapshot and replays the logs after it.
/// Returns the state, the newest log's generation and its valid length (to append
/// after), or `None` for the log if there is none.
/// Loads the files in `dir` into `sink`: removes temporaries first, and
/// afterwards the files the newest snapshot supersedes.
pub(crate) fn load_into(
    fs: &dyn FileSystem,
    dir: &Path,
    params: FileParams,
    sink: &mut impl Sink,
) -> Result<Option<(u64, u64)>> {
    remove_temporaries(fs, dir)?;
    let tail = load_upto_into(fs, dir, params, u64::MAX, sink)?;
    let (snaps, logs) = list_gens(fs, dir)?;
    // Files older than the newest snapshot were condensed into it (a crash came
    // between the rename and their removal).
    if let Some(&base) = snaps.last() {
        remove_gens(fs, dir, &snaps, &logs, |g| g < base)?;
    }
    Ok(tail)
}

/// The state the files in `dir` describe, changing nothing (temporary files and
/// superseded generations are ignored rather than removed).
pub(crate) fn load_read_only(
    fs: &dyn FileSystem,
    dir: &Path,
    params: FileParams,
) -> Result<GraphState> {
    Ok(load_upto(fs, dir, params, u64::MAX)?.0)
}

fn remove_gens(
    fs: &dyn FileSystem,
    dir: &Path,
    snaps: &[u64],
    logs: &[u64],
    doomed: impl Fn(u64) -> bool,
) -> Result<()> {
    let logs = logs.iter().map(|&g| log_path(dir, g));
    let snaps = snaps.iter().map(|&g| snapshot_path(dir, g));
    let gen_of = |p: &Path| -> u64 {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        stem.rsplit('-')
            .next()
            .and_then(|g| g.parse().ok())
            .unwrap_or(u64::MAX)
    };
    for p in logs.chain(snaps).filter(|p| doomed(gen_of(p))) {
        fs.remove(&p)
            .map_err(IndexError::io("remove condensed file", &p))?;
    }
    Ok(())
}

/// The state after every log with generation ≤ `max_gen`: the newest snapshot at or
/// below it, plus the logs from its generation up to `max_gen`. A torn tail is
/// allowed only in the newest of those logs.
fn load_upto(
    fs: &dyn FileSystem,
    dir: &Path,
    params: FileParams,
    max_gen: u64,
) -> Result<(GraphState, Option<(u64, u64)>)> {
    let mut state = GraphState::new(params);
    let tail = load_upto_into(fs, dir, params, max_gen, &mut state)?;
    Ok((state, tail))
}

/// [`load_upto`] into any [`Sink`]; returns the newest log's generation and
/// length in whole records.
pub(crate) fn load_upto_into(
    fs: &dyn FileSystem,
    dir: &Path,
    params: FileParams,
    max_gen: u64,
    sink: &mut impl Sink,
) -> Result<Option<(u64, u64)>> {
    let (snaps, logs) = list_gens(fs, dir)?;
    let snapshot = snaps.iter().rev().find(|&&g| g <= max_gen).copied();
    let base = snapshot.unwrap_or(0);
    let live: Vec<u64> = logs
        .iter()
        .copied()
        .filter(|&g| g >= base && g <= max_gen)
        .collect();
    // A node's record holds its vector: a log adds at most its length over
    // that many slots.
    let log_bytes: u64 = live
        .iter()
        .filter_map(|&g| fs.open(&log_path(dir, g)).ok().map(|f| f.len()))
        .sum();
    sink.expect_added((log_bytes / (u64::from(params.dim) * 4 + 16)) as usize);
    if let Some(g) = snapshot {
        let path = snapshot_path(dir, g);
        read_snapshot_into(fs, &path, |p| check_params(p, &params, &path), sink)?;
    }
    let mut tail = None;
    for (i, &g) in live.iter().enumerate() {
        let path = log_path(dir, g);
        let (_, valid_len, torn) = replay_log(
            fs,
            &path,
            |p| check_params(p, &params, &path),
            |op| {
                sink.apply(op)
                    .ok_or_else(|| IndexError::corrupt(&path, "record does not fit the graph"))
            },
        )?;
        if torn && i + 1 < live.len() {
            return Err(IndexError::corrupt(
                &path,
                "damaged record in a closed commit log; later logs depend on it",
            ));
        }
        tail = Some((g, valid_len));
    }
    sink.validate()
        .map_err(|why| IndexError::corrupt(dir, format!("inconsistent graph: {why}")))?;
    Ok(tail)
}

fn check_params(on_disk: &FileParams, want: &FileParams, path: &Path) -> Result<()> {
    if on_disk.dim != want.dim || on_disk.space != want.space {
        return Err(IndexError::ParamsMismatch(format!(
            "{} holds dimension {} / {}, asked for {} / {}",
            path.display(),
            on_disk.dim,
            on_disk.space.name(),
            want.dim,
            want.space.name()
        )));
    }
    Ok(())
}

/// Condenses every snapshot and log up to generation `gen` into snapshot
/// `gen + 1`, then removes them. The caller has already closed log `gen` and opened
/// log `gen + 1`. `crash_after` stops part-way (for crash tests): 1 = after writing
/// a partial temporary file, 2 = after the rename, before removing the inputs.
pub(crate) fn condense(
    fs: &dyn FileSystem,
    dir: &Path,
    gen: u64,
    params: FileParams,
    crash_after: Option<u8>,
) -> Result<()> {
    let (state, _) = load_upto(fs, dir, params, gen)?;
    if crash_after == Some(1) {
        // Leave a half-written temporary file behind, as a crash would.
        let tmp = snapshot_path(dir, gen + 1).with_extension("tmp");
        fs.create(&tmp)
            .and_then(|f| f.append(b"IDGHNSWS partial"))
            .map_err(IndexError::io("write snapshot", dir))?;
        return Ok(());
    }
    write_snapshot(fs, dir, gen + 1, &state)?;
    if crash_after == Some(2) {
        return Ok(());
    }
    remove_upto(fs, dir, gen)
}

/// Removes the snapshots and logs a new snapshot `gen + 1` supersedes. The
/// removals need not be durable: a crash before they are leaves files that the
/// newest snapshot supersedes, and the next load removes them.
pub(crate) fn remove_upto(fs: &dyn FileSystem, dir: &Path, gen: u64) -> Result<()> {
    let (snaps, logs) = list_gens(fs, dir)?;
    remove_gens(fs, dir, &snaps, &logs, |g| g <= gen)
}
