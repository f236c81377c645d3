//! Membership and routing for the distributed mode, without a consensus protocol
//! of its own. Each process holds a lease in the system database (a row it renews;
//! [`Heartbeat`]); others read the live members ([`Members`]) and route a
//! collection's work by rendezvous hashing ([`rank`]): every member gets a score
//! from hash(collection, member) and the highest serves it, the next takes over
//! if it fails. When a member joins or leaves, only the collections it wins or
//! loses move, so caches stay warm elsewhere.
//!
//! Routing decides who does work, never what is correct: two log writers on one
//! collection fence each other through the object store, two compactors through
//! the version compare-and-swap, and a read carries the version and log offset it
//! must cover.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indigo_sysdb::{Member, SysDb};
use parking_lot::Mutex;

/// Members ordered by preference for `key` (a collection id): the first serves
/// it, the rest are the fallbacks in order.
pub fn rank<'a>(key: &str, members: &'a [Member]) -> Vec<&'a Member> {
    let mut scored: Vec<(u64, &Member)> = members
        .iter()
        .map(|m| {
            let mut buf = Vec::with_capacity(key.len() + m.id.len() + 1);
            buf.extend_from_slice(key.as_bytes());
            buf.push(0xff);
            buf.extend_from_slice(m.id.as_bytes());
            (xxhash_rust::xxh3::xxh3_64(&buf), m)
        })
        .collect();
    // Highest score first; ties (never in practice) by id, so every process agrees.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored.into_iter().map(|(_, m)| m).collect()
}

/// Whether `me` is the preferred member for `key` among `members`.
pub fn owns(key: &str, me: &str, members: &[Member]) -> bool {
    rank(key, members).first().is_some_and(|m| m.id == me)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The live members of a role, from the system database (re-read at most every
/// `refresh`) or a static list (tests, or deployments without leases).
pub struct Members {
    source: Source,
    refresh: Duration,
    cache: Mutex<Option<(Instant, Vec<Member>)>>,
}

enum Source {
    Leases { sysdb: Arc<dyn SysDb>, role: String },
    Static(Vec<Member>),
}

impl Members {
    pub fn from_leases(sysdb: Arc<dyn SysDb>, role: &str, refresh: Duration) -> Members {
        Members {
            source: Source::Leases {
                sysdb,
                role: role.to_string(),
            },
            refresh,
            cache: Mutex::new(None),
        }
    }

    pub fn fixed(members: Vec<Member>) -> Members {
        Members {
            source: Source::Static(members),
            refresh: Duration::MAX,
            cache: Mutex::new(None),
        }
    }

    /// The live members now (the cached list if it is fresh enough; the last
    /// known one if the system database cannot be read).
    pub fn live(&self) -> Vec<Member> {
        match &self.source {
            Source::Static(m) => m.clone(),
            Source::Leases { sysdb, role } => {
                let mut c = self.cache.lock();
                if let Some((at, list)) = &*c {
                    if at.elapsed() < self.refresh {
                        return list.clone();
                    }
                }
                match sysdb.members(Some(role)) {
                    Ok(list) => {
                        *c = Some((Instant::now(), list.clone()));
                        list
                    }
                    Err(e) => {
                        tracing::warn!("cannot read the members of role {role}: {e}");
                        c.as_ref().map(|(_, l)| l.clone()).unwrap_or_default()
                    }
                }
            }
        }
    }

    /// Forgets the cached list (a member did not answer: look again).
    pub fn invalidate(&self) {
        *self.cache.lock() = None;
    }

    /// Live members ordered by preference for `key`.
    pub fn ranked(&self, key: &str) -> Vec<Member> {
        let live = self.live();
        rank(key, &live).into_iter().cloned().collect()
    }
}

/// Renews a member's lease in the background until dropped; then ends it.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    sysdb: Arc<dyn SysDb>,
    id: String,
}

impl Heartbeat {
    /// Takes the lease now (so the caller is routable once this returns) and
    /// renews it every third of `lease`. Failures are reported to `health` and
    /// retried; a member that cannot renew drops out of routing when its lease
    /// ends, and its work moves to the next member.
    pub fn start(
        sysdb: Arc<dyn SysDb>,
        member: Member,
        lease: Duration,
        health: Arc<indigo_health::Health>,
    ) -> Result<Heartbeat, indigo_sysdb::SysDbError> {
        let beat = {
            let sysdb = sysdb.clone();
            move |m: &Member| {
                let mut m = m.clone();
                m.lease_until_ms = now_ms() + lease.as_millis() as u64;
                sysdb.heartbeat(&m)
            }
        };
        beat(&member)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let id = member.id.clone();
        let thread = std::thread::Builder::new()
            .name("indigo-heartbeat".into())
            .spawn(move || {
                let every = lease / 3;
                let mut next = Instant::now() + every;
                while !s.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50).min(every));
                    if Instant::now() < next {
                        continue;
                    }
                    match beat(&member) {
                        Ok(()) => {
                            health.recovered("heartbeat", &member.id);
                            next = Instant::now() + every;
                        }
                        Err(e) => {
                            health.failed("heartbeat", &member.id, &e);
                            next = Instant::now() + Duration::from_millis(200);
                        }
                    }
                }
            })
            .expect("spawn the heartbeat thread");
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
            sysdb,
            id,
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.sysdb.leave(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str) -> Member {
        Member {
            id: id.into(),
            role: "query".into(),
            address: format!("{id}:1"),
            lease_until_ms: u64::MAX,
        }
    }

    #[test]
    fn rendezvous_spreads_keys_and_moves_only_the_leavers() {
        let all: Vec<Member> = (0..4).map(|i| m(&format!("node{i}"))).collect();
        let keys: Vec<String> = (0..4000).map(|i| format!("collection-{i}")).collect();
        let owner = |members: &[Member], k: &str| rank(k, members)[0].id.clone();
        let mut load = std::collections::HashMap::new();
        for k in &keys {
            *load.entry(owner(&all, k)).or_insert(0) += 1;
        }
        for (node, n) in &load {
            assert!((800..1200).contains(n), "{node} got {n} of 4000");
        }
        // node2 leaves: only its keys move, each to its second choice.
        let without: Vec<Member> = all.iter().filter(|x| x.id != "node2").cloned().collect();
        for k in &keys {
            let before = owner(&all, k);
            let after = owner(&without, k);
            if before == "node2" {
                assert_eq!(after, rank(k, &all)[1].id);
            } else {
                assert_eq!(after, before, "{k} moved though its owner stayed");
            }
        }
        assert!(owns("collection-1", &owner(&all, "collection-1"), &all));
        assert!(rank("x", &[]).is_empty());
    }
}
