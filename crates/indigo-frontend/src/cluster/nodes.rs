//! The internal services of a cluster's processes: a *log node* appends writes to
//! the log on object storage (one writer per collection in the normal case, so
//! appends group-commit; a second is fenced by the store) and says how far a
//! collection's log goes; a *query node* answers reads from the index version a
//! plan names, cached on local disk, plus the log after it, up to at least the
//! offset the plan must cover.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use indigo::{CollectionConfig, Include};
use indigo_executor::{TailCache, View};
use indigo_health::Health;
use indigo_log::{CollectionId, Log, LogError};
use indigo_object::Objects;
use indigo_objlog::ObjectLog;
use indigo_segment::{Env, Segment};
use indigo_types::WriteEntry;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::wire;

fn reply(status: u16, name: &str, message: impl Into<String>) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({"error": name, "message": message.into()})),
    )
        .into_response()
}

fn check_protocol(h: &HeaderMap) -> Result<(), Box<Response>> {
    match h.get(wire::HEADER).and_then(|v| v.to_str().ok()) {
        Some(wire::PROTOCOL) => Ok(()),
        other => Err(Box::new(reply(
            400,
            "InvalidArgumentError",
            format!(
                "internal protocol {:?} is not spoken here (this node speaks {})",
                other,
                wire::PROTOCOL
            ),
        ))),
    }
}

/// A collection id of the internal protocol (its UUID text).
pub fn log_id(id: &str) -> Option<CollectionId> {
    CollectionId::parse_uuid(id)
}

/// A log node.
pub struct LogNode {
    pub log: Arc<ObjectLog>,
    /// The record operations of each entry this node appended, by offset, per
    /// collection. Frontends ask for the operations after the current index
    /// version before writes (backpressure); counting them from the log would
    /// read every unindexed entry back from object storage each time.
    ops: Mutex<HashMap<CollectionId, std::collections::BTreeMap<u64, u32>>>,
}

/// Entries [`LogNode::ops`] remembers per collection (past it the oldest half
/// goes), and collections (past it all are forgotten): counts not remembered
/// come from the log. A backlog is normally a few entries: the bound is
/// thousands of records.
const MAX_COUNTED: usize = 1 << 16;
const MAX_COUNTED_COLLECTIONS: usize = 4096;

impl LogNode {
    pub fn new(log: Arc<ObjectLog>) -> LogNode {
        LogNode {
            log,
            ops: Mutex::new(HashMap::new()),
        }
    }

    fn counted(&self, lid: CollectionId, offset: u64, ops: u32) {
        let mut m = self.ops.lock();
        if m.len() >= MAX_COUNTED_COLLECTIONS && !m.contains_key(&lid) {
            m.clear();
        }
        let e = m.entry(lid).or_default();
        e.insert(offset, ops);
        if e.len() > MAX_COUNTED {
            let mid = *e.keys().nth(MAX_COUNTED / 2).unwrap();
            *e = e.split_off(&mid);
        }
    }

    /// The operations in entries `after + 1 ..= head`, if this node appended
    /// every one of them (offsets are consecutive); forgets those at or
    /// before `after` (folded: versions only move forward).
    fn ops_after(&self, lid: CollectionId, after: u64, head: u64) -> Option<u64> {
        if head <= after {
            return Some(0);
        }
        let mut m = self.ops.lock();
        let e = m.get_mut(&lid)?;
        *e = e.split_off(&(after + 1));
        let r = e.range(after + 1..=head);
        (r.clone().count() as u64 == head - after).then(|| r.map(|(_, &n)| u64::from(n)).sum())
    }

    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/internal/v1/log/{id}/append", post(append))
            .route("/internal/v1/log/{id}/head", get(head))
            .with_state(self)
    }
}

/// The protocol version and the collection id of a request to a log node.
fn internal_request(h: &HeaderMap, id: &str) -> Result<CollectionId, Box<Response>> {
    check_protocol(h)?;
    log_id(id).ok_or_else(|| {
        Box::new(reply(
            400,
            "InvalidArgumentError",
            format!("{id:?} is not a collection id"),
        ))
    })
}

async fn append(
    State(node): State<Arc<LogNode>>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let lid = match internal_request(&h, &id) {
        Ok(lid) => lid,
        Err(r) => return *r,
    };
    // Nothing that is not a write request reaches the log.
    let ops = match WriteEntry::decode(&body) {
        Ok(e) => e.records.len() as u32,
        Err(e) => {
            return reply(
                400,
                "InvalidArgumentError",
                format!("not a write request: {e}"),
            )
        }
    };
    // Counted on the blocking thread: it runs to the end even if the
    // request is dropped meanwhile.
    let r = tokio::task::spawn_blocking(move || {
        let off = node.log.append(lid, &body)?;
        node.counted(lid, off.0, ops);
        Ok(off)
    })
    .await;
    match r {
        Ok(Ok(off)) => Json(json!({"offset": off.0})).into_response(),
        Ok(Err(LogError::Fenced(m))) => reply(409, "Fenced", m),
        Ok(Err(LogError::Ambiguous(m))) => reply(503, "Ambiguous", m),
        Ok(Err(e)) => reply(500, "InternalError", e.to_string()),
        Err(e) => reply(500, "InternalError", e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct HeadQuery {
    /// Also count the record operations logged after this offset.
    ops_after: Option<u64>,
}

async fn head(
    State(node): State<Arc<LogNode>>,
    UrlPath(id): UrlPath<String>,
    axum::extract::Query(q): axum::extract::Query<HeadQuery>,
    h: HeaderMap,
) -> Response {
    let lid = match internal_request(&h, &id) {
        Ok(lid) => lid,
        Err(r) => return *r,
    };
    let answer = move || -> Result<Value, String> {
        let head = node.log.refresh(lid).map_err(|e| e.to_string())?.0;
        let mut v = json!({ "head": head });
        if let Some(after) = q.ops_after {
            let ops = match node.ops_after(lid, after, head) {
                Some(n) => n,
                None => indigo_segment::count_ops(&*node.log, lid, after, head)
                    .map_err(|e| e.to_string())?,
            };
            v["ops"] = json!(ops);
        }
        Ok(v)
    };
    match tokio::task::spawn_blocking(answer).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => reply(503, "InternalError", e),
        Err(e) => reply(500, "InternalError", e.to_string()),
    }
}

/// A collection as a query node holds it: a version's segment and the tail cache
/// that goes with it.
struct Opened {
    version: Option<i64>,
    dimension: Option<u32>,
    segment: Arc<Segment>,
    tail: TailCache,
    /// The private directory of an empty segment (no version yet), removed
    /// when the last read of it is done.
    empty_dir: Option<PathBuf>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(dir) = &self.empty_dir {
            self.segment.close();
            let _ = std::fs::remove_dir_all(dir);
            // The collection's own directory goes once no open is left in it.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// Open collections with their last use, and the use clock.
type OpenSet = (HashMap<String, (Arc<Opened>, u64)>, u64);

/// Collections a query node keeps open at once.
const MAX_OPEN: usize = 256;

/// A query node.
pub struct QueryNode {
    pub objects: Arc<dyn Objects>,
    pub log: Arc<ObjectLog>,
    /// Collections' empty segments before their first version.
    pub cache_dir: PathBuf,
    /// Versions' objects, cached within a byte budget.
    pub cache: Arc<indigo_version::Cache>,
    pub health: Arc<Health>,
    /// Open collections, with their last use: at most `MAX_OPEN`, least
    /// recently used closed first (each holds its index in memory).
    open: Mutex<OpenSet>,
}

/// A read that cannot be answered, as status, name and message.
type Refusal = (u16, &'static str, String);

fn refuse(status: u16, e: impl std::fmt::Display) -> Refusal {
    let name = match status {
        400 => "InvalidArgumentError",
        404 => "NotFoundError",
        _ => "InternalError",
    };
    (status, name, e.to_string())
}

impl QueryNode {
    /// A query node caching up to `cache_bytes` of objects under `cache_dir`.
    pub fn new(
        objects: Arc<dyn Objects>,
        log: Arc<ObjectLog>,
        cache_dir: &Path,
        cache_bytes: u64,
        health: Arc<Health>,
    ) -> std::io::Result<QueryNode> {
        let cache = indigo_version::Cache::open(&cache_dir.join("objects"), cache_bytes)?;
        // Empty segments of an earlier run: nothing reads them any more.
        let _ = std::fs::remove_dir_all(cache_dir.join("empty"));
        Ok(QueryNode {
            objects,
            log,
            cache_dir: cache_dir.to_path_buf(),
            cache,
            health,
            open: Mutex::default(),
        })
    }

    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/internal/v1/query/{id}", post(read))
            .with_state(self)
    }

    fn touch(&self, id: &str) -> Option<Arc<Opened>> {
        let mut open = self.open.lock();
        open.1 += 1;
        let now = open.1;
        open.0.get_mut(id).map(|(o, used)| {
            *used = now;
            o.clone()
        })
    }

    /// Collections open now.
    pub fn open_collections(&self) -> usize {
        self.open.lock().0.len()
    }

    /// The segment to read for `t`: the version it names, or a newer one held
    /// already (it covers more of the log, never less).
    fn opened(&self, t: &wire::Target) -> Result<Arc<Opened>, Refusal> {
        let id = &t.collection.id;
        let want = t.version.as_ref().map(|v| v.0);
        if let Some(o) = self.touch(id) {
            if o.version >= want && (o.dimension.is_some() || t.collection.dimension.is_none()) {
                return Ok(o.clone());
            }
        }
        let stored = CollectionConfig::from_stored(&t.collection.configuration)
            .map_err(|e| refuse(400, e))?;
        let config = stored.index_config(false);
        let mut empty_dir = None;
        let segment = match &t.version {
            Some((_, key)) => {
                let m = indigo_version::VersionManifest::fetch(&*self.objects, key)
                    .map_err(|e| refuse(503, e))?;
                indigo_version::open_version(
                    self.objects.clone(),
                    &m,
                    self.cache.clone(),
                    config,
                    self.health.clone(),
                )
                .map_err(|e| refuse(503, e))?
            }
            None => {
                // No version yet: an empty segment, and the whole log over it.
                // Each open has its own directory: two reads may open one
                // collection at once, and a reopen (its dimension now fixed)
                // must not pull the files from under reads of the last one.
                let dir = self
                    .cache_dir
                    .join("empty")
                    .join(id)
                    .join(uuid::Uuid::new_v4().simple().to_string());
                empty_dir = Some(dir.clone());
                let env = Env {
                    fs: Arc::new(indigo_fs::StdFs),
                    health: self.health.clone(),
                };
                Segment::open(
                    &env,
                    &dir,
                    config,
                    t.collection.dimension.map(|d| d as usize),
                    0,
                    &[],
                )
                .map_err(|e| {
                    let _ = std::fs::remove_dir_all(&dir);
                    refuse(503, e)
                })?
            }
        };
        let o = Arc::new(Opened {
            version: want,
            dimension: t.collection.dimension,
            segment: Arc::new(segment),
            tail: TailCache::default(),
            empty_dir,
        });
        let mut open = self.open.lock();
        open.1 += 1;
        let now = open.1;
        open.0.insert(id.clone(), (o.clone(), now));
        if open.0.len() > MAX_OPEN {
            let oldest = open
                .0
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                open.0.remove(&k);
            }
        }
        drop(open);
        Ok(o)
    }

    fn run(&self, plan: &Value) -> Result<Value, Refusal> {
        let t = wire::target_from_wire(plan).map_err(|e| refuse(400, e))?;
        let lid = log_id(&t.collection.id).ok_or_else(|| refuse(400, "bad collection id"))?;
        // The answer covers every write acknowledged before the read began.
        if self.log.head(lid).0 < t.min_offset {
            let h = self.log.refresh(lid).map_err(|e| refuse(503, e))?;
            if h.0 < t.min_offset {
                return Err(refuse(
                    503,
                    format!(
                        "the log of {} reaches {} here, not {}",
                        t.collection.id, h.0, t.min_offset
                    ),
                ));
            }
        }
        let o = self.opened(&t)?;
        let mut v = View::open(&o.segment, &*self.log, lid, &o.tail).map_err(|e| refuse(503, e))?;
        let op = &plan["op"];
        let sel =
            |x: &Value| wire::selection_from_wire(&x["selection"]).map_err(|e| refuse(400, e));
        let inc = |x: &Value| -> Result<Include, Refusal> {
            wire::include_from_wire(&x["include"]).map_err(|e| refuse(400, e))
        };
        let failed = |e: indigo_segment::Error| refuse(503, e);
        if op.get("count").is_some() {
            return Ok(json!({"count": v.count().map_err(failed)?}));
        }
        if let Some(x) = op.get("ids") {
            return Ok(json!({"ids": v.ids(&sel(x)?).map_err(failed)?}));
        }
        if let Some(x) = op.get("get") {
            let limit = x["limit"].as_u64().map(|n| n as usize);
            let offset = x["offset"].as_u64().unwrap_or(0) as usize;
            let r = v.get(&sel(x)?, limit, offset, inc(x)?).map_err(failed)?;
            return Ok(wire::records_to_wire(&r));
        }
        if let Some(x) = op.get("query") {
            let qs = x["embeddings"]
                .as_array()
                .ok_or_else(|| refuse(400, "no embeddings"))?
                .iter()
                .map(|q| wire::vector_from_wire(q).map_err(|e| refuse(400, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let n = x["n_results"].as_u64().unwrap_or(10) as usize;
            let s = sel(x)?;
            if let Some(ids) = &s.ids {
                if let Some(id) = v.missing_id(ids).map_err(failed)? {
                    return Err(refuse(400, indigo::rules::missing_query_id(id)));
                }
            }
            let rs = v.query(&qs, n, &s, inc(x)?).map_err(failed)?;
            return Ok(
                json!({"results": rs.iter().map(wire::records_to_wire).collect::<Vec<_>>()}),
            );
        }
        if let Some(x) = op.get("sparse_query") {
            let key = x["key"].as_str().ok_or_else(|| refuse(400, "no key"))?;
            let vector = indigo::SparseVector::from_json("query", &x["vector"])
                .map_err(|e| refuse(400, e.0))?;
            // BM25 or not as the collection's schema declares the key.
            let bm25 = indigo::schema::sparse_keys(&t.collection.configuration["schema"])
                .into_iter()
                .find(|k| k.key == key)
                .is_some_and(|k| k.bm25);
            let n = x["n_results"].as_u64().unwrap_or(10) as usize;
            let s = sel(x)?;
            if let Some(ids) = &s.ids {
                if let Some(id) = v.missing_id(ids).map_err(failed)? {
                    return Err(refuse(400, indigo::rules::missing_query_id(id)));
                }
            }
            let r = v
                .query_sparse(key, &vector, bm25, n, &s, inc(x)?)
                .map_err(failed)?;
            return Ok(wire::records_to_wire(&r));
        }
        Err(refuse(400, format!("unknown read {op}")))
    }
}

async fn read(
    State(node): State<Arc<QueryNode>>,
    UrlPath(_id): UrlPath<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_protocol(&h) {
        return *r;
    }
    let plan: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(400, "InvalidArgumentError", e.to_string()),
    };
    match tokio::task::spawn_blocking(move || node.run(&plan)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err((status, name, message))) => {
            if status >= 500 {
                // The frontend tries another node; say here why this one could not.
                tracing::warn!(status, %message, "read refused");
            }
            reply(status, name, message)
        }
        Err(e) => reply(500, "InternalError", e.to_string()),
    }
}
