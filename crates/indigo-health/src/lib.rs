//! Background failures made visible. Every component that works in the
//! background (the compactor, the store's flush and merge threads, HNSW
//! maintenance) reports each failure here with what it failed on (a collection,
//! a directory) and reports again when that works. A report is logged (through
//! `tracing`), counted per component (for `/metrics`), and, while it stands, shown
//! by health checks. Retrying is the component's business: [`Backoff`] spaces the
//! attempts.
//!
//! Invariant: a failure stands from the report until the same component reports
//! success on the same subject (or the subject is forgotten because it was
//! deleted); counts only grow.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// The process's way to hand free memory back to the system, if its binary
/// set one ([`set_trim`]): the allocator is the binary's choice, and a
/// background thread that goes idle is the one that knows its free pages will
/// not be reused soon.
static TRIM: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets the trim hook (once; later calls change nothing).
pub fn set_trim(f: fn()) {
    let _ = TRIM.set(f);
}

/// Runs the trim hook, if set: called by a background thread as it goes
/// from work to idle.
pub fn trim() {
    if let Some(f) = TRIM.get() {
        f();
    }
}

thread_local! {
    /// When this thread last trimmed (see [`trim_now_and_then`]).
    static TRIMMED: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// [`trim`], at most once a second on this thread: for threads that go idle
/// between every few requests (a trim walks the thread's whole heap).
pub fn trim_now_and_then() {
    TRIMMED.with(|t| {
        if t.get()
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            trim();
            t.set(Some(Instant::now()));
        }
    })
}

/// The compactor folding a collection's log into its segment.
pub const COMPACTOR: &str = "compactor";
/// A store writing a frozen memtable into a segment file.
pub const FLUSH: &str = "flush";
/// A store merging segment files.
pub const MERGE: &str = "merge";
/// HNSW repair of deleted nodes and condensation of its commit log.
pub const INDEX_MAINTENANCE: &str = "index_maintenance";
/// Every component name, so metrics show zeros before the first error.
pub const COMPONENTS: [&str; 4] = [COMPACTOR, FLUSH, MERGE, INDEX_MAINTENANCE];

/// A standing failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub component: &'static str,
    /// What it failed on: a collection id or a file path.
    pub subject: String,
    /// The latest error.
    pub error: String,
    pub since: SystemTime,
    /// Failed attempts since it last worked.
    pub attempts: u64,
}

#[derive(Default)]
struct State {
    errors_total: BTreeMap<&'static str, u64>,
    failing: BTreeMap<(&'static str, String), Failure>,
}

/// The process's (or one open database's) record of background failures.
#[derive(Default)]
pub struct Health {
    state: Mutex<State>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("failing", &self.state.lock().failing.len())
            .finish()
    }
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Records a failed attempt of `component` on `subject`. The first failure, and
    /// any whose message changes, is logged as an error; repeats every 100th attempt.
    pub fn failed(&self, component: &'static str, subject: &str, error: &dyn Display) {
        let error = error.to_string();
        let mut s = self.state.lock();
        *s.errors_total.entry(component).or_default() += 1;
        let f = s
            .failing
            .entry((component, subject.to_string()))
            .or_insert_with(|| Failure {
                component,
                subject: subject.to_string(),
                error: String::new(),
                since: SystemTime::now(),
                attempts: 0,
            });
        f.attempts += 1;
        let changed = f.error != error;
        f.error = error;
        if changed || f.attempts.is_multiple_of(100) {
            tracing::error!(
                component,
                subject,
                attempts = f.attempts,
                "background failure: {}; retrying with backoff",
                f.error
            );
        }
    }

    /// `component` works on `subject` again.
    pub fn recovered(&self, component: &'static str, subject: &str) {
        let mut s = self.state.lock();
        if let Some(f) = s.failing.remove(&(component, subject.to_string())) {
            tracing::info!(
                component,
                subject,
                attempts = f.attempts,
                "recovered from: {}",
                f.error
            );
        }
    }

    /// Drops standing failures on subjects starting with `prefix` (their
    /// collection or directory was deleted, so nothing will retry them).
    pub fn forget(&self, prefix: &str) {
        self.state
            .lock()
            .failing
            .retain(|(_, subject), _| !subject.starts_with(prefix));
    }

    /// Standing failures, by component and subject.
    pub fn failures(&self) -> Vec<Failure> {
        self.state.lock().failing.values().cloned().collect()
    }

    /// Whether `component` currently fails on `subject`.
    pub fn is_failing(&self, component: &'static str, subject: &str) -> Option<Failure> {
        self.state
            .lock()
            .failing
            .get(&(component, subject.to_string()))
            .cloned()
    }

    /// Failed attempts so far per component, every known component included.
    pub fn errors_total(&self) -> Vec<(&'static str, u64)> {
        let s = self.state.lock();
        let mut out: BTreeMap<&'static str, u64> = COMPONENTS.iter().map(|c| (*c, 0)).collect();
        for (c, n) in &s.errors_total {
            out.insert(c, *n);
        }
        out.into_iter().collect()
    }
}

/// Exponential backoff between retries of a failing task.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    delay: Duration,
    next: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            delay: min,
            next: None,
        }
    }

    /// Whether it is time to try (always, unless the last attempt failed).
    pub fn ready(&self) -> bool {
        self.next.is_none_or(|t| Instant::now() >= t)
    }

    /// The attempt failed: wait twice as long as last time before the next.
    pub fn failed(&mut self) {
        self.next = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(self.max);
    }

    /// The attempt worked: the next failure starts from the shortest wait.
    pub fn succeeded(&mut self) {
        self.delay = self.min;
        self.next = None;
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.next.is_some()
    }
}

#[cfg(test)]
mod tests {
    /// The hook runs on every `trim`, and `trim_now_and_then` runs it at most
    /// once a second per thread.
    #[test]
    fn trims_now_and_then() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        set_trim(|| {
            CALLS.fetch_add(1, Ordering::SeqCst);
        });
        trim_now_and_then();
        trim_now_and_then();
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        std::thread::spawn(trim_now_and_then).join().unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), 2, "once per thread");
        trim();
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);
    }

    use super::*;

    #[test]
    fn failures_stand_until_recovered_and_counts_grow() {
        let h = Health::new();
        h.failed(COMPACTOR, "c1", &"disk full");
        h.failed(COMPACTOR, "c1", &"disk full");
        h.failed(MERGE, "/d/store", &"EIO");
        let f = h.is_failing(COMPACTOR, "c1").unwrap();
        assert_eq!((f.attempts, f.error.as_str()), (2, "disk full"));
        assert_eq!(h.failures().len(), 2);
        h.recovered(COMPACTOR, "c1");
        assert!(h.is_failing(COMPACTOR, "c1").is_none());
        h.forget("/d/");
        assert!(h.failures().is_empty());
        let counts: BTreeMap<_, _> = h.errors_total().into_iter().collect();
        assert_eq!(counts[COMPACTOR], 2);
        assert_eq!(counts[MERGE], 1);
        assert_eq!(counts[FLUSH], 0);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        assert!(b.ready());
        b.failed();
        assert!(!b.ready());
        b.failed();
        b.failed();
        b.failed();
        assert_eq!(b.delay, Duration::from_millis(40));
        b.succeeded();
        assert!(b.ready() && !b.is_failing());
        assert_eq!(b.delay, Duration::from_millis(10));
    }
}
