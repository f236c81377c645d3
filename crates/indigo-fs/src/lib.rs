//! The file-system seam. Every byte Indigo's storage engine, log and index read or
//! write goes through [`FileSystem`], so tests can swap in [`FaultFs`], which models
//! the page cache (what survives a crash and what does not) and injects I/O failures.
//!
//! Contract (what callers rely on, and what [`FaultFs`] models):
//! - A file's bytes are durable only after [`WritableFile::sync`] returns `Ok`.
//! - A created, renamed or removed *name*, of a file or of a directory, is durable
//!   only after [`FileSystem::sync_dir`] on its parent returns `Ok`. A directory whose
//!   own name is not durable loses everything in it on a crash, so new directories
//!   are made with [`create_dir_durable`].
//! - `rename` atomically replaces the target name.
//! - After a crash, a file holds its last synced bytes plus possibly some prefix of what
//!   was appended after that (a torn tail), never bytes from elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// A file opened for appending. Appends are serialised by the caller.
pub trait WritableFile: Send + Sync {
    /// Appends all of `data` or fails; on failure a prefix may have been written.
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable.
    fn sync(&self) -> io::Result<()>;
    /// Tells the OS the file's cached pages will not be read soon (after a sync, so
    /// they are clean). A log written at hundreds of MB/s otherwise fills the page
    /// cache, and on virtual machines fresh cache pages slow writes to a third.
    fn drop_cache(&self) {}
}

/// A file opened for positional reads; shareable between threads.
pub trait ReadableFile: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The OS file descriptor, for a caller that maps the file into memory
    /// (an index maps its snapshot's vector rows at a restart). `None` where
    /// there is none, as under [`FaultFs`]: the caller reads instead.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

pub trait FileSystem: Send + Sync + 'static {
    /// Creates (or truncates) `path` for appending.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>>;
    /// Opens an existing file for appending after its last byte.
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>>;
    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the files and directories in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and its missing parents. The new names are not durable until
    /// their parents are synced: see [`create_dir_durable`].
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes `dir` and everything in it (durable once its parent is synced).
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable (creations, renames, removals).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file or directory of that name exists.
    fn exists(&self, path: &Path) -> bool;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;

    /// Makes `to` a second name of the file `from` (the caller syncs the
    /// directory). For files that never change again, this is a copy that costs
    /// nothing and whose space the file system frees only when both names are
    /// gone. The default copies the bytes (what a model file system does).
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let src = self.open(from)?;
        let dst = self.create(to)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < src.len() {
            let n = ((src.len() - at) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], at)?;
            dst.append(&buf[..n])?;
            at += n as u64;
        }
        dst.sync()
    }

    /// Reads a whole file; a convenience over [`FileSystem::open`].
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path)?;
        let mut buf = vec![0u8; f.len() as usize];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// Creates `dir` and any missing parents, and syncs the parent of each directory it
/// created, so a crash cannot lose the new directories (and the files later made
/// durable inside them).
pub fn create_dir_durable(fs: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.as_os_str().is_empty() || fs.exists(p) {
            break;
        }
        missing.push(p);
        d = p.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs.create_dir_all(dir)?;
    // Top-down, so each parent's entry is durable before its child's.
    for m in missing.iter().rev() {
        match m.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => fs.sync_dir(parent)?,
            _ => fs.sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// Copies the first `len` bytes of `from` (the whole file if `None`) to a new file
/// `to` and fsyncs it (the caller syncs the directory). Returns the bytes copied.
pub fn copy_file(fs: &dyn FileSystem, from: &Path, to: &Path, len: Option<u64>) -> io::Result<u64> {
    let src = fs.open(from)?;
    let len = len.unwrap_or(src.len()).min(src.len());
    let dst = fs.create(to)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], at)?;
        dst.append(&buf[..n])?;
        at += n as u64;
    }
    dst.sync()?;
    dst.drop_cache();
    Ok(len)
}

/// Writes a small file whole and durably: a temporary name, fsync, rename over
/// `path`, fsync of the directory.
pub fn write_atomic(fs: &dyn FileSystem, path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let f = fs.create(&tmp)?;
    f.append(data)?;
    f.sync()?;
    drop(f);
    fs.rename(&tmp, path)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    fs.sync_dir(parent.unwrap_or(Path::new(".")))
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

struct StdWritable(std::fs::File);
struct StdReadable {
    file: std::fs::File,
    len: u64,
}

impl WritableFile for StdWritable {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        (&self.0).write_all(data)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn drop_cache(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open for the life of `self`; the call only advises.
        unsafe {
            libc::posix_fadvise(self.0.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

impl ReadableFile for StdReadable {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.file.as_raw_fd())
    }
}

impl FileSystem for StdFs {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(StdWritable(f)))
    }
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Arc::new(StdWritable(f)))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Arc::new(StdReadable { file, len }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
}

/// Which operation a fault targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Write,
    Sync,
}

/// What happens when the fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with ENOSPC; for a write, nothing is written.
    NoSpace,
    /// The operation fails with EIO.
    Io,
    /// A write stores only half of its bytes, then fails with EIO.
    ShortWrite,
    /// The machine stops: this and every later operation fails, and nothing more
    /// reaches the (modelled) disk. Call [`FaultFs::crash`] to reboot.
    Crash,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: Option<FaultOp>,
    /// Fires on the operation that brings the counter to zero.
    countdown: u64,
    kind: FaultKind,
}

/// A fault that fires on every matching operation on matching paths until cleared
/// (a full or failing disk under one directory).
#[derive(Clone)]
struct Sticky {
    matches: Arc<dyn Fn(&Path) -> bool + Send + Sync>,
    op: Option<FaultOp>,
    kind: FaultKind,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Default)]
struct FaultState {
    inodes: Vec<Inode>,
    live: BTreeMap<PathBuf, usize>,
    durable: BTreeMap<PathBuf, usize>,
    /// Directories made by `create_dir_all`, and those whose names are durable.
    /// Directories never made here (a test's root) count as existing and durable.
    dirs_live: BTreeSet<PathBuf>,
    dirs_durable: BTreeSet<PathBuf>,
    fault: Option<Fault>,
    sticky: Option<Sticky>,
    halted: bool,
    /// Mutating operations (writes and syncs) seen so far.
    ops: u64,
}

impl FaultState {
    /// Whether a file at `path` survives a crash given the durable directories:
    /// every directory above it that was made here must be durable.
    fn dirs_survive(&self, path: &Path) -> bool {
        path.ancestors()
            .skip(1)
            .all(|a| !self.dirs_live.contains(a) || self.dirs_durable.contains(a))
    }
}

/// An in-memory file system that tracks durable versus cached state and injects faults.
#[derive(Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<FaultState>>,
}

fn halted_err() -> io::Error {
    io::Error::other("fault-fs: machine halted (simulated crash)")
}

fn fault_err(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::NoSpace => io::Error::from_raw_os_error(28),
        FaultKind::Crash => halted_err(),
        FaultKind::Io | FaultKind::ShortWrite => io::Error::from_raw_os_error(5),
    }
}

impl FaultFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms a fault for the `n`-th next matching operation (1 = the very next one).
    /// `op = None` counts writes and syncs alike.
    pub fn fail_after(&self, op: Option<FaultOp>, n: u64, kind: FaultKind) {
        assert!(n >= 1);
        self.state.lock().fault = Some(Fault {
            op,
            countdown: n,
            kind,
        });
    }

    /// Makes every matching operation on files under `dir` (writes and syncs of
    /// files created there, directory syncs, creations, renames and removals there)
    /// fail with `kind` until [`FaultFs::clear_fault`]. `Crash` is not allowed here.
    pub fn fail_under(&self, dir: &Path, op: Option<FaultOp>, kind: FaultKind) {
        let dir = dir.to_path_buf();
        self.fail_where(move |p| p.starts_with(&dir), op, kind);
    }

    /// Like [`FaultFs::fail_under`], for the paths `matches` accepts.
    pub fn fail_where(
        &self,
        matches: impl Fn(&Path) -> bool + Send + Sync + 'static,
        op: Option<FaultOp>,
        kind: FaultKind,
    ) {
        assert_ne!(kind, FaultKind::Crash, "use fail_after for crashes");
        self.state.lock().sticky = Some(Sticky {
            matches: Arc::new(matches),
            op,
            kind,
        });
    }

    /// Disarms any fault and lets operations succeed again (the disk was freed).
    pub fn clear_fault(&self) {
        let mut s = self.state.lock();
        s.fault = None;
        s.sticky = None;
    }

    /// Number of writes and syncs performed so far.
    pub fn op_count(&self) -> u64 {
        self.state.lock().ops
    }

    /// Simulates power loss and reboot: names revert to their last synced directory
    /// state (a directory whose own name was never synced into its parent is lost
    /// with everything in it); each file keeps its synced bytes plus
    /// `torn(len_unsynced)` bytes of what followed (pass `|_| 0` to drop everything
    /// unsynced).
    pub fn crash(&self, mut torn: impl FnMut(usize) -> usize) {
        let mut s = self.state.lock();
        for ino in s.inodes.iter_mut() {
            let keep_extra =
                if ino.data.len() > ino.synced.len() && ino.data.starts_with(&ino.synced) {
                    torn(ino.data.len() - ino.synced.len()).min(ino.data.len() - ino.synced.len())
                } else {
                    0
                };
            let keep = ino.synced.len() + keep_extra;
            let mut data = ino.synced.clone();
            data.extend_from_slice(&ino.data[ino.synced.len()..keep]);
            ino.data = data;
            ino.synced = ino.data.clone();
        }
        let durable_dirs: BTreeSet<PathBuf> = s
            .dirs_durable
            .iter()
            .filter(|d| s.dirs_survive(d))
            .cloned()
            .collect();
        let files: BTreeMap<PathBuf, usize> = s
            .durable
            .iter()
            .filter(|(p, _)| s.dirs_survive(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        s.dirs_durable = durable_dirs.clone();
        s.dirs_live = durable_dirs;
        s.durable = files.clone();
        s.live = files;
        s.fault = None;
        s.sticky = None;
        s.halted = false;
    }

    /// Total bytes of all live files (for space-accounting tests).
    pub fn total_bytes(&self) -> u64 {
        let s = self.state.lock();
        s.live
            .values()
            .map(|&i| s.inodes[i].data.len() as u64)
            .sum()
    }

    /// Paths of every live file (for tests that look at what is left).
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().live.keys().cloned().collect()
    }

    /// Counts an operation and decides whether a fault fires on it.
    fn check(&self, s: &mut FaultState, op: FaultOp, path: &Path) -> Option<FaultKind> {
        s.ops += 1;
        if s.halted {
            return Some(FaultKind::Crash);
        }
        if let Some(st) = &s.sticky {
            if (st.matches)(path) && st.op.is_none_or(|o| o == op) {
                return Some(st.kind);
            }
        }
        let f = s.fault.as_mut()?;
        if f.op.is_some() && f.op != Some(op) {
            return None;
        }
        f.countdown -= 1;
        if f.countdown > 0 {
            return None;
        }
        let kind = f.kind;
        if kind == FaultKind::Crash {
            s.halted = true;
        }
        s.fault = None;
        Some(kind)
    }

    /// Creations, renames and removals: refused after a crash, and by a sticky
    /// fault on their directory.
    fn meta_op(&self, s: &FaultState, path: &Path) -> io::Result<()> {
        if s.halted {
            return Err(halted_err());
        }
        if let Some(st) = &s.sticky {
            if (st.matches)(path) && st.op.is_none_or(|o| o == FaultOp::Write) {
                return Err(fault_err(st.kind));
            }
        }
        Ok(())
    }
}

struct FaultWritable {
    fs: FaultFs,
    ino: usize,
    path: PathBuf,
}

struct FaultReadable {
    data: Arc<Vec<u8>>,
}

impl WritableFile for FaultWritable {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        let mut s = self.fs.state.lock();
        match self.fs.check(&mut s, FaultOp::Write, &self.path) {
            None => {
                s.inodes[self.ino].data.extend_from_slice(data);
                Ok(())
            }
            Some(FaultKind::ShortWrite) => {
                s.inodes[self.ino]
                    .data
                    .extend_from_slice(&data[..data.len() / 2]);
                Err(io::Error::from_raw_os_error(5))
            }
            Some(k) => Err(fault_err(k)),
        }
    }
    fn sync(&self) -> io::Result<()> {
        let mut s = self.fs.state.lock();
        match self.fs.check(&mut s, FaultOp::Sync, &self.path) {
            None => {
                let ino = &mut s.inodes[self.ino];
                ino.synced = ino.data.clone();
                Ok(())
            }
            Some(k) => Err(fault_err(k)),
        }
    }
}

impl ReadableFile for FaultReadable {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = offset as usize;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&self.data[start..end]);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", path.display()),
    )
}

impl FileSystem for FaultFs {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let mut s = self.state.lock();
        self.meta_op(&s, path)?;
        let ino = s.inodes.len();
        s.inodes.push(Inode::default());
        s.live.insert(path.to_path_buf(), ino);
        Ok(Arc::new(FaultWritable {
            fs: self.clone(),
            ino,
            path: path.to_path_buf(),
        }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let s = self.state.lock();
        if s.halted {
            return Err(halted_err());
        }
        let &ino = s.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(FaultWritable {
            fs: self.clone(),
            ino,
            path: path.to_path_buf(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>> {
        let s = self.state.lock();
        let &ino = s.live.get(path).ok_or_else(|| not_found(path))?;
        // A snapshot is enough: callers open only files they have finished writing,
        // or reopen one to read what was appended since.
        Ok(Arc::new(FaultReadable {
            data: Arc::new(s.inodes[ino].data.clone()),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        self.meta_op(&s, to)?;
        if s.dirs_live.contains(from) {
            // A directory moves with everything in it.
            let moved = |p: &Path| to.join(p.strip_prefix(from).unwrap());
            let files: Vec<(PathBuf, usize)> = s
                .live
                .iter()
                .filter(|(p, _)| p.starts_with(from))
                .map(|(p, &i)| (moved(p), i))
                .collect();
            s.live.retain(|p, _| !p.starts_with(from));
            s.live.extend(files);
            let dirs: Vec<PathBuf> = s
                .dirs_live
                .iter()
                .filter(|d| d.starts_with(from))
                .map(|d| moved(d))
                .collect();
            s.dirs_live.retain(|d| !d.starts_with(from));
            s.dirs_live.extend(dirs);
            // Simplification: a directory's move is durable at once (the model
            // tracks durable names per file, and files keep theirs when their
            // directory moves).
            let files: Vec<(PathBuf, usize)> = s
                .durable
                .iter()
                .filter(|(p, _)| p.starts_with(from))
                .map(|(p, &i)| (moved(p), i))
                .collect();
            s.durable.retain(|p, _| !p.starts_with(from));
            s.durable.extend(files);
            let dirs: Vec<PathBuf> = s
                .dirs_durable
                .iter()
                .filter(|d| d.starts_with(from))
                .map(|d| moved(d))
                .collect();
            s.dirs_durable.retain(|d| !d.starts_with(from));
            s.dirs_durable.extend(dirs);
            return Ok(());
        }
        let ino = s.live.remove(from).ok_or_else(|| not_found(from))?;
        s.live.insert(to.to_path_buf(), ino);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        self.meta_op(&s, path)?;
        s.live.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        let mut names: Vec<String> = s
            .live
            .keys()
            .chain(s.dirs_live.iter())
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        self.meta_op(&s, dir)?;
        for a in dir.ancestors() {
            if a.parent().is_none() || a.as_os_str().is_empty() {
                break;
            }
            s.dirs_live.insert(a.to_path_buf());
        }
        Ok(())
    }
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        self.meta_op(&s, dir)?;
        if !s.dirs_live.contains(dir) && !s.live.keys().any(|p| p.starts_with(dir)) {
            return Err(not_found(dir));
        }
        s.live.retain(|p, _| !p.starts_with(dir));
        s.dirs_live.retain(|p| !p.starts_with(dir));
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if let Some(k) = self.check(&mut s, FaultOp::Sync, dir) {
            return Err(fault_err(k));
        }
        // The directory's entries become what is live now; an entry removed with
        // its directory is gone once this (its parent) is synced.
        let child = |p: &Path| p.parent() == Some(dir);
        let gone_dirs: Vec<PathBuf> = s
            .dirs_durable
            .iter()
            .filter(|d| child(d) && !s.dirs_live.contains(*d))
            .cloned()
            .collect();
        for g in gone_dirs {
            s.dirs_durable.retain(|d| !d.starts_with(&g));
            s.durable.retain(|p, _| !p.starts_with(&g));
        }
        let live_dirs: Vec<PathBuf> = s.dirs_live.iter().filter(|d| child(d)).cloned().collect();
        s.dirs_durable.extend(live_dirs);
        let live: Vec<(PathBuf, usize)> = s
            .live
            .iter()
            .filter(|(p, _)| child(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        s.durable.retain(|p, _| !child(p));
        s.durable.extend(live);
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.live.contains_key(path) || s.dirs_live.contains(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.dirs_live.contains(path)
            || (!s.live.contains_key(path) && s.live.keys().any(|p| p.starts_with(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes_and_names() {
        let fs = FaultFs::new();
        let dir = Path::new("/d");
        let f = fs.create(&dir.join("a")).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        fs.sync_dir(dir).unwrap();
        f.append(b" world").unwrap();
        let g = fs.create(&dir.join("b")).unwrap();
        g.append(b"x").unwrap();
        g.sync().unwrap();
        fs.crash(|_| 0);
        assert_eq!(fs.read_all(&dir.join("a")).unwrap(), b"hello");
        assert!(!fs.exists(&dir.join("b")), "name b was never made durable");
    }

    #[test]
    fn torn_crash_keeps_a_prefix() {
        let fs = FaultFs::new();
        let dir = Path::new("/d");
        let f = fs.create(&dir.join("a")).unwrap();
        fs.sync_dir(dir).unwrap();
        f.append(b"0123456789").unwrap();
        fs.crash(|n| n / 2);
        assert_eq!(fs.read_all(&dir.join("a")).unwrap(), b"01234");
    }

    #[test]
    fn faults_fire_on_the_counted_operation() {
        let fs = FaultFs::new();
        let f = fs.create(Path::new("/d/a")).unwrap();
        fs.fail_after(Some(FaultOp::Sync), 2, FaultKind::Io);
        f.append(b"a").unwrap();
        f.sync().unwrap();
        f.append(b"b").unwrap();
        let e = f.sync().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5));
        f.sync().unwrap();
        fs.fail_after(Some(FaultOp::Write), 1, FaultKind::ShortWrite);
        assert!(f.append(b"cdef").is_err());
        assert_eq!(fs.read_all(Path::new("/d/a")).unwrap(), b"abcd");
        fs.fail_after(None, 1, FaultKind::Crash);
        assert!(f.append(b"x").is_err());
        assert!(f.sync().is_err());
        assert!(fs.rename(Path::new("/d/a"), Path::new("/d/b")).is_err());
    }

    #[test]
    fn a_directory_not_synced_into_its_parent_is_lost_with_its_files() {
        let fs = FaultFs::new();
        // (Apart: syncing a directory makes every name in it durable.)
        for (dir, durable) in [(Path::new("/p/plain"), false), (Path::new("/r/x/y"), true)] {
            if durable {
                create_dir_durable(&fs, dir).unwrap();
            } else {
                fs.create_dir_all(dir).unwrap();
            }
            let f = fs.create(&dir.join("f")).unwrap();
            f.append(b"data").unwrap();
            f.sync().unwrap();
            fs.sync_dir(dir).unwrap();
        }
        assert_eq!(fs.list(Path::new("/p")).unwrap(), vec!["plain"]);
        fs.crash(|_| 0);
        assert!(
            !fs.exists(Path::new("/p/plain/f")),
            "its directory was never synced"
        );
        assert!(!fs.exists(Path::new("/p/plain")));
        assert_eq!(fs.read_all(Path::new("/r/x/y/f")).unwrap(), b"data");
        // Removing a directory is durable once its parent is synced.
        fs.remove_dir_all(Path::new("/r/x/y")).unwrap();
        fs.crash(|_| 0);
        assert!(fs.exists(Path::new("/r/x/y/f")), "removal not yet durable");
        fs.remove_dir_all(Path::new("/r/x/y")).unwrap();
        fs.sync_dir(Path::new("/r/x")).unwrap();
        fs.crash(|_| 0);
        assert!(!fs.exists(Path::new("/r/x/y/f")));
    }

    #[test]
    fn sticky_faults_fail_everything_under_a_directory_until_cleared() {
        let fs = FaultFs::new();
        let a = fs.create(Path::new("/full/a")).unwrap();
        let b = fs.create(Path::new("/ok/b")).unwrap();
        fs.fail_under(Path::new("/full"), None, FaultKind::NoSpace);
        assert_eq!(a.append(b"x").unwrap_err().raw_os_error(), Some(28));
        assert!(fs.create(Path::new("/full/c")).is_err());
        b.append(b"x").unwrap();
        fs.clear_fault();
        a.append(b"x").unwrap();
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let fs = FaultFs::new();
        create_dir_durable(&fs, Path::new("/m")).unwrap();
        write_atomic(&fs, Path::new("/m/f"), b"one").unwrap();
        write_atomic(&fs, Path::new("/m/f"), b"two").unwrap();
        fs.crash(|_| 0);
        assert_eq!(fs.read_all(Path::new("/m/f")).unwrap(), b"two");
        assert_eq!(fs.list(Path::new("/m")).unwrap(), vec!["f"]);
    }
}
