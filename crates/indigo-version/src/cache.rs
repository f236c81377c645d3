//! A query node's bounded cache of immutable objects on local disk. Objects never
//! change once written, so an entry is never stale and needs no invalidation; the
//! cache only has to stay within its byte budget, least recently used first out,
//! deleting the file of each entry it evicts. A reader that holds an evicted file
//! open keeps reading it (the name goes, the open file stays until closed).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indigo_fs::{FileSystem, ReadableFile, StdFs};
use parking_lot::Mutex;

/// What the cache has done since it opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Bytes put into the cache (what was fetched from object storage).
    pub bytes_in: u64,
    pub evictions: u64,
    /// Bytes the cache holds now, and at most.
    pub bytes: u64,
    pub budget: u64,
}

#[derive(Default)]
struct State {
    /// Entry name → (bytes, last use).
    entries: HashMap<String, (u64, u64)>,
    /// Last use → entry name: the eviction order.
    by_use: BTreeMap<u64, String>,
    bytes: u64,
    clock: u64,
}

impl State {
    fn touch(&mut self, name: &str) -> bool {
        self.clock += 1;
        let now = self.clock;
        match self.entries.get_mut(name) {
            Some((_, used)) => {
                self.by_use.remove(used);
                *used = now;
                self.by_use.insert(now, name.to_string());
                true
            }
            None => false,
        }
    }

    /// Adds (or replaces) an entry as the most recently used.
    fn insert(&mut self, name: String, bytes: u64) {
        self.forget(&name);
        self.clock += 1;
        let now = self.clock;
        self.entries.insert(name.clone(), (bytes, now));
        self.by_use.insert(now, name);
        self.bytes += bytes;
    }

    fn forget(&mut self, name: &str) -> Option<u64> {
        let (bytes, used) = self.entries.remove(name)?;
        self.by_use.remove(&used);
        self.bytes -= bytes;
        Some(bytes)
    }
}

/// See the module documentation. Entry names are the caller's (an object key and
/// a chunk number, say); a name maps to one file in the cache directory.
pub struct Cache {
    dir: PathBuf,
    budget: u64,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    bytes_in: AtomicU64,
    evictions: AtomicU64,
}

fn file_name(name: &str) -> String {
    // Object keys hold '/': flatten them, and escape '%' so the mapping is one-to-one.
    name.replace('%', "%25").replace('/', "%2F")
}

impl Cache {
    /// Opens the cache in `dir` (created if missing) with a budget of `budget`
    /// bytes. Files left by an earlier run are kept as entries, oldest first out,
    /// and trimmed to the budget; half-written ones are removed.
    pub fn open(dir: &Path, budget: u64) -> io::Result<Arc<Cache>> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".part") {
                std::fs::remove_file(e.path())?;
                continue;
            }
            let md = e.metadata()?;
            if !md.is_file() {
                continue;
            }
            let used = md.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((used, name, md.len()));
        }
        found.sort();
        let cache = Cache {
            dir: dir.to_path_buf(),
            budget,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        };
        {
            let mut s = cache.state.lock();
            for (_, fname, bytes) in found {
                s.insert(fname, bytes);
            }
            cache.evict(&mut s);
        }
        Ok(Arc::new(cache))
    }

    fn path(&self, fname: &str) -> PathBuf {
        self.dir.join(fname)
    }

    /// The cached entry `name`, opened, if the cache holds it.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ReadableFile>> {
        let fname = file_name(name);
        let present = self.state.lock().touch(&fname);
        if present {
            match StdFs.open(&self.path(&fname)) {
                Ok(f) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(f);
                }
                // Removed behind our back (by hand, or a full disk cleaner): forget it.
                Err(_) => {
                    self.state.lock().forget(&fname);
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Stores `data` as entry `name` and returns it opened. Data larger than the
    /// whole budget is not stored; the caller gets it back from memory.
    pub fn put(&self, name: &str, data: Vec<u8>) -> io::Result<Arc<dyn ReadableFile>> {
        let bytes = data.len() as u64;
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        if bytes > self.budget {
            return Ok(Arc::new(MemFile(data)));
        }
        let fname = file_name(name);
        let path = self.path(&fname);
        // Written under a temporary name, then renamed: a crash leaves no half
        // entry under the real name (open removes the leftovers).
        let tmp = self
            .dir
            .join(format!("{fname}.{:x}.part", rand::random::<u64>()));
        std::fs::write(&tmp, &data).and_then(|_| std::fs::rename(&tmp, &path))?;
        let file = StdFs.open(&path)?;
        let mut s = self.state.lock();
        s.insert(fname, bytes);
        self.evict(&mut s);
        Ok(file)
    }

    fn evict(&self, s: &mut State) {
        while s.bytes > self.budget {
            let Some((_, fname)) = s.by_use.pop_first() else {
                break;
            };
            if let Some((bytes, _)) = s.entries.remove(&fname) {
                s.bytes -= bytes;
            }
            self.evictions.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = std::fs::remove_file(self.path(&fname)) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cache: cannot remove {fname}: {e}");
                }
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.state.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: s.bytes,
            budget: self.budget,
        }
    }
}

/// An entry too large for the cache, served from memory.
struct MemFile(Vec<u8>);

impl ReadableFile for MemFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = offset as usize;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.0.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&self.0[start..end]);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(f: &Arc<dyn ReadableFile>) -> Vec<u8> {
        let mut b = vec![0; f.len() as usize];
        f.read_exact_at(&mut b, 0).unwrap();
        b
    }

    #[test]
    fn least_recently_used_goes_first_and_its_file_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 300).unwrap();
        c.put("a/1", vec![1; 100]).unwrap();
        c.put("a/2", vec![2; 100]).unwrap();
        c.put("a/3", vec![3; 100]).unwrap();
        assert!(c.get("a/1").is_some(), "a/1 is now the most recent");
        let held = c.get("a/2").unwrap();
        c.get("a/3").unwrap();
        c.put("b", vec![4; 150]).unwrap();
        // 450 bytes over a budget of 300: a/1 (least recent) and a/2 go.
        assert!(c.get("a/1").is_none());
        assert!(c.get("a/2").is_none());
        assert_eq!(read(&c.get("a/3").unwrap()), vec![3; 100]);
        assert_eq!(read(&held), vec![2; 100], "an open entry stays readable");
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "evicted entries' files are deleted");
        let s = c.stats();
        assert_eq!((s.bytes, s.evictions), (250, 2));
        assert!(s.bytes <= s.budget);
    }

    #[test]
    fn a_reopened_cache_keeps_its_entries_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Cache::open(dir.path(), 1000).unwrap();
            for i in 0..5 {
                c.put(&format!("k{i}"), vec![i as u8; 200]).unwrap();
            }
        }
        std::fs::write(dir.path().join("half.part"), b"x").unwrap();
        let c = Cache::open(dir.path(), 500).unwrap();
        assert_eq!(c.stats().bytes, 400, "trimmed to the new budget");
        assert!(!dir.path().join("half.part").exists());
        let kept = (0..5).filter(|i| c.get(&format!("k{i}")).is_some()).count();
        assert_eq!(kept, 2);
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_served_but_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 10).unwrap();
        let f = c.put("big", vec![7; 100]).unwrap();
        assert_eq!(read(&f), vec![7; 100]);
        assert!(c.get("big").is_none());
        assert_eq!(c.stats().bytes, 0);
    }
}
