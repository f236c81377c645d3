//! Indigo's object storage seam. The distributed mode keeps its log and its index
//! versions in S3-compatible object storage and rests its correctness on two
//! primitives only: a write that succeeds only if the name is free
//! (`If-None-Match: *`) and one that succeeds only if the object is unchanged
//! (`If-Match: <etag>`). [`Objects`] states that contract; [`Remote`] implements it
//! on the `object_store` crate (S3, or in memory for tests), [`Counted`] counts
//! requests, and [`Faulty`] injects the failures a network gives: a request
//! refused with a 503, and a write that succeeded but whose answer was lost.
//!
//! Contract:
//! - `put(IfAbsent)` fails with [`ObjectError::AlreadyExists`] if the key exists;
//!   `put(IfMatch(etag))` fails with [`ObjectError::PreconditionFailed`] unless the
//!   object's current etag is `etag`. Either failure means nothing was written.
//! - An object, once written under a key, is read back whole and exactly by every
//!   later `get` (read-after-write consistency, as S3 gives).
//! - [`ObjectError::Unavailable`] is ambiguous for a write: it may have happened.
//!   Callers resolve it (a conditional retry tells).

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload, UpdateVersion};
use parking_lot::Mutex;

/// How a write treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    Overwrite,
    /// Only if no object has the key (`If-None-Match: *`).
    IfAbsent,
    /// Only if the object's etag is this one (`If-Match`).
    IfMatch(String),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ObjectError {
    #[error("object {0} not found")]
    NotFound(String),
    /// `put(IfAbsent)` on a key that exists: nothing was written.
    #[error("object {0} already exists")]
    AlreadyExists(String),
    /// `put(IfMatch)` on an object that changed: nothing was written.
    #[error("object {0} changed since it was read")]
    PreconditionFailed(String),
    /// The store did not answer (a 5xx, a timeout, a lost answer). A write may or
    /// may not have happened; retrying is the caller's call.
    #[error("object store unavailable for {key}: {detail}")]
    Unavailable { key: String, detail: String },
    #[error("object store error for {key}: {detail}")]
    Other { key: String, detail: String },
}

pub type Result<T, E = ObjectError> = std::result::Result<T, E>;

/// An object read back whole.
#[derive(Debug, Clone)]
pub struct Object {
    pub data: Vec<u8>,
    pub etag: String,
}

/// A listed object.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// What the distributed mode needs from object storage; see the crate docs for
/// the contract.
pub trait Objects: Send + Sync {
    /// Writes `data` under `key`; returns the new object's etag.
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<String>;
    fn get(&self, key: &str) -> Result<Object>;
    /// The object if its etag is no longer `etag` (`None`: unchanged). A cheap way
    /// to keep a cached copy fresh.
    fn get_if_changed(&self, key: &str, etag: &str) -> Result<Option<Object>> {
        let o = self.get(key)?;
        Ok((o.etag != etag).then_some(o))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>>;
    /// Size and etag.
    fn head(&self, key: &str) -> Result<(u64, String)>;
    /// Objects whose keys start with `prefix` (a directory-like prefix ending in
    /// `/`), in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>>;
    /// Deleting a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;
}

/// Where an S3-compatible store is. Credentials come from the usual variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `http://127.0.0.1:9000` for a local server; `None`: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Every key lives under this prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
}

/// [`Objects`] on the `object_store` crate. Calls block the calling thread (never
/// call from inside an async task); the requests run on a small runtime of its own.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("indigo-objects")
        .enable_all()
        .build()
        .expect("start the object store's runtime")
}

impl Remote {
    /// An S3-compatible store, with conditional writes by etag.
    pub fn s3(c: &S3Config) -> Result<Remote> {
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&c.bucket)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        if let Some(e) = &c.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(r) = &c.region {
            b = b.with_region(r);
        }
        // Retries live in the callers, which know whether a write was conditional.
        b = b.with_retry(object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(20),
            ..Default::default()
        });
        let store = b.build().map_err(|e| ObjectError::Other {
            key: c.bucket.clone(),
            detail: format!("configure S3 bucket {:?}: {e}", c.bucket),
        })?;
        Ok(Remote {
            store: Arc::new(store),
            prefix: c.prefix.trim_matches('/').to_string(),
            rt: runtime(),
        })
    }

    /// An in-memory store (tests and benchmarks of the protocols).
    pub fn memory() -> Remote {
        Remote {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: String::new(),
            rt: runtime(),
        }
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the object store's runtime stopped")
    }
}

fn map_err(key: &str, e: object_store::Error) -> ObjectError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ObjectError::NotFound(key.to_string()),
        E::AlreadyExists { .. } => ObjectError::AlreadyExists(key.to_string()),
        E::Precondition { .. } => ObjectError::PreconditionFailed(key.to_string()),
        E::Generic { source, .. } => {
            let detail = source.to_string();
            // Server errors and timeouts leave a write's outcome unknown.
            let unknown = [
                "Server error",
                "timed out",
                "timeout",
                "connection",
                "503",
                "500",
            ]
            .iter()
            .any(|w| detail.contains(w));
            if unknown {
                ObjectError::Unavailable {
                    key: key.to_string(),
                    detail,
                }
            } else {
                ObjectError::Other {
                    key: key.to_string(),
                    detail,
                }
            }
        }
        other => ObjectError::Other {
            key: key.to_string(),
            detail: other.to_string(),
        },
    }
}

impl Objects for Remote {
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<String> {
        let (store, path, k) = (self.store.clone(), self.path(key), key.to_string());
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        let mode = match mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::IfAbsent => object_store::PutMode::Create,
            PutMode::IfMatch(e) => object_store::PutMode::Update(UpdateVersion {
                e_tag: Some(e),
                version: None,
            }),
        };
        self.run(async move {
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            match store.put_opts(&path, payload, opts).await {
                Ok(r) => r.e_tag.ok_or_else(|| ObjectError::Unavailable {
                    key: k.clone(),
                    detail: "the store returned no etag".into(),
                }),
                Err(e) => Err(map_err(&k, e)),
            }
        })
    }

    fn get(&self, key: &str) -> Result<Object> {
        let (store, path, k) = (self.store.clone(), self.path(key), key.to_string());
        self.run(async move {
            let r = store.get(&path).await.map_err(|e| map_err(&k, e))?;
            let etag = r.meta.e_tag.clone().unwrap_or_default();
            let data = r.bytes().await.map_err(|e| map_err(&k, e))?;
            Ok(Object {
                data: data.to_vec(),
                etag,
            })
        })
    }

    fn get_if_changed(&self, key: &str, etag: &str) -> Result<Option<Object>> {
        let (store, path, k) = (self.store.clone(), self.path(key), key.to_string());
        let etag = etag.to_string();
        self.run(async move {
            let opts = object_store::GetOptions {
                if_none_match: Some(etag),
                ..Default::default()
            };
            match store.get_opts(&path, opts).await {
                Ok(r) => {
                    let etag = r.meta.e_tag.clone().unwrap_or_default();
                    let data = r.bytes().await.map_err(|e| map_err(&k, e))?;
                    Ok(Some(Object {
                        data: data.to_vec(),
                        etag,
                    }))
                }
                Err(object_store::Error::NotModified { .. }) => Ok(None),
                Err(e) => Err(map_err(&k, e)),
            }
        })
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let (store, path, k) = (self.store.clone(), self.path(key), key.to_string());
        self.run(async move {
            let b = store
                .get_range(&path, range)
                .await
                .map_err(|e| map_err(&k, e))?;
            Ok(b.to_vec())
        })
    }

    fn head(&self, key: &str) -> Result<(u64, String)> {
        let (store, path, k) = (self.store.clone(), self.path(key), key.to_string());
        self.run(async move {
            let m = store.head(&path).await.map_err(|e| map_err(&k, e))?;
            Ok((m.size, m.e_tag.unwrap_or_default()))
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let (store, path, k) = (self.store.clone(), self.path(prefix), prefix.to_string());
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        self.run(async move {
            let mut out = Vec::new();
            let mut s = store.list(Some(&path));
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| map_err(&k, e))?;
                out.push(Listed {
                    key: m.location.as_ref()[strip..].to_string(),
                    size: m.size,
                    modified: m.last_modified.into(),
                });
            }
            Ok(out)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let (store, path, k) = (self.store.clone(), self.path(key), key.to_string());
        self.run(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(map_err(&k, e)),
            }
        })
    }
}

/// Request counts, for benchmarks and for cost estimates.
#[derive(Debug, Default)]
pub struct Stats {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub heads: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    pub bytes_put: AtomicU64,
    pub bytes_got: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub puts: u64,
    pub gets: u64,
    pub heads: u64,
    pub lists: u64,
    pub deletes: u64,
    pub bytes_put: u64,
    pub bytes_got: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            puts: l(&self.puts),
            gets: l(&self.gets),
            heads: l(&self.heads),
            lists: l(&self.lists),
            deletes: l(&self.deletes),
            bytes_put: l(&self.bytes_put),
            bytes_got: l(&self.bytes_got),
        }
    }
}

/// Counts every request made through it (successful or not).
pub struct Counted {
    inner: Arc<dyn Objects>,
    pub stats: Arc<Stats>,
}

impl Counted {
    pub fn new(inner: Arc<dyn Objects>) -> Counted {
        Counted {
            inner,
            stats: Arc::default(),
        }
    }
}

impl Objects for Counted {
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<String> {
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_put
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.inner.put(key, data, mode)
    }
    fn get(&self, key: &str) -> Result<Object> {
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.get(key)?;
        self.stats
            .bytes_got
            .fetch_add(r.data.len() as u64, Ordering::Relaxed);
        Ok(r)
    }
    fn get_if_changed(&self, key: &str, etag: &str) -> Result<Option<Object>> {
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.get_if_changed(key, etag)?;
        if let Some(o) = &r {
            self.stats
                .bytes_got
                .fetch_add(o.data.len() as u64, Ordering::Relaxed);
        }
        Ok(r)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.get_range(key, range)?;
        self.stats
            .bytes_got
            .fetch_add(r.len() as u64, Ordering::Relaxed);
        Ok(r)
    }
    fn head(&self, key: &str) -> Result<(u64, String)> {
        self.stats.heads.fetch_add(1, Ordering::Relaxed);
        self.inner.head(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.stats.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key)
    }
}

/// Which requests a [`Faulty`] store disturbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Any,
}

#[derive(Debug, Default)]
struct Plan {
    /// The next this many matching writes succeed, but answer `Unavailable` (the
    /// answer was lost on the way back).
    lose_answers: u32,
    /// The next this many matching requests fail with a 503 before doing anything.
    refuse: u32,
    /// Each matching request is refused with this probability.
    refuse_rate: f64,
    op: Option<Op>,
    /// Requests only to keys containing this are disturbed.
    key_contains: String,
}

/// Injects the failures of a network in front of another store.
pub struct Faulty {
    inner: Arc<dyn Objects>,
    plan: Mutex<Plan>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Objects>) -> Faulty {
        Faulty {
            inner,
            plan: Mutex::default(),
        }
    }

    /// The next `n` writes (to keys containing `key_contains`) are done, but their
    /// answers are lost.
    pub fn lose_answers(&self, n: u32, key_contains: &str) {
        let mut p = self.plan.lock();
        p.lose_answers = n;
        p.op = Some(Op::Put);
        p.key_contains = key_contains.to_string();
    }

    /// The next `n` requests of kind `op` (to keys containing `key_contains`) get
    /// a 503 and do nothing.
    pub fn refuse(&self, n: u32, op: Op, key_contains: &str) {
        let mut p = self.plan.lock();
        p.refuse = n;
        p.op = Some(op);
        p.key_contains = key_contains.to_string();
    }

    /// Every request of kind `op` is refused with probability `rate`.
    pub fn refuse_randomly(&self, rate: f64, op: Op) {
        let mut p = self.plan.lock();
        p.refuse_rate = rate;
        p.op = Some(op);
        p.key_contains.clear();
    }

    pub fn heal(&self) {
        *self.plan.lock() = Plan::default();
    }

    /// Decides what happens to a request: refused, answer lost, or untouched.
    fn decide(&self, op: Op, key: &str) -> (bool, bool) {
        let mut p = self.plan.lock();
        let matches = p.op.is_some_and(|o| o == Op::Any || o == op)
            && (p.key_contains.is_empty() || key.contains(&p.key_contains));
        if !matches {
            return (false, false);
        }
        if p.refuse > 0 {
            p.refuse -= 1;
            return (true, false);
        }
        if p.refuse_rate > 0.0 && rand::random::<f64>() < p.refuse_rate {
            return (true, false);
        }
        if op == Op::Put && p.lose_answers > 0 {
            p.lose_answers -= 1;
            return (false, true);
        }
        (false, false)
    }
}

fn refused(key: &str) -> ObjectError {
    ObjectError::Unavailable {
        key: key.to_string(),
        detail: "503 Service Unavailable (injected)".into(),
    }
}

impl Objects for Faulty {
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<String> {
        let (refuse, lose) = self.decide(Op::Put, key);
        if refuse {
            return Err(refused(key));
        }
        let r = self.inner.put(key, data, mode);
        if lose {
            return Err(ObjectError::Unavailable {
                key: key.to_string(),
                detail: "the answer was lost (injected)".into(),
            });
        }
        r
    }
    fn get(&self, key: &str) -> Result<Object> {
        if self.decide(Op::Get, key).0 {
            return Err(refused(key));
        }
        self.inner.get(key)
    }
    fn get_if_changed(&self, key: &str, etag: &str) -> Result<Option<Object>> {
        if self.decide(Op::Get, key).0 {
            return Err(refused(key));
        }
        self.inner.get_if_changed(key, etag)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        if self.decide(Op::Get, key).0 {
            return Err(refused(key));
        }
        self.inner.get_range(key, range)
    }
    fn head(&self, key: &str) -> Result<(u64, String)> {
        if self.decide(Op::Get, key).0 {
            return Err(refused(key));
        }
        self.inner.head(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        if self.decide(Op::Get, prefix).0 {
            return Err(refused(prefix));
        }
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        if self.decide(Op::Put, key).0 {
            return Err(refused(key));
        }
        self.inner.delete(key)
    }
}

/// Calls `f` until it answers something other than `Unavailable`, waiting a little
/// longer each time, at most `attempts` times. For requests whose repetition is
/// harmless (reads, deletes, conditional writes).
pub fn retry<T>(attempts: u32, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut wait = Duration::from_millis(20);
    let mut n = 0;
    loop {
        match f() {
            Err(ObjectError::Unavailable { .. }) if n + 1 < attempts => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
                n += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_writes_are_typed_outcomes() {
        let o = Remote::memory();
        let e1 = o.put("a/x", b"one", PutMode::IfAbsent).unwrap();
        assert_eq!(
            o.put("a/x", b"two", PutMode::IfAbsent),
            Err(ObjectError::AlreadyExists("a/x".into()))
        );
        assert_eq!(o.get("a/x").unwrap().data, b"one");
        let e2 = o.put("a/x", b"two", PutMode::IfMatch(e1.clone())).unwrap();
        assert_eq!(
            o.put("a/x", b"three", PutMode::IfMatch(e1)),
            Err(ObjectError::PreconditionFailed("a/x".into()))
        );
        let got = o.get("a/x").unwrap();
        assert_eq!((got.data.as_slice(), got.etag.clone()), (&b"two"[..], e2));
        assert_eq!(o.get_range("a/x", 1..3).unwrap(), b"wo");
        assert!(o.get_if_changed("a/x", &got.etag).unwrap().is_none());
        assert_eq!(
            o.get_if_changed("a/x", "other").unwrap().unwrap().data,
            b"two"
        );
        assert_eq!(o.head("a/x").unwrap().0, 3);
        o.put("a/y", b"", PutMode::Overwrite).unwrap();
        let mut keys: Vec<String> = o.list("a/").unwrap().into_iter().map(|l| l.key).collect();
        keys.sort();
        assert_eq!(keys, vec!["a/x", "a/y"]);
        o.delete("a/x").unwrap();
        o.delete("a/x").unwrap();
        assert_eq!(
            o.get("a/x").unwrap_err(),
            ObjectError::NotFound("a/x".into())
        );
    }

    #[test]
    fn faults_refuse_or_lose_answers_and_counts_see_everything() {
        let c = Arc::new(Counted::new(Arc::new(Remote::memory())));
        let f = Faulty::new(c.clone());
        f.refuse(1, Op::Put, "");
        assert!(matches!(
            f.put("k", b"v", PutMode::IfAbsent),
            Err(ObjectError::Unavailable { .. })
        ));
        assert_eq!(
            c.stats.snapshot().puts,
            0,
            "a refused request never arrives"
        );
        f.lose_answers(1, "");
        assert!(matches!(
            f.put("k", b"v", PutMode::IfAbsent),
            Err(ObjectError::Unavailable { .. })
        ));
        // It happened: a conditional retry says so.
        assert_eq!(
            f.put("k", b"v", PutMode::IfAbsent),
            Err(ObjectError::AlreadyExists("k".into()))
        );
        assert_eq!(f.get("k").unwrap().data, b"v");
        let s = c.stats.snapshot();
        assert_eq!((s.puts, s.gets), (2, 1));
    }
}
