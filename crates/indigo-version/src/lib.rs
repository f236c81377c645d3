//! Index versions in object storage (the distributed mode). A version is a sealed
//! segment (`Segment::seal`): its files are immutable, so each is uploaded once
//! under a unique key and every later version that still holds it names the same
//! object; a version uploads what changed, not the collection. A *version
//! manifest* (an immutable object too) lists the files with their sizes and
//! checksums, the log offset the version covers and the dimension. Committing a
//! version is the system database's compare-and-swap; until it succeeds the
//! objects belong to nobody, and a stale compactor's objects stay orphans for the
//! garbage collector.
//!
//! [`VersionFs`] reads a version through the file-system seam: small files are
//! fetched whole, large ones by ranged reads of fixed-size chunks (the store's
//! segments read their footer, index and only the blocks a query needs), both
//! through a bounded [`Cache`] on local disk, so `Segment::open_read_only` serves
//! a version straight from object storage and a warm one from local disk.

mod cache;
mod fork;
mod gc;
pub use cache::{Cache, CacheStats};
pub use fork::{fork_collection, ForkError, Forked};
pub use gc::{
    collect_garbage, drop_versions, referenced_keys, sweep, Collected, GarbageCollector, GcPolicy,
    ManifestCache, PassReport,
};

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indigo_fs::{FileSystem, ReadableFile, StdFs, WritableFile};
use indigo_object::{ObjectError, Objects, PutMode};
use parking_lot::Mutex;
use serde_json::{json, Value};

use indigo_segment::{decode_records, Env, Error, IndexConfig, Result, SealedFile, Segment};

const MAGIC: &[u8; 8] = b"IDGVERS\0";
const FORMAT: u32 = 1;
/// Files up to this size are fetched whole on first use; larger ones by range.
const WHOLE_FILE: u64 = 4 << 20;
/// Ranged reads fetch and cache this much around what is asked.
const CHUNK: u64 = 256 << 10;

/// One file of a version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionFile {
    /// Its path in the segment's directory (`store/0000000012.seg`).
    pub name: String,
    /// The object holding it.
    pub key: String,
    pub bytes: u64,
    pub crc32c: u32,
}

/// What a version is: its files and the log offset it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionManifest {
    pub collection: String,
    pub version: i64,
    /// Every log record up to here is in the version.
    pub log_offset: u64,
    pub dimension: Option<u32>,
    pub files: Vec<VersionFile>,
}

impl VersionManifest {
    pub fn encode(&self) -> Vec<u8> {
        let body = json!({
            "collection": self.collection,
            "version": self.version,
            "log_offset": self.log_offset,
            "dimension": self.dimension,
            "formats": {"store": 1, "hnsw": 1},
            "files": self.files.iter().map(|f| json!([f.name, f.key, f.bytes, f.crc32c])).collect::<Vec<_>>(),
        })
        .to_string();
        let mut out = Vec::with_capacity(body.len() + 20);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body.as_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> std::result::Result<VersionManifest, String> {
        if b.len() < 20 || &b[..8] != MAGIC {
            return Err("not a version manifest (bad magic or too short)".into());
        }
        let (head, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(head) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err("checksum mismatch".into());
        }
        let v = u32::from_le_bytes(b[8..12].try_into().unwrap());
        if v != FORMAT {
            return Err(format!(
                "format version {v} is not supported (this build reads {FORMAT})"
            ));
        }
        let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
        if 16 + len != head.len() {
            return Err("length does not match".into());
        }
        let v: Value = serde_json::from_slice(&head[16..]).map_err(|e| e.to_string())?;
        let files = v["files"]
            .as_array()
            .ok_or("no files")?
            .iter()
            .map(|f| {
                let a = f.as_array()?;
                let name = a.first()?.as_str()?.to_string();
                // A file's name is a relative path inside the segment: never
                // absolute, never leaving it.
                let ok = !name.is_empty()
                    && Path::new(&name)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                ok.then_some(())?;
                Some(VersionFile {
                    name,
                    key: a.get(1)?.as_str()?.to_string(),
                    bytes: a.get(2)?.as_u64()?,
                    crc32c: u32::try_from(a.get(3)?.as_u64()?).ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("bad file entry")?;
        Ok(VersionManifest {
            collection: v["collection"].as_str().ok_or("no collection")?.to_string(),
            version: v["version"].as_i64().ok_or("no version")?,
            log_offset: v["log_offset"].as_u64().ok_or("no log_offset")?,
            dimension: v["dimension"].as_u64().map(|d| d as u32),
            files,
        })
    }

    /// Reads the manifest stored under `key`.
    pub fn fetch(objects: &dyn Objects, key: &str) -> Result<VersionManifest> {
        let o = indigo_object::retry(5, || objects.get(key))
            .map_err(|e| Error::Io(format!("read version manifest {key}: {e}")))?;
        Self::decode(&o.data).map_err(|e| Error::Corrupt(format!("version manifest {key}: {e}")))
    }
}

/// Where a collection's objects live: `col/<collection>/`.
pub fn collection_prefix(collection: &str) -> String {
    format!("col/{collection}/")
}

fn unique() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// What [`publish`] uploaded.
#[derive(Debug, Clone)]
pub struct Published {
    pub manifest: VersionManifest,
    /// The version manifest's object key (what the system database records).
    pub key: String,
    /// Bytes uploaded for this version (new files and the manifest).
    pub bytes_uploaded: u64,
    pub files_uploaded: usize,
}

/// Uploads a sealed segment's `files` as version `version` of `collection`: files
/// that `base` already holds with the same name, size and checksum are named
/// again, not uploaded. Nothing is committed: the caller swaps the version into
/// the system database.
pub fn publish(
    objects: &dyn Objects,
    files: &[SealedFile],
    collection: &str,
    version: i64,
    log_offset: u64,
    dimension: Option<u32>,
    base: Option<&VersionManifest>,
) -> Result<Published> {
    let known: HashMap<&str, &VersionFile> = base
        .map(|b| b.files.iter().map(|f| (f.name.as_str(), f)).collect())
        .unwrap_or_default();
    let prefix = collection_prefix(collection);
    let mut out = Vec::with_capacity(files.len());
    let (mut bytes_uploaded, mut files_uploaded) = (0u64, 0usize);
    for SealedFile { name, file } in files {
        let mut data = vec![0u8; file.len() as usize];
        file.read_exact_at(&mut data, 0)
            .map_err(|e| Error::Io(format!("read {name}: {e}")))?;
        let crc = crc32c::crc32c(&data);
        if let Some(f) = known
            .get(name.as_str())
            .filter(|f| f.bytes == data.len() as u64 && f.crc32c == crc)
        {
            out.push((*f).clone());
            continue;
        }
        let key = format!("{prefix}f/{}", unique());
        indigo_object::retry(5, || match objects.put(&key, &data, PutMode::IfAbsent) {
            // A retry of a write whose answer was lost: the name is ours alone.
            Err(ObjectError::AlreadyExists(_)) => Ok(String::new()),
            r => r,
        })
        .map_err(|e| Error::Io(format!("upload {name}: {e}")))?;
        bytes_uploaded += data.len() as u64;
        files_uploaded += 1;
        out.push(VersionFile {
            name: name.clone(),
            key,
            bytes: data.len() as u64,
            crc32c: crc,
        });
    }
    let manifest = VersionManifest {
        collection: collection.to_string(),
        version,
        log_offset,
        dimension,
        files: out,
    };
    let key = format!("{prefix}v/{version:016x}-{}", unique());
    let body = manifest.encode();
    indigo_object::retry(5, || match objects.put(&key, &body, PutMode::IfAbsent) {
        Err(ObjectError::AlreadyExists(_)) => Ok(String::new()),
        r => r,
    })
    .map_err(|e| Error::Io(format!("upload version manifest {key}: {e}")))?;
    bytes_uploaded += body.len() as u64;
    Ok(Published {
        manifest,
        key,
        bytes_uploaded,
        files_uploaded,
    })
}

/// Opens a committed version for reading, straight from object storage through
/// a [`VersionFs`] caching in `cache`.
pub fn open_version(
    objects: Arc<dyn Objects>,
    manifest: &VersionManifest,
    cache: Arc<Cache>,
    config: IndexConfig,
    health: Arc<indigo_health::Health>,
) -> Result<Segment> {
    let root = Path::new("/version");
    let fs = Arc::new(VersionFs::new(objects, manifest, root, cache));
    let env = Env { fs, health };
    Segment::open_read_only(&env, root, config, manifest.dimension.map(|d| d as usize))
}

/// A read-only file system over one version's files: `root/<name>` is the file
/// `name` of the manifest. Small files are fetched whole, large ones by chunks on
/// demand, all through the node's [`Cache`] (named by object key: objects never
/// change, so a cached copy never goes stale).
pub struct VersionFs {
    objects: Arc<dyn Objects>,
    cache: Arc<Cache>,
    root: PathBuf,
    files: HashMap<PathBuf, VersionFile>,
}

impl VersionFs {
    pub fn new(
        objects: Arc<dyn Objects>,
        manifest: &VersionManifest,
        root: &Path,
        cache: Arc<Cache>,
    ) -> VersionFs {
        VersionFs {
            objects,
            cache,
            root: root.to_path_buf(),
            files: manifest
                .files
                .iter()
                .map(|f| (root.join(&f.name), f.clone()))
                .collect(),
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "an index version is immutable",
    )
}

fn object_error(e: ObjectError) -> io::Error {
    match e {
        ObjectError::NotFound(k) => io::Error::new(io::ErrorKind::NotFound, k),
        e => io::Error::other(e.to_string()),
    }
}

/// A large file read by ranges, chunk by chunk through the cache.
struct RemoteFile {
    objects: Arc<dyn Objects>,
    cache: Arc<Cache>,
    file: VersionFile,
}

impl RemoteFile {
    fn chunk_name(&self, i: u64) -> String {
        format!("{}@{i}", self.file.key)
    }

    /// Fetches chunks `first..=last` with one ranged read and caches each.
    fn fetch(&self, first: u64, last: u64) -> io::Result<Vec<Arc<dyn ReadableFile>>> {
        let start = first * CHUNK;
        let end = ((last + 1) * CHUNK).min(self.file.bytes);
        let data = indigo_object::retry(5, || self.objects.get_range(&self.file.key, start..end))
            .map_err(object_error)?;
        if data.len() as u64 != end - start {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: short ranged read", self.file.key),
            ));
        }
        data.chunks(CHUNK as usize)
            .zip(first..=last)
            .map(|(c, i)| self.cache.put(&self.chunk_name(i), c.to_vec()))
            .collect()
    }
}

impl ReadableFile for RemoteFile {
    /// Reads through the cache; the chunks it lacks are fetched with one ranged
    /// read per run of missing chunks (opening a version reads its index files
    /// whole: a few requests, not one per chunk).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.file.bytes)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if buf.is_empty() {
            return Ok(());
        }
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        let mut chunks: Vec<Option<Arc<dyn ReadableFile>>> = (first..=last)
            .map(|i| self.cache.get(&self.chunk_name(i)))
            .collect();
        let mut i = 0;
        while i < chunks.len() {
            if chunks[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j + 1 < chunks.len() && chunks[j + 1].is_none() {
                j += 1;
            }
            for (k, c) in self
                .fetch(first + i as u64, first + j as u64)?
                .into_iter()
                .enumerate()
            {
                chunks[i + k] = Some(c);
            }
            i = j + 1;
        }
        let mut at = offset;
        for (k, chunk) in chunks.into_iter().enumerate() {
            let chunk = chunk.expect("fetched above");
            let i = first + k as u64;
            let from = at - i * CHUNK;
            let n = ((end - at) as usize).min((chunk.len() - from) as usize);
            let dst = (at - offset) as usize;
            chunk.read_exact_at(&mut buf[dst..dst + n], from)?;
            at += n as u64;
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.file.bytes
    }
}

impl FileSystem for VersionFs {
    fn create(&self, _: &Path) -> io::Result<Arc<dyn WritableFile>> {
        Err(read_only())
    }
    fn open_append(&self, _: &Path) -> io::Result<Arc<dyn WritableFile>> {
        Err(read_only())
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>> {
        let f = self.files.get(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not in the version", path.display()),
            )
        })?;
        if f.bytes > WHOLE_FILE {
            return Ok(Arc::new(RemoteFile {
                objects: self.objects.clone(),
                cache: self.cache.clone(),
                file: f.clone(),
            }));
        }
        if let Some(file) = self.cache.get(&f.key).filter(|c| c.len() == f.bytes) {
            return Ok(file);
        }
        let data = fetch_verified(&*self.objects, f)?;
        self.cache.put(&f.key, data)
    }
    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        Err(read_only())
    }
    fn remove(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(dir).ok())
            .filter_map(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }
    fn remove_dir_all(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        path == self.root || self.files.keys().any(|p| p.starts_with(path))
    }
    fn is_dir(&self, path: &Path) -> bool {
        !self.files.contains_key(path) && self.exists(path)
    }
}

/// A version's file, whole, checked against the manifest's size and checksum.
fn fetch_verified(objects: &dyn Objects, f: &VersionFile) -> io::Result<Vec<u8>> {
    let data = indigo_object::retry(5, || objects.get(&f.key))
        .map_err(object_error)?
        .data;
    if data.len() as u64 != f.bytes || crc32c::crc32c(&data) != f.crc32c {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "object {} does not match the version manifest (size or checksum)",
                f.key
            ),
        ));
    }
    Ok(data)
}

/// What one compaction did.
#[derive(Debug, Clone, PartialEq)]
pub enum Compacted {
    /// Nothing new in the log since the current version.
    Unchanged,
    /// Version `version` (covering the log up to `log_offset`) is committed.
    Committed {
        version: i64,
        log_offset: u64,
        key: String,
        bytes_uploaded: u64,
        files_uploaded: usize,
    },
    /// Another compactor committed first: this one's objects are orphans (the
    /// garbage collector deletes them) and its working copy is discarded.
    Stale { tried: i64 },
}

/// The working copy of a collection on a compactor: a local segment at the
/// version it was built from.
struct Working {
    version: i64,
    manifest: Option<VersionManifest>,
    segment: Arc<Segment>,
}

/// Folds a collection's log into new index versions in object storage. Any
/// number of compactors may run; the system database's compare-and-swap lets
/// exactly one commit each version, whatever routing does. A compactor keeps a
/// working copy of each collection it compacts (local disk as a cache: it is
/// rebuilt from the committed version whenever it is behind).
pub struct VersionCompactor {
    objects: Arc<dyn Objects>,
    log: Arc<dyn indigo_log::Log>,
    sysdb: Arc<dyn indigo_sysdb::SysDb>,
    work_dir: PathBuf,
    health: Arc<indigo_health::Health>,
    working: Mutex<HashMap<String, Arc<Mutex<Option<Working>>>>>,
}

fn sysdb_err(e: indigo_sysdb::SysDbError) -> Error {
    Error::Io(format!("system database: {e}"))
}

fn log_id(id: &str) -> Result<indigo_log::CollectionId> {
    indigo_log::CollectionId::parse_uuid(id)
        .ok_or_else(|| Error::Corrupt(format!("{id:?} is not a collection id")))
}

impl VersionCompactor {
    pub fn new(
        objects: Arc<dyn Objects>,
        log: Arc<dyn indigo_log::Log>,
        sysdb: Arc<dyn indigo_sysdb::SysDb>,
        work_dir: &Path,
        health: Arc<indigo_health::Health>,
    ) -> VersionCompactor {
        VersionCompactor {
            objects,
            log,
            sysdb,
            work_dir: work_dir.to_path_buf(),
            health,
            working: Mutex::default(),
        }
    }

    /// Closes and removes the working copies of collections not in `keep` (deleted,
    /// or now another compactor's): a compactor's disk holds only what it builds.
    pub fn release_others(&self, keep: &std::collections::HashSet<String>) {
        let gone: Vec<(String, Arc<Mutex<Option<Working>>>)> = {
            let mut w = self.working.lock();
            let ids: Vec<String> = w.keys().filter(|k| !keep.contains(*k)).cloned().collect();
            ids.into_iter()
                .filter_map(|k| w.remove(&k).map(|s| (k, s)))
                .collect()
        };
        for (id, slot) in gone {
            if let Some(w) = slot.lock().take() {
                w.segment.close();
            }
            let dir = self.work_dir.join(&id);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.health.failed(
                        indigo_health::COMPACTOR,
                        &id,
                        &format!("remove the working copy {}: {e}", dir.display()),
                    );
                }
            }
        }
    }

    /// The current version of `collection`: its number and manifest.
    pub fn current(&self, collection: &str) -> Result<Option<(i64, VersionManifest)>> {
        match self
            .sysdb
            .latest_index_version(collection)
            .map_err(sysdb_err)?
        {
            None => Ok(None),
            Some(v) => {
                let key = v.location["key"].as_str().ok_or_else(|| {
                    Error::Corrupt(format!(
                        "index version {} of {collection} has no key",
                        v.version
                    ))
                })?;
                Ok(Some((
                    v.version,
                    VersionManifest::fetch(&*self.objects, key)?,
                )))
            }
        }
    }

    /// A working copy at the current version: the one kept if it is current,
    /// else a new one built from the version's objects.
    fn working_copy(
        &self,
        collection: &str,
        config: &IndexConfig,
        slot: &mut Option<Working>,
    ) -> Result<()> {
        let current = self.current(collection)?;
        let version = current.as_ref().map_or(0, |c| c.0);
        if slot.as_ref().is_some_and(|w| w.version == version) {
            return Ok(());
        }
        if let Some(w) = slot.take() {
            w.segment.close();
        }
        let dir = self.work_dir.join(collection);
        let io = |e: std::io::Error| Error::Io(format!("{}: {e}", dir.display()));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(&dir).map_err(io)?;
        let (durable, dim, manifest) = match current {
            None => (0, None, None),
            Some((_, m)) => {
                // Fetch every file of the version into the working directory,
                // each checked against the manifest.
                for f in &m.files {
                    let data = fetch_verified(&*self.objects, f).map_err(io)?;
                    let to = dir.join(&f.name);
                    std::fs::create_dir_all(to.parent().unwrap()).map_err(io)?;
                    std::fs::write(&to, data).map_err(io)?;
                }
                (m.log_offset, m.dimension, Some(m))
            }
        };
        let lid = log_id(collection)?;
        let recs = self
            .log
            .read(lid, indigo_log::LogOffset(durable), usize::MAX)?;
        let entries = decode_records(&recs)?;
        let env = Env {
            fs: Arc::new(StdFs),
            health: self.health.clone(),
        };
        let segment = Segment::open(
            &env,
            &dir,
            config.clone(),
            dim.map(|d| d as usize),
            durable,
            &entries,
        )?;
        *slot = Some(Working {
            version,
            manifest,
            segment: Arc::new(segment),
        });
        Ok(())
    }

    /// Folds what the log holds beyond the current version into a new version
    /// and tries to commit it.
    pub fn compact(&self, collection: &str, config: &IndexConfig) -> Result<Compacted> {
        let slot = self
            .working
            .lock()
            .entry(collection.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock();
        self.working_copy(collection, config, &mut slot)?;
        let w = slot.as_ref().expect("made above");
        let lid = log_id(collection)?;
        let head = self.log.head(lid).0;
        if head <= w.segment.applied() {
            return Ok(Compacted::Unchanged);
        }
        // Apply everything up to the head seen now, chunk by chunk.
        loop {
            let applied = w.segment.applied();
            if applied >= head {
                break;
            }
            let recs = self.log.read(lid, indigo_log::LogOffset(applied), 256)?;
            let entries: Vec<_> = decode_records(&recs)?
                .into_iter()
                .filter(|e| e.0 <= head)
                .collect();
            if entries.is_empty() {
                break;
            }
            w.segment.apply(&entries)?;
        }
        let applied = w.segment.applied();
        let latest = self
            .sysdb
            .latest_index_version(collection)
            .map_err(sysdb_err)?;
        let (from, ops) = latest.as_ref().map_or((0, 0), |v| (v.log_offset, v.ops()));
        let ops = ops + indigo_segment::count_ops(&*self.log, lid, from, applied)?;
        let files = w.segment.seal()?;
        let dim = w.segment.index()?.map(|i| i.dim() as u32);
        let version = w.version + 1;
        let published = publish(
            &*self.objects,
            &files,
            collection,
            version,
            applied,
            dim.or(w.manifest.as_ref().and_then(|m| m.dimension)),
            w.manifest.as_ref(),
        )?;
        let committed = self
            .sysdb
            .commit_index_version(
                &indigo_sysdb::IndexVersion {
                    collection: collection.to_string(),
                    version,
                    log_offset: applied,
                    location: json!({"key": published.key, "ops": ops}),
                    created_ms: 0,
                },
                w.version,
            )
            .map_err(sysdb_err)?;
        if !committed {
            // Someone else's version is current: ours is garbage, and so is the
            // working copy built on the version we started from.
            if let Some(w) = slot.take() {
                w.segment.close();
            }
            return Ok(Compacted::Stale { tried: version });
        }
        let out = Compacted::Committed {
            version,
            log_offset: applied,
            key: published.key.clone(),
            bytes_uploaded: published.bytes_uploaded,
            files_uploaded: published.files_uploaded,
        };
        let w = slot.as_mut().expect("kept");
        w.version = version;
        w.manifest = Some(published.manifest);
        // The log below the committed offset may go (after its grace period).
        self.log.truncate(lid, indigo_log::LogOffset(applied))?;
        Ok(out)
    }
}

/// Entry points for the fuzz targets (`fuzz/`).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    /// A version manifest decoded from untrusted bytes; what decodes re-encodes.
    pub fn manifest(bytes: &[u8]) {
        if let Ok(m) = super::VersionManifest::decode(bytes) {
            assert_eq!(super::VersionManifest::decode(&m.encode()).as_ref(), Ok(&m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indigo_object::{Counted, Remote};

    /// A large file is read by ranges: a whole read is one request, a warm read
    /// none, and a read over a partly evicted range fetches each missing run once.
    #[test]
    fn large_files_are_fetched_in_runs_of_missing_chunks() {
        let counted = Arc::new(Counted::new(Arc::new(Remote::memory())));
        let objects: Arc<dyn Objects> = counted.clone();
        let len = (WHOLE_FILE + 3 * CHUNK + 100) as usize;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        objects.put("big", &data, PutMode::Overwrite).unwrap();
        let manifest = VersionManifest {
            collection: "c".into(),
            version: 1,
            log_offset: 0,
            dimension: None,
            files: vec![VersionFile {
                name: "hnsw/big".into(),
                key: "big".into(),
                bytes: len as u64,
                crc32c: crc32c::crc32c(&data),
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 64 << 20).unwrap();
        let root = Path::new("/version");
        let vfs = VersionFs::new(objects.clone(), &manifest, root, cache.clone());
        let gets = || counted.stats.snapshot().gets;
        let g0 = gets();
        assert_eq!(vfs.read_all(&root.join("hnsw/big")).unwrap(), data);
        assert_eq!(gets() - g0, 1, "one ranged read for the whole file");
        let g1 = gets();
        let f = vfs.open(&root.join("hnsw/big")).unwrap();
        let mut buf = vec![0u8; 1000];
        f.read_exact_at(&mut buf, CHUNK - 500).unwrap();
        assert_eq!(buf, data[(CHUNK - 500) as usize..(CHUNK + 500) as usize]);
        assert_eq!(gets(), g1, "warm: no request");
        // Wipe the cache: a fresh one over the same directory is empty of these.
        let dir2 = tempfile::tempdir().unwrap();
        let cold = VersionFs::new(
            objects,
            &manifest,
            root,
            Cache::open(dir2.path(), 64 << 20).unwrap(),
        );
        let f = cold.open(&root.join("hnsw/big")).unwrap();
        f.read_exact_at(&mut buf, 2 * CHUNK + 7).unwrap();
        assert_eq!(
            buf,
            data[(2 * CHUNK + 7) as usize..(2 * CHUNK + 1007) as usize]
        );
        let g2 = gets();
        let mut all = vec![0u8; len];
        f.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, data);
        assert_eq!(gets() - g2, 2, "the runs before and after the cached chunk");
    }
}
