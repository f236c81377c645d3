//! Indigo's compactor: folds each collection's write-ahead log into its
//! read-optimised [`Segment`] (the LSM store with records, id map and postings,
//! beside the HNSW index), records how far it got as a checkpoint in the system
//! database, registers the index version, and lets the log drop what is folded.
//!
//! Invariants:
//! - A segment's store always holds the effect of exactly the log entries up to
//!   [`Segment::applied`] (each applied chunk is one atomic store batch).
//! - The checkpoint in the system database never exceeds what is durable in both the
//!   store and the index; the log is truncated only up to the checkpoint.
//! - The index may run ahead of the store during a chunk; readers overlay the ids
//!   the log tail touches, and recovery reconciles the two.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use indigo_health::{Backoff, Health};
use indigo_log::{CollectionId, Log, LogOffset};
use indigo_sysdb::{IndexVersion, SysDb};
use parking_lot::{Condvar, Mutex};

pub use indigo_segment::{decode_records, Changing, Env, IndexConfig, Segment, Snapshot};

/// The consumer name of the compactor's checkpoints.
pub const CONSUMER: &str = "compactor";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Segment(#[from] indigo_segment::Error),
    #[error(transparent)]
    Log(#[from] indigo_log::LogError),
    #[error(transparent)]
    SysDb(#[from] indigo_sysdb::SysDbError),
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One collection the compactor serves.
#[derive(Clone)]
pub struct Job {
    /// The collection's id in the system database.
    pub id: String,
    pub log_id: CollectionId,
    pub segment: Arc<Segment>,
}

/// Where the worker finds its collections.
pub trait Jobs: Send + Sync {
    fn jobs(&self) -> Vec<Job>;
    /// Replaces `job`'s segment by a fresh open of its files, after a failure
    /// that may have left the segment's memory and disk in disagreement (a
    /// poisoned store or index log refuses writes until reopened).
    fn reopen(&self, job: &Job) -> Result<()>;
    /// Called after each pass over the jobs, on the compactor's thread: room for
    /// housekeeping such as giving back memory of idle collections.
    fn idle_pass(&self, _log: &dyn Log, _sysdb: &dyn SysDb) {}
}

/// Fold at most this many records per chunk: big enough for a parallel index
/// build, small enough that readers' tail overlays stay short.
const CHUNK_RECORDS: usize = 1024;
/// Checkpoint when this many entries are applied but not durable, or after
/// the worker's interval ([`CHECKPOINT_EVERY`] by default) with anything
/// pending, or once the log is folded to its head, at most every
/// [`CHECKPOINT_CAUGHT_UP`]: the last records of an ingest are then
/// searchable at full speed (a registered version) at once, not at the next
/// tick (an add of 200 records to an idle server: indexed 730 ms after its
/// acknowledgement before, 26 ms after; median of 12). The price: a trickle
/// of small writes checkpoints a collection up to ten times a second instead
/// of once (three syncs each); a compactor that falls behind is never caught
/// up, so it goes back to the period.
const CHECKPOINT_ENTRIES: u64 = 256;
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
const CHECKPOINT_CAUGHT_UP: Duration = Duration::from_millis(100);

/// Applies up to one chunk of `job`'s log; returns whether there was anything.
pub fn step(job: &Job, log: &dyn Log) -> Result<bool> {
    let applied = job.segment.applied();
    if log.head(job.log_id).0 <= applied {
        return Ok(false);
    }
    let mut entries = Vec::new();
    let mut records = 0;
    let mut after = applied;
    while records < CHUNK_RECORDS {
        let recs = log.read(job.log_id, LogOffset(after), 16)?;
        if recs.is_empty() {
            break;
        }
        for e in decode_records(&recs)? {
            after = e.0;
            records += e.1.records.len();
            entries.push(e);
            if records >= CHUNK_RECORDS {
                break;
            }
        }
    }
    job.segment.apply(&entries)?;
    Ok(true)
}

/// Makes what is applied durable, records it, and truncates the log below it.
pub fn checkpoint(job: &Job, log: &dyn Log, sysdb: &dyn SysDb) -> Result<u64> {
    let _one = job.segment.checkpointing();
    let counted = job.segment.sync_counted()?;
    let durable = counted.0;
    if durable > sysdb.checkpoint(CONSUMER, &job.id)? {
        sysdb.set_checkpoint(CONSUMER, &job.id, durable)?;
        let latest = sysdb.latest_index_version(&job.id)?;
        let current = latest.as_ref().map_or(0, |v| v.version);
        // The log above the last version is still there (truncated only below a
        // committed one): count the record operations this version adds.
        let (from, ops) = latest.as_ref().map_or((0, 0), |v| (v.log_offset, v.ops()));
        if durable <= from {
            // A version at or past this offset is already there.
            log.truncate(job.log_id, LogOffset(durable))?;
            return Ok(durable);
        }
        let added = match job.segment.ops_since(from, counted) {
            Some(n) => n,
            None => indigo_segment::count_ops(log, job.log_id, from, durable)?,
        };
        let ops = ops + added;
        // One compactor per data directory: the swap cannot lose locally, but it is
        // the same commit the distributed compactor makes.
        let committed = sysdb.commit_index_version(
            &IndexVersion {
                collection: job.id.clone(),
                version: current + 1,
                log_offset: durable,
                location: serde_json::json!({
                    "path": job.segment.dir().display().to_string(),
                    "ops": ops,
                }),
                created_ms: 0,
            },
            current,
        )?;
        if committed {
            job.segment.mark_ops(counted);
        }
    }
    log.truncate(job.log_id, LogOffset(durable))?;
    Ok(durable)
}

/// Applies everything logged so far for `job` and checkpoints it (nothing if its
/// collection was deleted).
pub fn drain(job: &Job, log: &dyn Log, sysdb: &dyn SysDb) -> Result<u64> {
    let Some(_held) = job.segment.hold() else {
        return Ok(0);
    };
    while step(job, log)? {}
    checkpoint(job, log, sysdb)
}

struct Shared {
    stop: AtomicBool,
    wake: Mutex<bool>,
    cv: Condvar,
}

/// The background compactor: one thread serving every collection. A collection
/// whose work fails is reported to [`Health`] (component `compactor`, subject its
/// id), has its segment reopened from its files, and is retried with backoff;
/// the others go on.
pub struct Worker {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    pub fn spawn(
        jobs: Arc<dyn Jobs>,
        log: Arc<dyn Log>,
        sysdb: Arc<dyn SysDb>,
        health: Arc<Health>,
        checkpoint_every: Duration,
    ) -> Worker {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            wake: Mutex::new(false),
            cv: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("indigo-compactor".into())
            .spawn(move || run(&s, &*jobs, &*log, &*sysdb, &health, checkpoint_every))
            .expect("spawn compactor thread");
        Worker {
            shared,
            thread: Some(thread),
        }
    }

    /// Tells the worker that new entries were logged.
    pub fn notify(&self) {
        let mut w = self.shared.wake.lock();
        *w = true;
        self.shared.cv.notify_one();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Folding the log is background work: at nice 5 (inherited by the index-build
/// threads it starts) it yields CPU to writers and readers when both want it, and
/// still gets a fair share, so the log tail cannot grow without bound.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain syscall on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 5);
    }
}

/// Per collection: when to try again after a failure, whether the segment
/// must be reopened first, and when it was last checkpointed.
#[derive(Default)]
struct Retry {
    backoff: Backoff,
    reopen: bool,
    checkpointed: Option<Instant>,
}

/// How long the compactor has nothing to do before it trims.
const TRIM_AFTER: Duration = Duration::from_millis(250);

fn run(
    s: &Shared,
    jobs: &dyn Jobs,
    log: &dyn Log,
    sysdb: &dyn SysDb,
    health: &Health,
    every: Duration,
) {
    lower_priority();
    let mut last_checkpoint = Instant::now();
    let mut retries: HashMap<String, Retry> = HashMap::new();
    let mut worked: Option<Instant> = None;
    loop {
        let all = jobs.jobs();
        if s.stop.load(Ordering::Acquire) {
            // What is not yet applied stays in the log for the next open.
            for job in &all {
                if let Some(_held) = job.segment.hold() {
                    let _ = checkpoint(job, log, sysdb);
                }
            }
            return;
        }
        retries.retain(|id, _| all.iter().any(|j| &j.id == id));
        let mut did = false;
        let mut waiting = false;
        for job in &all {
            let retry = retries.entry(job.id.clone()).or_default();
            if !retry.backoff.ready() {
                waiting = true;
                continue;
            }
            let Some(_held) = job.segment.hold() else {
                continue; // its collection was deleted
            };
            let mut reopened = false;
            let r = (|| -> Result<()> {
                if retry.reopen {
                    jobs.reopen(job)?;
                    retry.reopen = false;
                    // The fresh segment comes with the next list of jobs; the
                    // failure stands until work on it succeeds.
                    reopened = true;
                    return Ok(());
                }
                let stepped = step(job, log)?;
                did |= stepped;
                let pending = job
                    .segment
                    .applied()
                    .saturating_sub(sysdb.checkpoint(CONSUMER, &job.id)?);
                let due = last_checkpoint.elapsed() >= every
                    || (!stepped
                        && retry
                            .checkpointed
                            .is_none_or(|t| t.elapsed() >= CHECKPOINT_CAUGHT_UP));
                if pending >= CHECKPOINT_ENTRIES || (pending > 0 && due) {
                    checkpoint(job, log, sysdb)?;
                    retry.checkpointed = Some(Instant::now());
                }
                if !did {
                    job.segment.reclaim()?;
                }
                Ok(())
            })();
            match r {
                Ok(()) => {
                    if retry.backoff.is_failing() && !reopened {
                        retry.backoff.succeeded();
                        health.recovered(indigo_health::COMPACTOR, &job.id);
                    }
                }
                Err(e) => {
                    health.failed(indigo_health::COMPACTOR, &job.id, &e);
                    retry.backoff.failed();
                    // A failure of the catalogue leaves the segment as it was;
                    // anything else may have poisoned it.
                    retry.reopen = !matches!(e, Error::SysDb(_));
                    waiting = true;
                }
            }
        }
        if last_checkpoint.elapsed() >= every {
            last_checkpoint = Instant::now();
        }
        jobs.idle_pass(log, sysdb);
        // Folding frees what it allocated per chunk; once the work has
        // stopped for a while (not between two batches of a trickle), those
        // pages go back rather than sit in this thread's heap.
        if did {
            worked = Some(Instant::now());
        } else if worked.is_some_and(|t| t.elapsed() >= TRIM_AFTER) {
            worked = None;
            indigo_health::trim();
        }
        if !did || waiting {
            let mut w = s.wake.lock();
            if !*w {
                s.cv.wait_for(&mut w, Duration::from_millis(100));
            }
            *w = false;
        }
    }
}
