//! Garbage collection of index versions in object storage: mark and sweep.
//!
//! With forks, a version may name files under another collection's prefix
//! (a fork shares its source's files until it rewrites them), so what is
//! alive is decided over every recorded version at once: versions beyond the
//! policy are dropped per collection, then every version still recorded marks
//! its manifest and files (one read of the catalogue), then each prefix is
//! swept of what nothing marked and what is older than the grace period.
//!
//! Why a sweep cannot delete a file a fork names: the fork's catalogue row
//! is committed only while the version it starts from is still recorded, so
//! either that version was in the marked snapshot, or it was committed after
//! it, and then its files are younger than the grace period or are named by
//! the version that was current at the snapshot (current versions are never
//! dropped).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indigo_object::Objects;
use indigo_segment::{Error, Result};
use indigo_sysdb::SysDb;

use crate::{collection_prefix, sysdb_err, VersionManifest};

/// What a collection pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    /// Versions forgotten by the system database.
    pub versions_dropped: usize,
    pub objects_deleted: usize,
    pub bytes_deleted: u64,
    /// Unreferenced objects left because they are younger than the grace period
    /// (a compaction may still be committing them).
    pub objects_young: usize,
    /// Objects left because a version names them (a fork's, under a deleted
    /// source's prefix).
    pub objects_referenced: usize,
}

/// The files each version manifest names, by manifest key (manifests never
/// change, so each is read once while it stays recorded).
#[derive(Debug, Default)]
pub struct ManifestCache(HashMap<String, Vec<String>>);

/// Forgets the collection's versions beyond the policy: the current one, the
/// newest `keep_versions` and those committed within `keep_window` stay.
pub fn drop_versions(
    sysdb: &dyn SysDb,
    collection: &str,
    keep_versions: usize,
    keep_window: Duration,
) -> Result<usize> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let versions = sysdb.index_versions(collection).map_err(sysdb_err)?;
    let current = sysdb
        .latest_index_version(collection)
        .map_err(sysdb_err)?
        .map(|v| v.version);
    let n = versions.len();
    let dropped: Vec<i64> = versions
        .into_iter()
        .enumerate()
        .filter(|(i, v)| {
            !(Some(v.version) == current
                || i + keep_versions >= n
                || v.created_ms + keep_window.as_millis() as u64 >= now_ms)
        })
        .map(|(_, v)| v.version)
        .collect();
    if !dropped.is_empty() {
        sysdb
            .drop_index_versions(collection, &dropped)
            .map_err(sysdb_err)?;
    }
    Ok(dropped.len())
}

/// Every object key some recorded version names (its manifest and files), of
/// every collection, from one read of the catalogue.
pub fn referenced_keys(
    objects: &dyn Objects,
    sysdb: &dyn SysDb,
    cache: &mut ManifestCache,
) -> Result<HashSet<String>> {
    let versions = sysdb.all_index_versions().map_err(sysdb_err)?;
    let mut referenced = HashSet::new();
    let mut seen = HashMap::new();
    for v in &versions {
        let Some(key) = v.location["key"].as_str() else {
            continue;
        };
        if seen.contains_key(key) {
            continue;
        }
        let files = match cache.0.remove(key) {
            Some(f) => f,
            None => VersionManifest::fetch(objects, key)?
                .files
                .into_iter()
                .map(|f| f.key)
                .collect(),
        };
        seen.insert(key.to_string(), files);
    }
    for (key, files) in &seen {
        referenced.insert(key.clone());
        referenced.extend(files.iter().cloned());
    }
    // Only manifests still recorded stay cached.
    cache.0 = seen;
    Ok(referenced)
}

/// Deletes every object under `prefix` that `referenced` does not hold and
/// that was older than `grace` (longer than the longest compaction and the
/// longest read of an old version) already at `marked`, when the reading of
/// `referenced` began: age counts to the mark, not to the sweep, or a version
/// committed after the mark could lose files while a long pass sweeps on.
pub fn sweep(
    objects: &dyn Objects,
    prefix: &str,
    referenced: &HashSet<String>,
    marked: SystemTime,
    grace: Duration,
) -> Result<Collected> {
    let now = marked;
    let mut out = Collected::default();
    let listed = indigo_object::retry(5, || objects.list(prefix))
        .map_err(|e| Error::Io(format!("list {prefix}: {e}")))?;
    for o in listed {
        if referenced.contains(&o.key) {
            out.objects_referenced += 1;
            continue;
        }
        if now.duration_since(o.modified).unwrap_or_default() < grace {
            out.objects_young += 1;
            continue;
        }
        indigo_object::retry(5, || objects.delete(&o.key))
            .map_err(|e| Error::Io(format!("delete {}: {e}", o.key)))?;
        out.objects_deleted += 1;
        out.bytes_deleted += o.size;
    }
    Ok(out)
}

/// Garbage collection of one collection's prefix: [`drop_versions`], then
/// [`sweep`] of `col/<collection>/` against what every recorded version names
/// (a pass over many collections marks once: see the cluster's GC role).
pub fn collect_garbage(
    objects: &dyn Objects,
    sysdb: &dyn SysDb,
    collection: &str,
    keep_versions: usize,
    keep_window: Duration,
    grace: Duration,
) -> Result<Collected> {
    let dropped = drop_versions(sysdb, collection, keep_versions, keep_window)?;
    let marked = SystemTime::now();
    let referenced = referenced_keys(objects, sysdb, &mut ManifestCache::default())?;
    let mut out = sweep(
        objects,
        &collection_prefix(collection),
        &referenced,
        marked,
        grace,
    )?;
    out.versions_dropped = dropped;
    Ok(out)
}

/// How long versions and unreferenced objects are kept.
#[derive(Debug, Clone)]
pub struct GcPolicy {
    pub keep_versions: usize,
    pub keep_window: Duration,
    /// Longer than the longest compaction, the longest read of an old version
    /// and the longest fork (an intent older than this is given up).
    pub grace: Duration,
}

/// What one [`GarbageCollector::pass`] did, summed over collections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    pub collected: Collected,
    /// Deleted collections whose every object is gone (forgotten).
    pub forgotten: usize,
    /// Fork intents given up as abandoned.
    pub forks_abandoned: usize,
    /// Failures (each also reported to health).
    pub failures: usize,
}

/// The distributed mode's garbage collector (one pass at a time).
pub struct GarbageCollector {
    pub objects: std::sync::Arc<dyn Objects>,
    pub sysdb: std::sync::Arc<dyn SysDb>,
    pub log: std::sync::Arc<indigo_objlog::ObjectLog>,
    pub policy: GcPolicy,
    pub health: std::sync::Arc<indigo_health::Health>,
    manifests: parking_lot::Mutex<ManifestCache>,
}

impl Collected {
    fn add(&mut self, o: &Collected) {
        self.versions_dropped += o.versions_dropped;
        self.objects_deleted += o.objects_deleted;
        self.bytes_deleted += o.bytes_deleted;
        self.objects_young += o.objects_young;
        self.objects_referenced += o.objects_referenced;
    }
}

impl GarbageCollector {
    pub fn new(
        objects: std::sync::Arc<dyn Objects>,
        sysdb: std::sync::Arc<dyn SysDb>,
        log: std::sync::Arc<indigo_objlog::ObjectLog>,
        policy: GcPolicy,
        health: std::sync::Arc<indigo_health::Health>,
    ) -> GarbageCollector {
        GarbageCollector {
            objects,
            sysdb,
            log,
            policy,
            health,
            manifests: Default::default(),
        }
    }

    fn outcome<T>(&self, report: &mut PassReport, subject: &str, r: Result<T>) -> Option<T> {
        match r {
            Ok(t) => {
                self.health.recovered("gc", subject);
                Some(t)
            }
            Err(e) => {
                report.failures += 1;
                self.health.failed("gc", subject, &e);
                None
            }
        }
    }

    /// Drops versions beyond the policy, gives up abandoned fork intents, marks
    /// what every recorded version names, then sweeps each live and deleted
    /// collection's prefix, truncates live logs below their oldest kept version
    /// and removes deleted collections' logs. Nothing is swept unless the mark
    /// succeeded.
    pub fn pass(&self) -> PassReport {
        let mut report = PassReport::default();
        let Some(all) = self.outcome(
            &mut report,
            "catalogue",
            self.sysdb.all_collections().map_err(sysdb_err),
        ) else {
            return report;
        };
        let p = &self.policy;
        for c in &all {
            let r = drop_versions(&*self.sysdb, &c.id, p.keep_versions, p.keep_window);
            if let Some(n) = self.outcome(&mut report, &c.id, r) {
                report.collected.versions_dropped += n;
            }
        }
        let before_ms = SystemTime::now()
            .checked_sub(p.grace)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let r = self.sysdb.abandon_forks(None, before_ms).map_err(sysdb_err);
        if let Some(ids) = self.outcome(&mut report, "forks", r) {
            report.forks_abandoned = ids.len();
        }
        let marked = SystemTime::now();
        let r = referenced_keys(&*self.objects, &*self.sysdb, &mut self.manifests.lock());
        let Some(referenced) = self.outcome(&mut report, "catalogue", r) else {
            return report;
        };
        for c in &all {
            let r = (|| -> Result<Collected> {
                let out = sweep(
                    &*self.objects,
                    &collection_prefix(&c.id),
                    &referenced,
                    marked,
                    p.grace,
                )?;
                // The log below the oldest kept version's offset may go (the
                // log's own grace period still protects readers).
                let oldest_kept = self
                    .sysdb
                    .index_versions(&c.id)
                    .map_err(sysdb_err)?
                    .first()
                    .map_or(0, |v| v.log_offset);
                if let Some(lid) = indigo_log::CollectionId::parse_uuid(&c.id) {
                    use indigo_log::Log;
                    self.log.refresh(lid).map_err(log_err)?;
                    self.log
                        .truncate(lid, indigo_log::LogOffset(oldest_kept))
                        .map_err(log_err)?;
                }
                Ok(out)
            })();
            if let Some(out) = self.outcome(&mut report, &c.id, r) {
                report.collected.add(&out);
            }
        }
        // Deleted collections: what no version names under their prefix, and
        // their whole log, after the grace period; then they are forgotten.
        let r = self.sysdb.deleted_collections().map_err(sysdb_err);
        let Some(deleted) = self.outcome(&mut report, "catalogue", r) else {
            return report;
        };
        for id in deleted {
            let r = (|| -> Result<bool> {
                let mut out = sweep(
                    &*self.objects,
                    &collection_prefix(&id),
                    &referenced,
                    marked,
                    p.grace,
                )?;
                if let Some(lid) = indigo_log::CollectionId::parse_uuid(&id) {
                    let log = sweep(
                        &*self.objects,
                        &indigo_objlog::prefix(lid),
                        &HashSet::new(),
                        marked,
                        p.grace,
                    )?;
                    out.add(&log);
                }
                report.collected.add(&out);
                Ok(out.objects_young + out.objects_referenced == 0)
            })();
            if self.outcome(&mut report, &id, r) == Some(true) {
                let r = self.sysdb.forget_deleted(&id).map_err(sysdb_err);
                if self.outcome(&mut report, &id, r).is_some() {
                    report.forgotten += 1;
                }
            }
        }
        report
    }
}

fn log_err(e: indigo_log::LogError) -> Error {
    Error::Io(format!("log: {e}"))
}
