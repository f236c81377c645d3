//! Backpressure: a bound on each collection's log entries not yet folded into its
//! segment. Acknowledging is much faster than indexing; without a bound the
//! unindexed tail grows without limit, and every query scans it exactly and every
//! read holds it resolved in memory. With it, a writer waits while the backlog is
//! over the bound, so ingest runs at indexing speed and the tail stays small.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use indigo_log::{CollectionId, Log, LogOffset};
use parking_lot::Mutex;

use crate::{Error, Result};

/// How much of a collection's log may wait to be indexed before writes wait.
#[derive(Debug, Clone, Copy)]
pub struct BacklogLimit {
    /// Record operations logged but not folded into the segment.
    pub records: u64,
    /// Bytes of log entries not folded into the segment.
    pub bytes: u64,
    /// How long a write waits for the backlog to shrink before it is refused
    /// ([`Error::Backlog`], HTTP 429) — only when indexing makes no headway.
    pub wait: Duration,
}

impl Default for BacklogLimit {
    fn default() -> Self {
        BacklogLimit {
            // Measured (bench `ingest`, 384-d, 2 cores): indexing is no slower
            // than with a larger bound, and a query during an ingest, which scans
            // the unindexed records exactly, takes 1.3× an indexed one (2.2× at
            // 8192, 8× at 10,000 before the scan was contiguous). A burst is
            // acknowledged at indexing speed past the bound (9k records/s over
            // HTTP); raise it to acknowledge bursts faster.
            records: 4096,
            bytes: 64 << 20,
            wait: Duration::from_secs(30),
        }
    }
}

/// One collection's unfolded log entries, oldest first, and writes admitted but
/// not yet logged.
#[derive(Default)]
pub(crate) struct Backlog {
    inner: Mutex<State>,
    /// Signalled when a waiting writer is admitted or gives up, so the next in
    /// line looks again.
    turn: parking_lot::Condvar,
}

#[derive(Default)]
struct State {
    /// (offset, records, bytes) of each logged entry not known to be folded.
    entries: VecDeque<(u64, u64, u64)>,
    records: u64,
    bytes: u64,
    /// Admitted writes not yet appended (they count against the bound).
    reserved_records: u64,
    reserved_bytes: u64,
    /// Writers waiting for room, admitted in this order: a large write waits
    /// for the backlog to empty, and small ones arriving meanwhile must not
    /// keep it from ever doing so.
    waiting: std::collections::BTreeSet<u64>,
    next_ticket: u64,
}

impl State {
    fn prune(&mut self, applied: u64) {
        while let Some(&(off, r, b)) = self.entries.front() {
            if off > applied {
                break;
            }
            self.entries.pop_front();
            self.records -= r;
            self.bytes -= b;
        }
    }
}

/// Ends an admission: the write was logged at an offset, or it failed.
pub(crate) struct Admitted<'a> {
    backlog: &'a Backlog,
    records: u64,
    bytes: u64,
    done: bool,
}

impl Admitted<'_> {
    pub(crate) fn logged(mut self, offset: u64) {
        let mut s = self.backlog.inner.lock();
        s.reserved_records -= self.records;
        s.reserved_bytes -= self.bytes;
        // Appends of one collection may finish out of order; keep offsets sorted.
        let at = s.entries.partition_point(|e| e.0 < offset);
        s.entries.insert(at, (offset, self.records, self.bytes));
        s.records += self.records;
        s.bytes += self.bytes;
        self.done = true;
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut s = self.backlog.inner.lock();
            s.reserved_records -= self.records;
            s.reserved_bytes -= self.bytes;
        }
    }
}

impl Backlog {
    /// The backlog of a collection opened with entries already in its log after
    /// `applied` (a restart, or writes of a process that stopped).
    pub(crate) fn from_log(log: &dyn Log, id: CollectionId, applied: u64) -> Result<Backlog> {
        let b = Backlog::default();
        let mut s = b.inner.lock();
        let mut at = applied;
        loop {
            let recs = log
                .read(id, LogOffset(at), 256)
                .map_err(|e| Error::Storage(e.to_string()))?;
            let Some(last) = recs.last() else { break };
            at = last.offset.0;
            for r in &recs {
                let n = indigo_types::WriteEntry::record_count(&r.payload)
                    .map_err(|e| Error::Storage(format!("log entry {}: {e}", r.offset.0)))?
                    as u64;
                s.entries.push_back((r.offset.0, n, r.payload.len() as u64));
                s.records += n;
                s.bytes += r.payload.len() as u64;
            }
        }
        drop(s);
        Ok(b)
    }

    /// (records, bytes) not folded into a segment that has applied up to `applied`.
    pub(crate) fn size(&self, applied: u64) -> (u64, u64) {
        let mut s = self.inner.lock();
        s.prune(applied);
        (s.records, s.bytes)
    }

    /// Waits until a write of `records` and `bytes` fits under `limit` (one larger
    /// than the limit is let through alone), then reserves room for it. `applied`
    /// reads the segment's progress; `wait_past(offset, timeout)` waits for it to
    /// move past an offset, or fails if the write can no longer wait (the
    /// collection was deleted, or its indexing is failing). Refused with
    /// [`Error::Backlog`] when the backlog made no headway for `limit.wait`.
    pub(crate) fn admit(
        &self,
        records: u64,
        bytes: u64,
        limit: &BacklogLimit,
        applied: impl Fn() -> u64,
        wait_past: impl Fn(u64, Duration) -> Result<bool>,
        what: impl Fn() -> String,
    ) -> Result<Admitted<'_>> {
        let ticket = {
            let mut s = self.inner.lock();
            let t = s.next_ticket;
            s.next_ticket += 1;
            s.waiting.insert(t);
            t
        };
        // Leaves the line however this ends (admitted, refused, failed).
        struct InLine<'a>(&'a Backlog, u64);
        impl Drop for InLine<'_> {
            fn drop(&mut self) {
                self.0.inner.lock().waiting.remove(&self.1);
                self.0.turn.notify_all();
            }
        }
        let _line = InLine(self, ticket);
        let mut progress_at = Instant::now();
        let mut last = (u64::MAX, u64::MAX);
        loop {
            let at = applied();
            {
                let mut s = self.inner.lock();
                s.prune(at);
                let head = *s.waiting.first().unwrap_or(&ticket);
                if (at, head) != last {
                    // Headway: indexing moved, or the line did.
                    last = (at, head);
                    progress_at = Instant::now();
                }
                let (r, b) = (s.records + s.reserved_records, s.bytes + s.reserved_bytes);
                let fits = r == 0 || (r + records <= limit.records && b + bytes <= limit.bytes);
                if head == ticket && fits {
                    s.reserved_records += records;
                    s.reserved_bytes += bytes;
                    return Ok(Admitted {
                        backlog: self,
                        records,
                        bytes,
                        done: false,
                    });
                }
                if progress_at.elapsed() >= limit.wait {
                    return Err(Error::Backlog(format!(
                        "{} has {r} record operations ({b} bytes) waiting to be indexed, \
                         over its bound of {} records / {} bytes, and indexing made no \
                         headway for {:?}; check /api/v2/healthcheck and retry later",
                        what(),
                        limit.records,
                        limit.bytes,
                        limit.wait
                    )));
                }
                if head != ticket {
                    // Behind another writer: wait for the line to move.
                    self.turn.wait_for(&mut s, Duration::from_millis(50));
                    continue;
                }
            }
            // First in line without room: wait for indexing. Short slices: the
            // segment may be replaced (a reopen after a failure), and admitted
            // writes of others may free their reservations.
            wait_past(at, Duration::from_millis(50))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn limit(records: u64) -> BacklogLimit {
        BacklogLimit {
            records,
            bytes: u64::MAX,
            wait: Duration::from_millis(200),
        }
    }

    #[test]
    fn admits_under_the_bound_and_refuses_without_headway() {
        let b = Backlog::default();
        let applied = AtomicU64::new(0);
        let no_wait = |_: u64, _: Duration| Ok(false);
        let a = b
            .admit(
                60,
                10,
                &limit(100),
                || applied.load(Ordering::SeqCst),
                no_wait,
                String::new,
            )
            .unwrap();
        a.logged(1);
        // 60 + 60 > 100: waits, and with no progress is refused.
        let e = b
            .admit(
                60,
                10,
                &limit(100),
                || 0,
                |_, d| {
                    std::thread::sleep(d);
                    Ok(false)
                },
                || "c".into(),
            )
            .err()
            .unwrap();
        assert!(matches!(e, Error::Backlog(_)), "{e}");
        assert_eq!(b.size(0), (60, 10));
        // Once entry 1 is folded, there is room.
        applied.store(1, Ordering::SeqCst);
        let a = b
            .admit(
                60,
                10,
                &limit(100),
                || applied.load(Ordering::SeqCst),
                no_wait,
                String::new,
            )
            .unwrap();
        // A failed append releases its reservation.
        drop(a);
        assert_eq!(b.size(1), (0, 0));
        // One batch larger than the bound goes through alone.
        b.admit(500, 10, &limit(100), || 1, no_wait, String::new)
            .unwrap()
            .logged(2);
        assert_eq!(b.size(1), (500, 10));
    }

    #[test]
    fn a_waiting_writer_goes_on_when_indexing_moves() {
        let b = std::sync::Arc::new(Backlog::default());
        let applied = std::sync::Arc::new(AtomicU64::new(0));
        b.admit(90, 1, &limit(100), || 0, |_, _| Ok(false), String::new)
            .unwrap()
            .logged(1);
        let (b2, a2) = (b.clone(), applied.clone());
        let t = std::thread::spawn(move || {
            b2.admit(
                90,
                1,
                &BacklogLimit {
                    wait: Duration::from_secs(600),
                    ..limit(100)
                },
                || a2.load(Ordering::SeqCst),
                |_, d| {
                    std::thread::sleep(d);
                    Ok(false)
                },
                String::new,
            )
            .map(|a| a.logged(2))
            .is_ok()
        });
        applied.store(1, Ordering::SeqCst);
        assert!(t.join().unwrap());
        assert_eq!(b.size(1), (90, 1));
    }

    /// A write larger than the bound waits for the backlog to empty; smaller
    /// writes arriving meanwhile queue behind it instead of keeping it waiting
    /// for ever.
    #[test]
    fn a_large_write_is_not_starved_by_small_ones() {
        let b = std::sync::Arc::new(Backlog::default());
        let applied = std::sync::Arc::new(AtomicU64::new(0));
        let lim = BacklogLimit {
            wait: Duration::from_secs(600),
            ..limit(100)
        };
        b.admit(50, 1, &lim, || 0, |_, _| Ok(false), String::new)
            .unwrap()
            .logged(1);
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sleep = |_: u64, d: Duration| {
            std::thread::sleep(d / 10);
            Ok(false)
        };
        let big = {
            let (b, a, o) = (b.clone(), applied.clone(), order.clone());
            std::thread::spawn(move || {
                let adm = b
                    .admit(
                        500,
                        1,
                        &lim,
                        || a.load(Ordering::SeqCst),
                        sleep,
                        String::new,
                    )
                    .unwrap();
                o.lock().push("big");
                adm.logged(2);
            })
        };
        // The big write is in line first.
        while b.inner.lock().waiting.is_empty() {
            std::thread::yield_now();
        }
        let small = {
            let (b, a, o) = (b.clone(), applied.clone(), order.clone());
            std::thread::spawn(move || {
                for i in 0..5u64 {
                    let adm = b
                        .admit(10, 1, &lim, || a.load(Ordering::SeqCst), sleep, String::new)
                        .unwrap();
                    o.lock().push("small");
                    adm.logged(3 + i);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        // Nothing was admitted while the big write waits for the backlog to empty.
        assert!(order.lock().is_empty());
        applied.store(1, Ordering::SeqCst);
        big.join().unwrap();
        // The small writes wait for the big one to be folded too.
        applied.store(2, Ordering::SeqCst);
        small.join().unwrap();
        assert_eq!(order.lock()[0], "big");
        assert_eq!(order.lock().len(), 6);
    }
}
