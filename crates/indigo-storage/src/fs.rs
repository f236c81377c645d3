//! The file-system seam. Every byte the store reads or writes goes through
//! [`FileSystem`], so tests can swap in [`FaultFs`], which models the page cache
//! (what survives a crash and what does not) and injects I/O failures.
//!
//! Contract (what the store relies on, and what [`FaultFs`] models):
//! - A file's bytes are durable only after [`WritableFile::sync`] returns `Ok`.
//! - A created, renamed or removed *name* is durable only after [`FileSystem::sync_dir`]
//!   on its parent returns `Ok`.
//! - `rename` atomically replaces the target name.
//! - After a crash, a file holds its last synced bytes plus possibly some prefix of what
//!   was appended after that (a torn tail), never bytes from elsewhere.

use std::collections::BTreeMap;
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
}

pub trait FileSystem: Send + Sync + 'static {
    /// Creates (or truncates) `path` for appending.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>>;
    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable (creations, renames, removals).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;

    /// Reads a whole file; a convenience over [`FileSystem::open`].
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path)?;
        let mut buf = vec![0u8; f.len() as usize];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
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
    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Arc::new(StdReadable { file, len }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
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
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
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
    fault: Option<Fault>,
    halted: bool,
    /// Mutating operations (writes and syncs) seen so far.
    ops: u64,
}

/// An in-memory file system that tracks durable versus cached state and injects faults.
#[derive(Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<FaultState>>,
}

fn halted_err() -> io::Error {
    io::Error::other("fault-fs: machine halted (simulated crash)")
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

    /// Disarms any fault and lets operations succeed again (the disk was freed).
    pub fn clear_fault(&self) {
        let mut s = self.state.lock();
        s.fault = None;
    }

    /// Number of writes and syncs performed so far.
    pub fn op_count(&self) -> u64 {
        self.state.lock().ops
    }

    /// Simulates power loss and reboot: names revert to their last synced directory
    /// state; each file keeps its synced bytes plus `torn(len_unsynced)` bytes of what
    /// followed (pass `|_| 0` to drop everything unsynced).
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
        s.live = s.durable.clone();
        s.fault = None;
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

    /// Counts an operation and decides whether a fault fires on it.
    fn check(&self, s: &mut FaultState, op: FaultOp) -> Option<FaultKind> {
        s.ops += 1;
        if s.halted {
            return Some(FaultKind::Crash);
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

    fn meta_op(&self) -> io::Result<()> {
        let s = self.state.lock();
        if s.halted {
            return Err(halted_err());
        }
        Ok(())
    }
}

struct FaultWritable {
    fs: FaultFs,
    ino: usize,
}

struct FaultReadable {
    data: Arc<Vec<u8>>,
}

impl WritableFile for FaultWritable {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        let mut s = self.fs.state.lock();
        match self.fs.check(&mut s, FaultOp::Write) {
            None => {
                s.inodes[self.ino].data.extend_from_slice(data);
                Ok(())
            }
            Some(FaultKind::NoSpace) => Err(io::Error::from_raw_os_error(28)),
            Some(FaultKind::Io) => Err(io::Error::from_raw_os_error(5)),
            Some(FaultKind::ShortWrite) => {
                s.inodes[self.ino]
                    .data
                    .extend_from_slice(&data[..data.len() / 2]);
                Err(io::Error::from_raw_os_error(5))
            }
            Some(FaultKind::Crash) => Err(halted_err()),
        }
    }
    fn sync(&self) -> io::Result<()> {
        let mut s = self.fs.state.lock();
        match self.fs.check(&mut s, FaultOp::Sync) {
            None => {
                let ino = &mut s.inodes[self.ino];
                ino.synced = ino.data.clone();
                Ok(())
            }
            Some(FaultKind::NoSpace) => Err(io::Error::from_raw_os_error(28)),
            Some(FaultKind::Io | FaultKind::ShortWrite) => Err(io::Error::from_raw_os_error(5)),
            Some(FaultKind::Crash) => Err(halted_err()),
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
        self.meta_op()?;
        let mut s = self.state.lock();
        let ino = s.inodes.len();
        s.inodes.push(Inode::default());
        s.live.insert(path.to_path_buf(), ino);
        Ok(Arc::new(FaultWritable {
            fs: self.clone(),
            ino,
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>> {
        let s = self.state.lock();
        let &ino = s.live.get(path).ok_or_else(|| not_found(path))?;
        // A snapshot is enough: the store opens only files it has finished writing.
        Ok(Arc::new(FaultReadable {
            data: Arc::new(s.inodes[ino].data.clone()),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.meta_op()?;
        let mut s = self.state.lock();
        let ino = s.live.remove(from).ok_or_else(|| not_found(from))?;
        s.live.insert(to.to_path_buf(), ino);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.meta_op()?;
        let mut s = self.state.lock();
        s.live.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        match self.check(&mut s, FaultOp::Sync) {
            None => {}
            Some(FaultKind::Crash) => return Err(halted_err()),
            Some(FaultKind::NoSpace) => return Err(io::Error::from_raw_os_error(28)),
            Some(_) => return Err(io::Error::from_raw_os_error(5)),
        }
        let live: Vec<(PathBuf, usize)> = s
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        s.durable.retain(|p, _| p.parent() != Some(dir));
        s.durable.extend(live);
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        self.state.lock().live.contains_key(path)
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
}
