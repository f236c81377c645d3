//! The write-ahead log on object storage, for the distributed mode. Each
//! collection's log is a chain of immutable *fragments* and one *manifest* that
//! names them; correctness rests on the store's two conditional writes, not on a
//! protocol of our own:
//!
//! - a fragment is written with `If-None-Match: *` under the next sequence number,
//!   so exactly one writer owns each slot; a writer that finds its slot taken by
//!   someone else is *fenced*: its pending appends fail (nothing of theirs was
//!   written) and it reloads;
//! - the manifest is replaced with `If-Match: <etag>`; a writer whose replace fails
//!   reloads the manifest and applies its fragment on top (a truncation may have
//!   moved it meanwhile), or finds it already there (another writer adopted it);
//! - an append is acknowledged only after its fragment and a manifest naming it
//!   are stored. Concurrent appends to a collection share one fragment (group
//!   commit: everything queued while the previous fragment was being written);
//! - a writer that loads a manifest first adopts any fragment stored in the next
//!   slot but not yet named (its writer died between the two writes), so a slot
//!   taken is never a wedge and a fragment is wholly in the log or not at all;
//! - a write whose answer was lost is resolved by reading: a fragment carries its
//!   writer's id and a nonce, so finding its own fragment in the slot tells a
//!   writer it succeeded; when even that cannot be told the append fails as
//!   ambiguous and the writer reloads before writing again.
//!
//! Truncation moves fragments wholly at or below the compacted offset to the
//! manifest's garbage list; they stay readable for a grace period and are then
//! deleted. Layout and formats: `docs/format.md` ("Log on object storage").

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indigo_log::{CollectionId, Log, LogError, LogOffset, LogRecord};
use indigo_object::{ObjectError, Objects, PutMode};
use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};

const FRAG_MAGIC: &[u8; 8] = b"IDGFRAG\0";
const MAN_MAGIC: &[u8; 8] = b"IDGLMAN\0";
const VERSION: u32 = 1;

/// Tuning of an [`ObjectLog`].
#[derive(Debug, Clone)]
pub struct ObjectLogOptions {
    /// A fragment carries at most about this many bytes of payload.
    pub fragment_bytes: usize,
    /// Truncated fragments stay readable this long before they are deleted
    /// (longer than the longest read of an older index version).
    pub truncate_grace: Duration,
    /// Attempts at a request that may be repeated (reads, conditional writes).
    pub attempts: u32,
    /// Decoded fragments kept in memory for reads of the log's tail, in bytes.
    pub cache_bytes: usize,
}

impl Default for ObjectLogOptions {
    fn default() -> Self {
        ObjectLogOptions {
            fragment_bytes: 8 << 20,
            truncate_grace: Duration::from_secs(300),
            attempts: 5,
            cache_bytes: 64 << 20,
        }
    }
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every object of `c`'s log is under this prefix (a deleted collection's log
/// is removed by listing it).
pub fn prefix(c: CollectionId) -> String {
    format!("log/{}/", hex(&c.0))
}

fn manifest_key(c: CollectionId) -> String {
    format!("log/{}/manifest", hex(&c.0))
}

fn fragment_key(c: CollectionId, seq: u64) -> String {
    format!("log/{}/frag/{seq:016x}", hex(&c.0))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One fragment as the manifest names it: offsets `start..=end`.
#[derive(Debug, Clone, PartialEq)]
struct FragRef {
    seq: u64,
    start: u64,
    end: u64,
    bytes: u64,
    /// When it was truncated (garbage only), in ms since the epoch.
    since_ms: u64,
}

/// A collection's manifest.
#[derive(Debug, Clone, PartialEq, Default)]
struct Manifest {
    next_seq: u64,
    head: u64,
    truncated: u64,
    fragments: Vec<FragRef>,
    garbage: Vec<FragRef>,
}

fn frag_json(f: &FragRef) -> Value {
    json!([f.seq, f.start, f.end, f.bytes, f.since_ms])
}

fn frag_from(v: &Value) -> Option<FragRef> {
    let a = v.as_array()?;
    let n = |i: usize| a.get(i)?.as_u64();
    Some(FragRef {
        seq: n(0)?,
        start: n(1)?,
        end: n(2)?,
        bytes: n(3)?,
        since_ms: n(4)?,
    })
}

fn wrap(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn unwrap<'a>(magic: &[u8; 8], b: &'a [u8]) -> Result<&'a [u8], String> {
    if b.len() < 20 || &b[..8] != magic {
        return Err("bad magic or too short".into());
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
        return Err("length does not match".into());
    }
    Ok(&head[16..])
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let body = json!({
            "next_seq": self.next_seq,
            "head": self.head,
            "truncated": self.truncated,
            "fragments": self.fragments.iter().map(frag_json).collect::<Vec<_>>(),
            "garbage": self.garbage.iter().map(frag_json).collect::<Vec<_>>(),
        })
        .to_string();
        wrap(MAN_MAGIC, body.as_bytes())
    }

    fn decode(b: &[u8]) -> Result<Manifest, String> {
        let v: Value = serde_json::from_slice(unwrap(MAN_MAGIC, b)?).map_err(|e| e.to_string())?;
        let list = |k: &str| -> Result<Vec<FragRef>, String> {
            v.get(k)
                .and_then(Value::as_array)
                .ok_or(format!("no {k}"))?
                .iter()
                .map(|f| frag_from(f).ok_or_else(|| format!("bad entry in {k}")))
                .collect()
        };
        let n = |k: &str| v.get(k).and_then(Value::as_u64).ok_or(format!("no {k}"));
        let m = Manifest {
            next_seq: n("next_seq")?,
            head: n("head")?,
            truncated: n("truncated")?,
            fragments: list("fragments")?,
            garbage: list("garbage")?,
        };
        // Fragments are contiguous in offsets and slots, and end at the head.
        let mut at = m.fragments.first().map(|f| f.start.saturating_sub(1));
        for w in m.fragments.windows(2) {
            if w[1].seq != w[0].seq + 1 {
                return Err("fragment slots are not contiguous".into());
            }
        }
        for f in &m.fragments {
            if Some(f.start - 1) != at || f.end < f.start {
                return Err("fragment offsets are not contiguous".into());
            }
            at = Some(f.end);
        }
        if let Some(last) = m.fragments.last() {
            if last.end != m.head || last.seq + 1 != m.next_seq {
                return Err("the last fragment does not end at the head".into());
            }
        }
        Ok(m)
    }

    /// Adds a fragment stored in the next slot.
    fn push(&mut self, f: FragRef) {
        debug_assert_eq!(f.seq, self.next_seq);
        debug_assert_eq!(f.start, self.head + 1);
        self.next_seq = f.seq + 1;
        self.head = f.end;
        self.fragments.push(f);
    }
}

/// A fragment's contents.
struct Fragment {
    writer: [u8; 16],
    nonce: u64,
    collection: CollectionId,
    seq: u64,
    start: u64,
    payloads: Vec<Arc<[u8]>>,
}

impl Fragment {
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.writer);
        body.extend_from_slice(&self.nonce.to_le_bytes());
        body.extend_from_slice(&self.collection.0);
        body.extend_from_slice(&self.seq.to_le_bytes());
        body.extend_from_slice(&self.start.to_le_bytes());
        body.extend_from_slice(&(self.payloads.len() as u32).to_le_bytes());
        for p in &self.payloads {
            body.extend_from_slice(&(p.len() as u32).to_le_bytes());
            body.extend_from_slice(p);
        }
        wrap(FRAG_MAGIC, &body)
    }

    fn decode(b: &[u8]) -> Result<Fragment, String> {
        let body = unwrap(FRAG_MAGIC, b)?;
        let mut r = indigo_types::record::Reader { buf: body, pos: 0 };
        let take = |r: &mut indigo_types::record::Reader, n| r.take(n).map(<[u8]>::to_vec);
        let writer: [u8; 16] = take(&mut r, 16)?.try_into().unwrap();
        let nonce = u64::from_le_bytes(take(&mut r, 8)?.try_into().unwrap());
        let collection = CollectionId(take(&mut r, 16)?.try_into().unwrap());
        let seq = u64::from_le_bytes(take(&mut r, 8)?.try_into().unwrap());
        let start = u64::from_le_bytes(take(&mut r, 8)?.try_into().unwrap());
        let n = r.u32()? as usize;
        if start == 0 || n == 0 {
            return Err("a fragment holds records from offset 1 on".into());
        }
        let mut payloads = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let len = r.u32()? as usize;
            payloads.push(Arc::from(r.take(len)?));
        }
        if r.pos != body.len() {
            return Err("trailing bytes".into());
        }
        Ok(Fragment {
            writer,
            nonce,
            collection,
            seq,
            start,
            payloads,
        })
    }

    fn end(&self) -> u64 {
        self.start + self.payloads.len() as u64 - 1
    }
}

fn corrupt(key: &str, detail: impl std::fmt::Display) -> LogError {
    LogError::Corrupt {
        path: key.into(),
        detail: detail.to_string(),
    }
}

fn io(op: &'static str, e: ObjectError) -> LogError {
    let key = match &e {
        ObjectError::NotFound(k)
        | ObjectError::AlreadyExists(k)
        | ObjectError::PreconditionFailed(k) => k.clone(),
        ObjectError::Unavailable { key, .. } | ObjectError::Other { key, .. } => key.clone(),
        _ => String::new(),
    };
    LogError::Io {
        op,
        path: key.into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// A manifest as stored, with its etag (`None`: nothing stored yet).
type Stored = (Manifest, Option<String>);
/// A commit's result, and the manifest stored if it was.
type Committed = (Result<u64, LogError>, Option<Stored>);

/// What happened to one append.
enum Outcome {
    Done(u64),
    Failed(LogError),
}

struct Waiting {
    ticket: u64,
    payload: Arc<[u8]>,
}

#[derive(Default)]
struct State {
    /// The manifest as last stored (or read), and its etag; `None` before the
    /// first load.
    manifest: Option<(Manifest, Option<String>)>,
    queue: Vec<Waiting>,
    next_ticket: u64,
    results: HashMap<u64, Outcome>,
    leader: bool,
    /// Set after a fence or an ambiguous write: reload before writing again.
    stale: bool,
    /// The number of the last refresh that completed.
    refreshed: u64,
}

/// One collection's log in this process.
struct CollectionLog {
    id: CollectionId,
    state: Mutex<State>,
    cv: Condvar,
    /// Refreshes started so far (each is numbered by this count as it starts).
    refreshes: AtomicU64,
}

/// Decoded fragments, most recent kept (reads of the tail hit memory).
#[derive(Default)]
struct Cache {
    frags: HashMap<(CollectionId, u64), Arc<Fragment>>,
    order: VecDeque<((CollectionId, u64), usize)>,
    bytes: usize,
}

/// The log on object storage. One instance may write many collections; two
/// instances (or processes) writing one collection fence each other.
pub struct ObjectLog {
    objects: Arc<dyn Objects>,
    writer: [u8; 16],
    opts: ObjectLogOptions,
    logs: Mutex<HashMap<CollectionId, Arc<CollectionLog>>>,
    cache: Mutex<Cache>,
}

impl ObjectLog {
    pub fn new(objects: Arc<dyn Objects>, opts: ObjectLogOptions) -> ObjectLog {
        ObjectLog {
            objects,
            writer: rand::random(),
            opts,
            logs: Mutex::default(),
            cache: Mutex::default(),
        }
    }

    fn log(&self, c: CollectionId) -> Arc<CollectionLog> {
        self.logs
            .lock()
            .entry(c)
            .or_insert_with(|| {
                Arc::new(CollectionLog {
                    id: c,
                    state: Mutex::default(),
                    cv: Condvar::new(),
                    refreshes: AtomicU64::new(0),
                })
            })
            .clone()
    }

    fn retry<T>(&self, f: impl FnMut() -> indigo_object::Result<T>) -> indigo_object::Result<T> {
        indigo_object::retry(self.opts.attempts, f)
    }

    /// The fragment in slot `seq`, or `None` if the slot is free.
    fn fetch_fragment(&self, c: CollectionId, seq: u64) -> Result<Option<Arc<Fragment>>, LogError> {
        if let Some(f) = self.cache.lock().frags.get(&(c, seq)) {
            return Ok(Some(f.clone()));
        }
        let key = fragment_key(c, seq);
        let obj = match self.retry(|| self.objects.get(&key)) {
            Ok(o) => o,
            Err(ObjectError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(io("read log fragment", e)),
        };
        let f = Fragment::decode(&obj.data).map_err(|e| corrupt(&key, e))?;
        if f.collection != c || f.seq != seq {
            return Err(corrupt(&key, "names another collection or slot"));
        }
        let f = Arc::new(f);
        self.remember(c, seq, f.clone(), obj.data.len());
        Ok(Some(f))
    }

    fn get_fragment(&self, c: CollectionId, seq: u64) -> Result<Arc<Fragment>, LogError> {
        self.fetch_fragment(c, seq)?
            .ok_or_else(|| corrupt(&fragment_key(c, seq), "named by the manifest but missing"))
    }

    fn remember(&self, c: CollectionId, seq: u64, f: Arc<Fragment>, bytes: usize) {
        let mut cache = self.cache.lock();
        if cache.frags.insert((c, seq), f).is_none() {
            cache.order.push_back(((c, seq), bytes));
            cache.bytes += bytes;
        }
        while cache.bytes > self.opts.cache_bytes {
            let Some((k, b)) = cache.order.pop_front() else {
                break;
            };
            cache.frags.remove(&k);
            cache.bytes -= b;
        }
    }

    /// Reads the stored manifest (`None`: no log yet), adopting fragments stored
    /// after it but not named by it.
    fn load(&self, c: CollectionId) -> Result<(Manifest, Option<String>), LogError> {
        let key = manifest_key(c);
        loop {
            let (mut m, etag) = match self.retry(|| self.objects.get(&key)) {
                Ok(o) => (
                    Manifest::decode(&o.data).map_err(|e| corrupt(&key, e))?,
                    Some(o.etag),
                ),
                Err(ObjectError::NotFound(_)) => (
                    Manifest {
                        next_seq: 1,
                        ..Default::default()
                    },
                    None,
                ),
                Err(e) => return Err(io("read log manifest", e)),
            };
            // Adopt what a writer stored but did not get to name.
            let mut adopted = false;
            while let Some(f) = self.fetch_fragment(c, m.next_seq)? {
                if f.start != m.head + 1 {
                    return Err(corrupt(
                        &fragment_key(c, m.next_seq),
                        format!("starts at {} after head {}", f.start, m.head),
                    ));
                }
                m.push(FragRef {
                    seq: f.seq,
                    start: f.start,
                    end: f.end(),
                    bytes: 0,
                    since_ms: 0,
                });
                adopted = true;
            }
            if !adopted {
                return Ok((m, etag));
            }
            let mode = etag.clone().map_or(PutMode::IfAbsent, PutMode::IfMatch);
            match self.retry(|| self.objects.put(&key, &m.encode(), mode.clone())) {
                Ok(e) => return Ok((m, Some(e))),
                // Someone else changed it meanwhile: start over from what they stored.
                Err(ObjectError::PreconditionFailed(_) | ObjectError::AlreadyExists(_)) => {}
                Err(e) => return Err(io("write log manifest", e)),
            }
        }
    }

    /// Ensures the collection's manifest is loaded (or reloaded after a fence).
    fn ensure_loaded(&self, cl: &CollectionLog, st: &mut State) -> Result<(), LogError> {
        if st.manifest.is_none() || st.stale {
            st.manifest = Some(self.load(cl.id)?);
            st.stale = false;
        }
        Ok(())
    }

    /// Writes one fragment holding `batch` and a manifest naming it. Returns the
    /// offset of the first record, or why not (the batch was then not written,
    /// except for `Ambiguous`-class errors, after which the log is reloaded).
    fn commit(
        &self,
        c: CollectionId,
        base: (Manifest, Option<String>),
        batch: &[Arc<[u8]>],
    ) -> Committed {
        let (m, etag) = base;
        let frag = Arc::new(Fragment {
            writer: self.writer,
            nonce: rand::random(),
            collection: c,
            seq: m.next_seq,
            start: m.head + 1,
            payloads: batch.to_vec(),
        });
        let fkey = fragment_key(c, frag.seq);
        let bytes = frag.encode();
        let fenced = || {
            Err(LogError::Fenced(format!(
                "another writer took slot {} of collection {}'s log; nothing of this batch \
                 was written; retry",
                frag.seq,
                hex(&c.0)
            )))
        };
        let ours = |f: &Fragment| f.writer == self.writer && f.nonce == frag.nonce;
        // 1. The fragment: exactly one writer owns each slot.
        let mut attempt = 0;
        loop {
            match self.objects.put(&fkey, &bytes, PutMode::IfAbsent) {
                Ok(_) => break,
                Err(ObjectError::AlreadyExists(_)) => {
                    // Ours, from an attempt whose answer was lost? Or fenced.
                    self.cache.lock().frags.remove(&(c, frag.seq));
                    match self.fetch_fragment(c, frag.seq) {
                        Ok(Some(f)) if ours(&f) => break,
                        Ok(_) => return (fenced(), None),
                        Err(e) => return (Err(e), None),
                    }
                }
                Err(ObjectError::Unavailable { .. }) if attempt + 1 < self.opts.attempts => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20 << attempt.min(6)));
                }
                Err(e) => {
                    // Whether it was stored, only a read can tell.
                    match self.fetch_fragment(c, frag.seq) {
                        Ok(Some(f)) if ours(&f) => break,
                        Ok(Some(_)) => return (fenced(), None),
                        Ok(None) => return (Err(io("write log fragment", e)), None),
                        Err(_) => {
                            return (
                                Err(LogError::Ambiguous(format!(
                                    "writing log fragment {fkey} failed ({e}), and whether it \
                                     was stored cannot be read now"
                                ))),
                                None,
                            )
                        }
                    }
                }
            }
        }
        self.remember(c, frag.seq, frag.clone(), bytes.len());
        // 2. The manifest naming it.
        self.commit_manifest(c, m, etag, &frag, bytes.len())
    }

    /// Replaces the manifest with one naming `frag` (stored in the next slot);
    /// retries on top of whatever another process stored meanwhile.
    fn commit_manifest(
        &self,
        c: CollectionId,
        mut m: Manifest,
        mut etag: Option<String>,
        frag: &Fragment,
        bytes: usize,
    ) -> Committed {
        let key = manifest_key(c);
        let mut attempt = 0;
        loop {
            if m.next_seq > frag.seq {
                // Already named (another writer adopted it), or named and since
                // truncated: durable either way.
                return (Ok(frag.start), Some((m, etag)));
            }
            if m.next_seq < frag.seq || m.head + 1 != frag.start {
                return (
                    Err(LogError::Ambiguous(format!(
                        "log manifest {key} moved under fragment {}",
                        frag.seq
                    ))),
                    None,
                );
            }
            let mut next = m.clone();
            next.push(FragRef {
                seq: frag.seq,
                start: frag.start,
                end: frag.end(),
                bytes: bytes as u64,
                since_ms: 0,
            });
            let mode = etag.clone().map_or(PutMode::IfAbsent, PutMode::IfMatch);
            match self.objects.put(&key, &next.encode(), mode) {
                Ok(e) => return (Ok(frag.start), Some((next, Some(e)))),
                Err(ObjectError::PreconditionFailed(_) | ObjectError::AlreadyExists(_)) => {}
                Err(ObjectError::Unavailable { .. }) if attempt + 1 < self.opts.attempts => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20 << attempt.min(6)));
                    // It may have been stored: a retry with the same etag says so
                    // (a 412, then the reload below finds the fragment named).
                    continue;
                }
                Err(e) => {
                    return (
                        Err(LogError::Ambiguous(format!(
                            "fragment {} is stored but naming it in {key} failed: {e}",
                            frag.seq
                        ))),
                        None,
                    )
                }
            }
            // Changed by someone else: read it (adopting our fragment if nobody
            // has) and try again on top.
            match self.load(c) {
                Ok((lm, le)) => {
                    m = lm;
                    etag = le;
                }
                Err(e) => return (Err(e), None),
            }
        }
    }

    /// Moves fragments wholly at or below `upto` to the garbage list and deletes
    /// garbage older than the grace period.
    fn truncate_inner(&self, cl: &CollectionLog, upto: u64) -> Result<(), LogError> {
        let grace = self.opts.truncate_grace.as_millis() as u64;
        let key = manifest_key(cl.id);
        loop {
            let mut st = cl.state.lock();
            self.ensure_loaded(cl, &mut st)?;
            let (m, etag) = st.manifest.clone().unwrap();
            let upto = upto.min(m.head);
            let now = now_ms();
            let dying = m.fragments.iter().take_while(|f| f.end <= upto).count();
            let expired: Vec<FragRef> = m
                .garbage
                .iter()
                .filter(|g| g.since_ms + grace <= now)
                .cloned()
                .collect();
            if dying == 0 && expired.is_empty() && upto <= m.truncated {
                return Ok(());
            }
            if st.leader {
                // A commit is in flight on this manifest; truncation can wait.
                return Ok(());
            }
            drop(st);
            for g in &expired {
                let k = fragment_key(cl.id, g.seq);
                self.retry(|| self.objects.delete(&k))
                    .map_err(|e| io("delete log fragment", e))?;
                self.cache.lock().frags.remove(&(cl.id, g.seq));
            }
            let mut next = m.clone();
            next.truncated = next.truncated.max(upto);
            next.garbage.retain(|g| !expired.contains(g));
            for mut f in next.fragments.drain(..dying).collect::<Vec<_>>() {
                f.since_ms = now;
                next.garbage.push(f);
            }
            let mode = etag.clone().map_or(PutMode::IfAbsent, PutMode::IfMatch);
            let mut st = cl.state.lock();
            if st.leader || st.manifest.as_ref().map(|x| &x.1) != Some(&etag) {
                continue; // it moved while we deleted; start over
            }
            match self.retry(|| self.objects.put(&key, &next.encode(), mode.clone())) {
                Ok(e) => {
                    st.manifest = Some((next, Some(e)));
                    return Ok(());
                }
                Err(ObjectError::PreconditionFailed(_) | ObjectError::AlreadyExists(_)) => {
                    st.stale = true;
                }
                Err(e) => {
                    st.stale = true;
                    return Err(io("write log manifest", e));
                }
            }
        }
    }

    /// Requests made so far are counted by the store given to [`ObjectLog::new`]
    /// (wrap it in `indigo_object::Counted`); this says which fragments a
    /// collection's log holds now, for tests.
    pub fn fragments(&self, c: CollectionId) -> Result<(Vec<u64>, Vec<u64>), LogError> {
        let cl = self.log(c);
        let mut st = cl.state.lock();
        self.ensure_loaded(&cl, &mut st)?;
        let m = &st.manifest.as_ref().unwrap().0;
        Ok((
            m.fragments.iter().map(|f| f.seq).collect(),
            m.garbage.iter().map(|f| f.seq).collect(),
        ))
    }

    /// Brings this instance's view of `c`'s log up to date with the store (a
    /// conditional read: cheap when nothing changed) and returns the head. For a
    /// reader in another process than the writer, and for a writer taking over.
    ///
    /// Concurrent callers share reads: a caller returns what a refresh that
    /// started after it arrived found, so many readers of one collection cost
    /// about one conditional read per round trip, not one each.
    pub fn refresh(&self, c: CollectionId) -> Result<LogOffset, LogError> {
        let cl = self.log(c);
        let arrived = cl.refreshes.load(Ordering::Acquire);
        let mut st = cl.state.lock();
        if st.refreshed > arrived {
            if let Some((m, _)) = &st.manifest {
                return Ok(LogOffset(m.head));
            }
        }
        let number = cl.refreshes.fetch_add(1, Ordering::AcqRel) + 1;
        let r = self.refresh_locked(&cl, &mut st);
        if r.is_ok() {
            st.refreshed = st.refreshed.max(number);
        }
        r
    }

    fn refresh_locked(&self, cl: &CollectionLog, st: &mut State) -> Result<LogOffset, LogError> {
        let c = cl.id;
        let etag = match &st.manifest {
            Some((_, Some(e))) if !st.stale => e.clone(),
            // Our own first commit is in flight.
            Some((m, None)) if !st.stale && st.leader => return Ok(LogOffset(m.head)),
            _ => {
                // Not loaded, or loaded when no manifest existed: one may now.
                st.stale = true;
                self.ensure_loaded(cl, st)?;
                return Ok(LogOffset(st.manifest.as_ref().unwrap().0.head));
            }
        };
        if st.leader {
            // Our own commit is in flight: what we hold is the newest we know.
            return Ok(LogOffset(st.manifest.as_ref().unwrap().0.head));
        }
        let key = manifest_key(c);
        match self.retry(|| self.objects.get_if_changed(&key, &etag)) {
            Ok(None) => {}
            Ok(Some(o)) => {
                let m = Manifest::decode(&o.data).map_err(|e| corrupt(&key, e))?;
                st.manifest = Some((m, Some(o.etag)));
            }
            Err(e) => return Err(io("read log manifest", e)),
        }
        Ok(LogOffset(st.manifest.as_ref().unwrap().0.head))
    }

    /// Starts the new log of `c` so that it continues another's numbering:
    /// its first record gets offset `after + 1`, and `payloads` are its first
    /// records, in order (a distributed fork: the source's unfolded tail, above
    /// the version the fork shares). Fails with `Fenced` if `c` already has a
    /// log. The head afterwards.
    pub fn seed(
        &self,
        c: CollectionId,
        after: LogOffset,
        payloads: &[Arc<[u8]>],
    ) -> Result<LogOffset, LogError> {
        let key = manifest_key(c);
        let empty = Manifest {
            next_seq: 1,
            head: after.0,
            truncated: after.0,
            ..Default::default()
        };
        let etag = match self.retry(|| self.objects.put(&key, &empty.encode(), PutMode::IfAbsent)) {
            Ok(e) => e,
            Err(ObjectError::AlreadyExists(_) | ObjectError::PreconditionFailed(_)) => {
                return Err(LogError::Fenced(format!(
                    "collection {} already has a log; a new log cannot be seeded over it",
                    hex(&c.0)
                )))
            }
            Err(e) => return Err(io("write log manifest", e)),
        };
        let mut base = (empty, Some(etag));
        let mut rest = payloads;
        while !rest.is_empty() {
            let mut size = 0;
            let n = rest
                .iter()
                .take_while(|p| {
                    size += p.len();
                    size <= self.opts.fragment_bytes || size == p.len()
                })
                .count();
            let (result, after) = self.commit(c, base, &rest[..n]);
            result?;
            base = after.ok_or_else(|| {
                LogError::Ambiguous(format!("seeding {}'s log lost its manifest", hex(&c.0)))
            })?;
            rest = &rest[n..];
        }
        self.forget(c);
        Ok(LogOffset(base.0.head))
    }

    /// Forgets what this instance knows of `c`, so the next call reads the store.
    pub fn forget(&self, c: CollectionId) {
        if let Some(cl) = self.logs.lock().get(&c) {
            cl.state.lock().stale = true;
        }
    }
}

impl Log for ObjectLog {
    fn append(&self, collection: CollectionId, payload: &[u8]) -> Result<LogOffset, LogError> {
        let cl = self.log(collection);
        let mut st = cl.state.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push(Waiting {
            ticket,
            payload: Arc::from(payload),
        });
        loop {
            if let Some(o) = st.results.remove(&ticket) {
                return match o {
                    Outcome::Done(off) => Ok(LogOffset(off)),
                    Outcome::Failed(e) => Err(e),
                };
            }
            if st.leader {
                cl.cv.wait(&mut st);
                continue;
            }
            // Lead a group commit of what is queued, up to a fragment's size.
            st.leader = true;
            let r = self.ensure_loaded(&cl, &mut st);
            let mut size = 0;
            let n = st
                .queue
                .iter()
                .take_while(|w| {
                    size += w.payload.len();
                    size <= self.opts.fragment_bytes || size == w.payload.len()
                })
                .count();
            let batch: Vec<Waiting> = st.queue.drain(..n).collect();
            let base = st.manifest.clone();
            drop(st);
            let payloads: Vec<Arc<[u8]>> = batch.iter().map(|w| w.payload.clone()).collect();
            let (result, after) = match (r, base) {
                (Err(e), _) => (Err(e), None),
                (Ok(()), Some(base)) => self.commit(collection, base, &payloads),
                (Ok(()), None) => unreachable!("loaded above"),
            };
            st = cl.state.lock();
            st.leader = false;
            match (&result, after) {
                (Ok(_), Some(m)) => st.manifest = Some(m),
                _ => st.stale = true,
            }
            for (i, w) in batch.iter().enumerate() {
                let o = match &result {
                    Ok(start) => Outcome::Done(start + i as u64),
                    Err(e) => Outcome::Failed(e.duplicate()),
                };
                st.results.insert(w.ticket, o);
            }
            cl.cv.notify_all();
        }
    }

    fn read(
        &self,
        collection: CollectionId,
        after: LogOffset,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let cl = self.log(collection);
        let refs: Vec<FragRef> = {
            let mut st = cl.state.lock();
            self.ensure_loaded(&cl, &mut st)?;
            let m = &st.manifest.as_ref().unwrap().0;
            m.garbage
                .iter()
                .chain(&m.fragments)
                .filter(|f| f.end > after.0)
                .map(|f| (f.seq, f.clone()))
                .collect::<BTreeMap<u64, FragRef>>()
                .into_values()
                .collect()
        };
        let mut out = Vec::new();
        for f in refs {
            if out.len() >= limit {
                break;
            }
            let frag = self.get_fragment(collection, f.seq)?;
            for (i, p) in frag.payloads.iter().enumerate() {
                let off = frag.start + i as u64;
                if off > after.0 && out.len() < limit {
                    out.push(LogRecord {
                        collection,
                        offset: LogOffset(off),
                        payload: p.clone(),
                    });
                }
            }
        }
        // Dense from `after`, or the records were truncated and deleted.
        if let Some(first) = out.first() {
            if first.offset.0 != after.0 + 1 {
                return Err(LogError::Corrupt {
                    path: manifest_key(collection).into(),
                    detail: format!(
                        "records after {} were truncated and deleted; the first left is {}",
                        after.0, first.offset.0
                    ),
                });
            }
        }
        Ok(out)
    }

    fn head(&self, collection: CollectionId) -> LogOffset {
        let cl = self.log(collection);
        let mut st = cl.state.lock();
        if self.ensure_loaded(&cl, &mut st).is_err() {
            return LogOffset(st.manifest.as_ref().map_or(0, |m| m.0.head));
        }
        LogOffset(st.manifest.as_ref().unwrap().0.head)
    }

    fn truncate(&self, collection: CollectionId, upto: LogOffset) -> Result<(), LogError> {
        self.truncate_inner(&self.log(collection), upto.0)
    }

    fn collections(&self) -> Vec<CollectionId> {
        self.logs
            .lock()
            .values()
            .filter(|cl| {
                cl.state
                    .lock()
                    .manifest
                    .as_ref()
                    .is_some_and(|(m, _)| m.head > m.truncated)
            })
            .map(|cl| cl.id)
            .collect()
    }

    fn holds(&self, collection: CollectionId) -> bool {
        let cl = self.log(collection);
        let mut st = cl.state.lock();
        if self.ensure_loaded(&cl, &mut st).is_err() {
            return true;
        }
        let m = &st.manifest.as_ref().unwrap().0;
        !m.fragments.is_empty() || !m.garbage.is_empty()
    }
}

/// Entry points for the fuzz targets (`fuzz/`).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    /// A manifest and a fragment decoded from untrusted bytes.
    pub fn decode(bytes: &[u8]) {
        if let Ok(m) = super::Manifest::decode(bytes) {
            assert_eq!(super::Manifest::decode(&m.encode()).as_ref(), Ok(&m));
        }
        if let Ok(f) = super::Fragment::decode(bytes) {
            let _ = f.end();
            assert!(super::Fragment::decode(&f.encode()).is_ok());
        }
    }
}
