//! Online backups and their restore. A backup is a directory laid out like a data
//! directory, plus a `BACKUP` manifest (every file with its size and checksum),
//! taken while the database keeps serving:
//!
//! 1. log truncation is held, so no record the copy needs can go;
//! 2. the catalogue is copied in one SQLite read transaction (`VACUUM INTO`);
//! 3. each collection it names is copied at one moment (an open one under its
//!    compactor lock, so store and index agree; a closed one is kept closed);
//! 4. the log is cut: every collection's head at one instant, and its records
//!    from the copied checkpoint up to that head are written as a fresh log.
//!
//! Restoring gives the acknowledged state as of the cut: every write acknowledged
//! before the backup began is in it, none acknowledged after it ended, and of
//! those in between, each collection has exactly a prefix (in log order). The
//! catalogue is as of step 2 (a collection created after it is not in the
//! backup). Opening the restored directory reconciles each index with its store
//! using the log, as after a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indigo_log::CollectionId;
use indigo_storage::fs::{self, FileSystem, StdFs};
use indigo_sysdb::{SqliteSysDb, SysDb};
use serde_json::{json, Value};

use crate::{catalogue, log_id, Error, Indigo, Result};

/// The backup's manifest, written last: a directory without it is not a backup.
pub const MANIFEST: &str = "BACKUP";
const MAGIC: &[u8; 8] = b"IDGBKUP\0";
const VERSION: u32 = 1;

/// What a backup or restore did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupReport {
    pub collections: usize,
    /// Log records copied (what was acknowledged but not yet folded).
    pub log_records: u64,
    pub files: usize,
    pub bytes: u64,
}

fn storage(what: &str, p: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{what} {}: {e}", p.display()))
}

/// `dir` must not exist, or be an empty directory.
fn fresh_dir(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    if fs.exists(dir) {
        let names = fs.list(dir).map_err(|e| storage("list", dir, e))?;
        if !names.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} is not empty; give a new directory",
                dir.display()
            )));
        }
    }
    fs::create_dir_durable(fs, dir).map_err(|e| storage("create", dir, e))
}

/// Copies a directory tree file by file (each fsynced, then each directory).
fn copy_tree(fs: &dyn FileSystem, from: &Path, to: &Path) -> Result<u64> {
    fs::create_dir_durable(fs, to).map_err(|e| storage("create", to, e))?;
    let mut bytes = 0;
    for name in fs.list(from).map_err(|e| storage("list", from, e))? {
        let (f, t) = (from.join(&name), to.join(&name));
        if name.ends_with(".tmp") {
            continue;
        }
        if fs.is_dir(&f) {
            bytes += copy_tree(fs, &f, &t)?;
        } else {
            bytes += fs::copy_file(fs, &f, &t, None).map_err(|e| storage("copy", &f, e))?;
        }
    }
    fs.sync_dir(to).map_err(|e| storage("fsync", to, e))?;
    Ok(bytes)
}

/// Every file under `root`, as paths relative to it.
fn walk(fs: &dyn FileSystem, root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    for name in fs.list(&dir).map_err(|e| storage("list", &dir, e))? {
        let r = rel.join(&name);
        if fs.is_dir(&root.join(&r)) {
            walk(fs, root, &r, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

fn checksum(fs: &dyn FileSystem, path: &Path) -> Result<(u64, u32)> {
    let f = fs.open(path).map_err(|e| storage("open", path, e))?;
    let mut crc = 0u32;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < f.len() {
        let n = ((f.len() - at) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], at)
            .map_err(|e| storage("read", path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    Ok((f.len(), crc))
}

fn encode_manifest(body: &Value) -> Vec<u8> {
    let body = body.to_string();
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body.as_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_manifest(b: &[u8]) -> std::result::Result<Value, String> {
    if b.len() < 20 || &b[..8] != MAGIC {
        return Err("not a backup manifest (bad magic or too short)".into());
    }
    let (head, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(head) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err("checksum mismatch".into());
    }
    let v = u32::from_le_bytes(b[8..12].try_into().unwrap());
    if v != VERSION {
        return Err(format!(
            "format version {v} is not supported (this build reads {VERSION})"
        ));
    }
    let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    if 16 + len != head.len() {
        return Err("body length does not match the file".into());
    }
    serde_json::from_slice(&head[16..]).map_err(|e| e.to_string())
}

#[cfg(feature = "fuzzing")]
pub(crate) fn decode_manifest_for_fuzzing(b: &[u8]) -> std::result::Result<Value, String> {
    decode_manifest(b)
}

/// Lists every file under `root` with its size and checksum in `BACKUP`.
fn write_manifest(fs: &dyn FileSystem, root: &Path, collections: usize) -> Result<BackupReport> {
    let mut files = Vec::new();
    walk(fs, root, Path::new(""), &mut files)?;
    files.sort();
    let mut list = Vec::new();
    let mut bytes = 0;
    for rel in &files {
        let (len, crc) = checksum(fs, &root.join(rel))?;
        bytes += len;
        list.push(json!({"path": rel.to_string_lossy(), "bytes": len, "crc32c": crc}));
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = json!({
        "created_unix": created,
        "indigo": env!("CARGO_PKG_VERSION"),
        "collections": collections,
        "files": list,
    });
    let path = root.join(MANIFEST);
    fs::write_atomic(fs, &path, &encode_manifest(&body)).map_err(|e| storage("write", &path, e))?;
    Ok(BackupReport {
        collections,
        log_records: 0,
        files: files.len(),
        bytes,
    })
}

impl Indigo {
    /// Takes a consistent backup into `to` (a new or empty directory) while the
    /// database keeps serving; see the module documentation for what it holds.
    pub fn backup(&self, to: &Path) -> Result<BackupReport> {
        let inner = &self.inner;
        let fs = &*inner.env.fs;
        fresh_dir(fs, to)?;
        let _hold = inner.log.hold_truncation();
        let cat_path = to.join("sysdb.sqlite3");
        inner.sysdb.backup_to(&cat_path)?;
        let copy = SqliteSysDb::open(&cat_path)?;
        let mut ranges: HashMap<CollectionId, (u64, u64)> = HashMap::new();
        let mut kept = 0;
        for c in copy.all_collections()? {
            let lid = log_id(&c.id)?;
            let from = inner.collection_dir(&c.id);
            let dest = to.join("collections").join(&c.id);
            let open = {
                // A closed collection stays closed (and undeleted) while it is copied.
                let _g = inner.opening.lock();
                match inner.open.read().get(&c.id) {
                    Some(o) => Some(o.segment()),
                    None => {
                        if fs.exists(&from) {
                            copy_tree(fs, &from, &dest)?;
                        }
                        None
                    }
                }
            };
            if let Some(seg) = open {
                // Holding it keeps a concurrent delete waiting until the copy is done.
                let Some(_held) = seg.hold() else {
                    copy.delete_collection(&c.tenant, &c.database, &c.name)?;
                    continue; // deleted since the catalogue was copied
                };
                seg.backup_to(&dest)?;
                let rec = from.join(catalogue::RECORD);
                fs::copy_file(fs, &rec, &dest.join(catalogue::RECORD), None)
                    .map_err(|e| storage("copy", &rec, e))?;
                fs.sync_dir(&dest).map_err(|e| storage("fsync", &dest, e))?;
            }
            let at = copy.checkpoint(indigo_compactor::CONSUMER, &c.id)?;
            ranges.insert(lid, (at, at));
            kept += 1;
        }
        // The cut: every write acknowledged before this instant is in the backup.
        let heads = inner.log.heads();
        for (lid, (at, upto)) in ranges.iter_mut() {
            *upto = heads.get(lid).copied().unwrap_or(0).max(*at);
        }
        let log_records = inner.log.export(fs, &to.join("log"), &ranges)?;
        // Closing the copy folds its WAL into it (and removes the WAL).
        drop(copy);
        let mut report = write_manifest(fs, to, kept)?;
        report.log_records = log_records;
        Ok(report)
    }
}

/// Checks a backup against its manifest: every file listed is there with its
/// size and checksum. Returns the manifest's list.
pub fn verify(from: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let fs = &StdFs;
    let path = from.join(MANIFEST);
    let raw = fs.read_all(&path).map_err(|e| {
        Error::InvalidArgument(format!(
            "{} is not a complete backup (no readable {MANIFEST}: {e})",
            from.display()
        ))
    })?;
    let m = decode_manifest(&raw).map_err(|e| storage("read", &path, e))?;
    let mut out = Vec::new();
    for f in m["files"].as_array().into_iter().flatten() {
        let rel = PathBuf::from(f["path"].as_str().unwrap_or_default());
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(storage("read", &path, format!("bad path {rel:?}")));
        }
        let (len, crc) = checksum(fs, &from.join(&rel))?;
        if Some(len) != f["bytes"].as_u64() || Some(crc as u64) != f["crc32c"].as_u64() {
            return Err(Error::Storage(format!(
                "{} does not match the backup manifest (damaged or changed); the backup \
                 cannot be restored as is",
                from.join(&rel).display()
            )));
        }
        out.push((rel, len));
    }
    Ok(out)
}

/// Restores the backup in `from` into `to` (a new or empty directory), after
/// checking every file against the backup's manifest. `indigo run --path TO`
/// then serves the backed-up state.
pub fn restore(from: &Path, to: &Path) -> Result<BackupReport> {
    let fs = &StdFs;
    let files = verify(from)?;
    fresh_dir(fs, to)?;
    let _lock = crate::lock_dir(to)?;
    let mut report = BackupReport::default();
    for (rel, _) in &files {
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_durable(fs, parent).map_err(|e| storage("create", parent, e))?;
        }
        report.bytes += fs::copy_file(fs, &from.join(rel), &dest, None)
            .map_err(|e| storage("copy", &dest, e))?;
        if let Some(parent) = dest.parent() {
            fs.sync_dir(parent)
                .map_err(|e| storage("fsync", parent, e))?;
        }
        report.files += 1;
        if rel.file_name().is_some_and(|n| n == catalogue::RECORD) {
            report.collections += 1;
        }
    }
    Ok(report)
}
