//! The background roles of a cluster: compactors fold each collection's log into
//! new index versions (each compactor takes the collections rendezvous hashing
//! gives it among the live compactors; two on one collection are settled by the
//! version compare-and-swap), and the garbage collector deletes what no kept
//! version names, the log fragments below the compacted offset, and deleted
//! collections' objects, each after its grace period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indigo::CollectionConfig;
use indigo_cluster::Members;
use indigo_health::{Backoff, Health};
use indigo_objlog::ObjectLog;
use indigo_segment::IndexConfig;
use indigo_sysdb::SysDb;
use indigo_version::{Compacted, GarbageCollector, VersionCompactor};

use super::nodes::log_id;

/// Stops a background role when dropped.
pub struct RoleThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RoleThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spawn(name: &str, every: Duration, mut f: impl FnMut() + Send + 'static) -> RoleThread {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !s.load(Ordering::Acquire) {
                f();
                let mut slept = Duration::ZERO;
                while slept < every && !s.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(20));
                    slept += Duration::from_millis(20);
                }
            }
        })
        .expect("spawn a role thread");
    RoleThread {
        stop,
        thread: Some(thread),
    }
}

pub fn index_config(configuration: &serde_json::Value) -> Option<IndexConfig> {
    let c = CollectionConfig::from_stored(configuration).ok()?;
    Some(c.index_config(false))
}

/// What a compactor needs.
pub struct Compactor {
    pub me: String,
    pub members: Members,
    pub sysdb: Arc<dyn SysDb>,
    pub log: Arc<ObjectLog>,
    pub versions: VersionCompactor,
    pub health: Arc<Health>,
}

impl Compactor {
    /// One pass over the collections this compactor serves.
    pub fn pass(&self, backoff: &mut std::collections::HashMap<String, Backoff>) {
        let all = match self.sysdb.all_collections() {
            Ok(a) => a,
            Err(e) => {
                self.health
                    .failed(indigo_health::COMPACTOR, "catalogue", &e);
                return;
            }
        };
        let live = self.members.live();
        let mut mine_now = std::collections::HashSet::new();
        for c in all {
            // Mine if rendezvous hashing gives it to me (or no compactor is known).
            let mine = live.is_empty() || indigo_cluster::owns(&c.id, &self.me, &live);
            if !mine {
                continue;
            }
            mine_now.insert(c.id.clone());
            let b = backoff.entry(c.id.clone()).or_default();
            if !b.ready() {
                continue;
            }
            let (Some(lid), Some(config)) = (log_id(&c.id), index_config(&c.configuration)) else {
                // Never made by a frontend: there is nothing this role can do but say so.
                let e = format!(
                    "collection {} has an id or configuration no frontend makes",
                    c.id
                );
                self.health.failed(indigo_health::COMPACTOR, &c.id, &e);
                b.failed();
                continue;
            };
            let r = (|| -> Result<Option<Compacted>, String> {
                let head = self.log.refresh(lid).map_err(|e| e.to_string())?.0;
                let folded = self
                    .sysdb
                    .latest_index_version(&c.id)
                    .map_err(|e| e.to_string())?
                    .map_or(0, |v| v.log_offset);
                tracing::debug!(collection = %c.id, head, folded, "compactor pass");
                if head <= folded {
                    return Ok(None);
                }
                self.versions
                    .compact(&c.id, &config)
                    .map(Some)
                    .map_err(|e| e.to_string())
            })();
            match r {
                Ok(outcome) => {
                    if b.is_failing() {
                        self.health.recovered(indigo_health::COMPACTOR, &c.id);
                    }
                    b.succeeded();
                    if let Some(Compacted::Stale { tried }) = outcome {
                        tracing::info!(collection = %c.id, tried, "another compactor committed this version first");
                    }
                }
                Err(e) => {
                    // Deleted while it was being compacted: nothing failed.
                    if matches!(
                        self.sysdb.get_collection_by_id(&c.id),
                        Err(indigo_sysdb::SysDbError::NotFound(_))
                    ) {
                        tracing::debug!(collection = %c.id, "deleted during compaction");
                        if b.is_failing() {
                            self.health.recovered(indigo_health::COMPACTOR, &c.id);
                        }
                        b.succeeded();
                        continue;
                    }
                    self.health.failed(indigo_health::COMPACTOR, &c.id, &e);
                    b.failed();
                }
            }
        }
        // Deleted collections, and those another compactor now builds.
        self.versions.release_others(&mine_now);
    }

    pub fn start(self, every: Duration) -> RoleThread {
        let mut backoff = std::collections::HashMap::new();
        spawn("indigo-compactor", every, move || self.pass(&mut backoff))
    }
}

/// The garbage collector's thread (the pass is `indigo_version`'s).
pub struct Gc(pub GarbageCollector);

impl Gc {
    pub fn start(self, every: Duration) -> RoleThread {
        spawn("indigo-gc", every, move || {
            self.0.pass();
        })
    }
}
