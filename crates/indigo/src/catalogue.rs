//! The catalogue (the system database) is the authority on what exists, and never
//! a reason to delete data. Each collection directory carries its own record
//! (`COLLECTION`: id, name, tenant, database, metadata, configuration,
//! dimension), so a lost or older catalogue can be rebuilt ([`repair`]); a delete
//! leaves a `DELETING` marker before the catalogue entry goes, so start-up can
//! tell a crash-cut delete (finish it) from data the catalogue does not know
//! (refuse to start and say what to do, never delete it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indigo_log::{CollectionId, FileLog, Log};
use indigo_storage::fs::{self, FileSystem};
use indigo_sysdb::{NewCollection, SqliteSysDb, SysDb};
use serde_json::{json, Value};

use crate::{log_id, CollectionInfo, Error, Result};

/// A collection directory's own record of what it is.
pub(crate) const RECORD: &str = "COLLECTION";
/// Present while (and after) a collection is deleted: its data may go.
pub(crate) const DELETING: &str = "DELETING";
const MAGIC: &[u8; 8] = b"IDGCOLL\0";
const VERSION: u32 = 1;

/// `COLLECTION`: magic, version u32, body length u32, JSON body, crc32c of all
/// before it (see `docs/format.md`).
pub(crate) fn encode_record(c: &CollectionInfo) -> Vec<u8> {
    let body = json!({
        "id": c.id,
        "name": c.name,
        "tenant": c.tenant,
        "database": c.database,
        "metadata": c.metadata,
        "configuration": c.configuration,
        "dimension": c.dimension,
    })
    .to_string();
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body.as_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_record(b: &[u8]) -> std::result::Result<CollectionInfo, String> {
    if b.len() < 20 || &b[..8] != MAGIC {
        return Err("not a collection record (bad magic or too short)".into());
    }
    let (head, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(head) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err("checksum mismatch".into());
    }
    let version = u32::from_le_bytes(b[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(format!(
            "format version {version} is not supported (this build reads {VERSION})"
        ));
    }
    let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    if 16 + len != head.len() {
        return Err("body length does not match the file".into());
    }
    let v: Value = serde_json::from_slice(&head[16..]).map_err(|e| e.to_string())?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no {k}"))
    };
    Ok(CollectionInfo {
        id: s("id")?,
        name: s("name")?,
        tenant: s("tenant")?,
        database: s("database")?,
        metadata: v.get("metadata").filter(|m| !m.is_null()).cloned(),
        configuration: v.get("configuration").cloned().unwrap_or(json!({})),
        dimension: v.get("dimension").and_then(Value::as_u64).map(|d| d as u32),
        version: 0,
    })
}

/// Writes (or refreshes) a collection's own record, durably. The record is a
/// copy: the catalogue wins where they differ.
pub(crate) fn write_record(fs: &dyn FileSystem, dir: &Path, c: &CollectionInfo) -> Result<()> {
    // Writers of one collection may race here (the first writes fix the
    // dimension); they share one temporary name. Records are written rarely.
    static WRITING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _g = WRITING.lock();
    let path = dir.join(RECORD);
    let want = encode_record(c);
    if fs.read_all(&path).is_ok_and(|have| have == want) {
        return Ok(());
    }
    fs::create_dir_durable(fs, dir)
        .and_then(|_| fs::write_atomic(fs, &path, &want))
        .map_err(|e| Error::Storage(format!("write {}: {e}", path.display())))
}

pub(crate) fn read_record(fs: &dyn FileSystem, dir: &Path) -> Result<Option<CollectionInfo>> {
    let path = dir.join(RECORD);
    match fs.read_all(&path) {
        Ok(b) => decode_record(&b)
            .map(Some)
            .map_err(|e| Error::Storage(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Storage(format!("read {}: {e}", path.display()))),
    }
}

/// Marks a collection's data as going: durable before its catalogue entry goes.
pub(crate) fn mark_deleting(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::Storage(format!("mark {} deleted: {e}", dir.display()));
    fs::create_dir_durable(fs, dir).map_err(io)?;
    let f = fs.create(&dir.join(DELETING)).map_err(io)?;
    f.sync().map_err(io)?;
    fs.sync_dir(dir).map_err(io)
}

/// Removes a deleted collection's data: its log records and its directory.
/// (The catalogue lists it among the deleted, so records that a reopened log
/// reads again are dropped at start-up.)
pub(crate) fn remove_deleted(
    fs: &dyn FileSystem,
    log: &dyn Log,
    dir: &Path,
    lid: CollectionId,
) -> Result<()> {
    log.truncate(lid, log.head(lid))?;
    match fs.remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Storage(format!("remove {}: {e}", dir.display()))),
    }
    match dir.parent() {
        Some(p) => fs
            .sync_dir(p)
            .map_err(|e| Error::Storage(format!("fsync {}: {e}", p.display()))),
        None => Ok(()),
    }
}

/// Collection directories under `collections/`: (id, path, being deleted).
pub(crate) fn collection_dirs(
    fs: &dyn FileSystem,
    root: &Path,
) -> Result<Vec<(String, PathBuf, bool)>> {
    let dir = root.join("collections");
    let names = match fs.list(&dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Storage(format!("list {}: {e}", dir.display()))),
    };
    Ok(names
        .into_iter()
        // Only directories named like a collection id: anything else is not ours.
        .filter(|n| log_id(n).is_ok())
        .map(|n| {
            let p = dir.join(&n);
            let deleting = fs.exists(&p.join(DELETING));
            (n, p, deleting)
        })
        .collect())
}

/// What start-up found that the catalogue cannot account for, as the message a
/// user reads; `None` when catalogue and data agree.
pub(crate) fn disagreement(
    fs: &dyn FileSystem,
    root: &Path,
    known: &HashMap<String, (CollectionId, u64)>,
) -> Result<Option<String>> {
    let mut unknown = Vec::new();
    for (id, path, deleting) in collection_dirs(fs, root)? {
        if deleting || known.contains_key(&id) {
            continue;
        }
        let what = match read_record(fs, &path) {
            Ok(Some(r)) => format!("{id} ({:?} in {}/{})", r.name, r.tenant, r.database),
            Ok(None) => format!("{id} (no record of its name)"),
            Err(e) => format!("{id} (its record is unreadable: {e})"),
        };
        unknown.push(what);
    }
    let mut missing = Vec::new();
    for (id, (_, checkpoint)) in known {
        if *checkpoint > 0 && !fs.exists(&root.join("collections").join(id)) {
            missing.push(format!("{id} (folded up to log offset {checkpoint})"));
        }
    }
    if unknown.is_empty() && missing.is_empty() {
        return Ok(None);
    }
    unknown.sort();
    missing.sort();
    let mut msg = String::from(
        "the catalogue (sysdb.sqlite3) and the data disagree, so Indigo will not start \
         (it never deletes data it cannot account for):",
    );
    if !unknown.is_empty() {
        msg.push_str(&format!(
            "\n- {} collection director{} under {} that the catalogue does not know: {}. \
             If the catalogue was lost or restored from an older copy, run \
             `indigo repair --path {}` to add them back from their own records; if they \
             are not wanted, move them out of that directory.",
            unknown.len(),
            if unknown.len() == 1 { "y" } else { "ies" },
            root.join("collections").display(),
            unknown.join(", "),
            root.display()
        ));
    }
    if !missing.is_empty() {
        msg.push_str(&format!(
            "\n- {} collection{} in the catalogue whose directory is missing: {}. Restore \
             the directories from a backup, or run `indigo repair --path {} \
             --forget-missing` to drop them from the catalogue.",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            root.display()
        ));
    }
    Ok(Some(msg))
}

/// The message when `sysdb.sqlite3` is gone but collections are not.
pub(crate) fn missing_catalogue(fs: &dyn FileSystem, root: &Path) -> Result<Option<String>> {
    if root.join("sysdb.sqlite3").exists() {
        return Ok(None);
    }
    let live: Vec<String> = collection_dirs(fs, root)?
        .into_iter()
        .filter(|(_, _, deleting)| !deleting)
        .map(|(id, _, _)| id)
        .collect();
    if live.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "the catalogue {} is missing, but {} holds {} collection{} ({}). Indigo will not \
         start with an empty catalogue over existing data. Restore sysdb.sqlite3 from a \
         backup, or run `indigo repair --path {}` to rebuild the catalogue from the \
         collections' own records.",
        root.join("sysdb.sqlite3").display(),
        root.join("collections").display(),
        live.len(),
        if live.len() == 1 { "" } else { "s" },
        live.join(", "),
        root.display()
    )))
}

/// What [`repair`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RepairReport {
    /// Collections added back to the catalogue: (id, tenant, database, name).
    pub restored: Vec<(String, String, String, String)>,
    /// Catalogue entries dropped because their data is gone (`forget_missing`).
    pub forgotten: Vec<String>,
    /// Log records of collections that neither the catalogue nor a directory
    /// names: kept, and listed here.
    pub unknown_log: Vec<String>,
}

/// Rebuilds the catalogue of the data directory `root` (not in use by another
/// process) from the collections' own records: every collection directory the
/// catalogue does not know is added back with its id, name, tenant, database,
/// metadata, configuration and dimension (a name already taken gets a
/// `-restored-<id>` suffix). With `forget_missing`, catalogue entries whose
/// directory is gone (and which had folded data) are dropped. Nothing is deleted.
pub fn repair(root: &Path, forget_missing: bool) -> Result<RepairReport> {
    let _lock = crate::lock_dir(root)?;
    let fs: Arc<dyn FileSystem> = Arc::new(fs::StdFs);
    let sysdb = SqliteSysDb::open(root.join("sysdb.sqlite3"))?;
    let log = FileLog::open_with_fs(fs.clone(), &root.join("log"), Default::default())?;
    let mut report = RepairReport::default();
    let known: HashMap<String, CollectionInfo> = sysdb
        .all_collections()?
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    for (id, path, deleting) in collection_dirs(&*fs, root)? {
        if deleting || known.contains_key(&id) {
            continue;
        }
        let rec = match read_record(&*fs, &path)? {
            Some(r) if r.id == id => r,
            Some(r) => {
                return Err(Error::Storage(format!(
                    "{} names collection {}, not {id}; move it aside and run repair again",
                    path.join(RECORD).display(),
                    r.id
                )))
            }
            None => CollectionInfo {
                id: id.clone(),
                name: format!("restored-{id}"),
                tenant: indigo_sysdb::DEFAULT_TENANT.into(),
                database: indigo_sysdb::DEFAULT_DATABASE.into(),
                metadata: None,
                configuration: crate::CollectionConfig::default().to_json(),
                dimension: None,
                version: 0,
            },
        };
        if !sysdb.tenant_exists(&rec.tenant)? {
            sysdb.create_tenant(&rec.tenant)?;
        }
        if sysdb.get_database(&rec.tenant, &rec.database).is_err() {
            sysdb.create_database(&rec.tenant, &rec.database)?;
        }
        let taken = sysdb
            .get_collection(&rec.tenant, &rec.database, &rec.name)
            .is_ok();
        let name = if taken {
            format!("{}-restored-{}", rec.name, &id[..8])
        } else {
            rec.name.clone()
        };
        sysdb.create_collection(NewCollection {
            tenant: &rec.tenant,
            database: &rec.database,
            name: &name,
            metadata: rec.metadata.clone(),
            configuration: rec.configuration.clone(),
            get_or_create: false,
            id: Some(&id),
        })?;
        if let Some(d) = rec.dimension {
            sysdb.set_dimension(&id, d)?;
        }
        // The checkpoint stays 0: opening the collection reconciles its index with
        // its store using whatever the log still holds.
        report
            .restored
            .push((id, rec.tenant.clone(), rec.database.clone(), name));
    }
    if forget_missing {
        for (id, c) in &known {
            let at = sysdb.checkpoint(indigo_compactor::CONSUMER, id)?;
            if at > 0 && !fs.exists(&root.join("collections").join(id)) {
                sysdb.delete_collection(&c.tenant, &c.database, &c.name)?;
                report.forgotten.push(id.clone());
            }
        }
    }
    let named: std::collections::HashSet<CollectionId> = sysdb
        .all_collections()?
        .iter()
        .map(|c| c.id.clone())
        .chain(sysdb.deleted_collections()?)
        .filter_map(|id| log_id(&id).ok())
        .chain(
            collection_dirs(&*fs, root)?
                .iter()
                .filter_map(|(id, _, _)| log_id(id).ok()),
        )
        .collect();
    for lid in log.collections() {
        if !named.contains(&lid) {
            report.unknown_log.push(crate::id_string(lid));
        }
    }
    Ok(report)
}
