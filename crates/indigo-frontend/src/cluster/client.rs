//! The frontend's side of a cluster: the catalogue straight from PostgreSQL,
//! writes to the log node and reads to the query node that rendezvous hashing
//! picks for the collection (the next one if it does not answer). Requests are
//! checked here, with the same rules as a single node, before they are routed.
//!
//! Retries never turn an ambiguous write into a duplicate or a loss: a write is
//! sent to the next log node only if the previous one surely did not take it
//! (the connection was refused, or it answered that it was fenced, which means
//! nothing was written); when the outcome is unknown the client is told so.
//! Reads are repeatable and go to the next query node on any failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use indigo::rules;
use indigo::{
    CollectionConfig, CollectionInfo, Database, Error, Failure, GetRequest, Limits, QueryRequest,
    RecordOp, Records, Result, Selection, WriteKind,
};
use indigo_cluster::Members;
use indigo_health::Health;
use indigo_sysdb::{CollectionUpdate, NewCollection, SysDb, SysDbError};
use serde_json::{json, Value};

use super::wire::{self, Target};

/// How a frontend reaches the rest of the cluster.
pub struct ClusterDb {
    pub(crate) sysdb: Arc<dyn SysDb>,
    logs: Members,
    queries: Members,
    limits: Limits,
    agent: ureq::Agent,
    health: Arc<Health>,
    default_index: indigo::schema::VectorIndexKind,
    /// The object-store log, to seed forks' logs (`None`: forks are refused).
    fork_log: Option<Arc<indigo_objlog::ObjectLog>>,
    /// The bound on each collection's unindexed record operations (`None`:
    /// writes never wait). See [`ClusterDb::admit`].
    backlog: Option<indigo::BacklogLimit>,
    /// Per collection, what this frontend knows of the backlog.
    backlog_seen: Mutex<HashMap<String, Seen>>,
    /// Signalled when the line moves, an answer comes or a write is done.
    backlog_turn: parking_lot::Condvar,
}

/// One collection's backlog as a frontend sees it (see [`ClusterDb::admit`]).
#[derive(Default)]
struct Seen {
    /// The log node's last answer (operations after the current version), and when.
    answer: Option<(u64, Instant)>,
    /// The version offset and backlog of the last answer, and when indexing
    /// last made headway (a new version, or a smaller backlog).
    last: Option<(u64, u64)>,
    headway_at: Option<Instant>,
    /// Operations this frontend appended since that answer, and admitted
    /// but not yet appended: both on top of it.
    appended: u64,
    in_flight: u64,
    /// Writers waiting their turn, admitted in this order: a write larger
    /// than the bound waits for the backlog to empty, and small ones must
    /// not keep it from ever doing so.
    waiting: std::collections::BTreeSet<u64>,
    next_ticket: u64,
}

impl Seen {
    fn estimate(&self) -> u64 {
        self.answer.map_or(0, |a| a.0) + self.appended + self.in_flight
    }
}

/// A write admitted by [`ClusterDb::admit`]: counted as in flight until it
/// is dropped, then as appended if its append was tried (its outcome may be
/// unknown).
struct Admitted<'a> {
    db: &'a ClusterDb,
    id: String,
    ops: u64,
    tried: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.db.backlog_seen.lock().get_mut(&self.id) {
            s.in_flight -= self.ops;
            if self.tried {
                s.appended += self.ops;
            }
        }
        self.db.backlog_turn.notify_all();
    }
}

/// A fork copies at most this much of its source's log not yet folded into a
/// version (the compactor keeps it far smaller; past it, it is behind).
const FORK_MAX_TAIL_BYTES: u64 = 64 << 20;

fn sys(e: SysDbError) -> Error {
    e.into()
}

/// What one attempt at a member gave.
enum Attempt<T> {
    Done(T),
    /// It surely did not act (connection refused, fenced): the next may.
    Next(String),
    /// It may have acted, or it refused for good: stop here.
    Stop(Error),
}

impl ClusterDb {
    pub fn new(
        sysdb: Arc<dyn SysDb>,
        logs: Members,
        queries: Members,
        limits: Limits,
        timeout: Duration,
        health: Arc<Health>,
    ) -> ClusterDb {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(timeout)
            .max_idle_connections_per_host(16)
            .build();
        ClusterDb {
            sysdb,
            logs,
            queries,
            limits,
            agent,
            health,
            default_index: Default::default(),
            fork_log: None,
            backlog: None,
            backlog_seen: Mutex::new(HashMap::new()),
            backlog_turn: parking_lot::Condvar::new(),
        }
    }

    /// Holds writes to the bound on each collection's unindexed record
    /// operations (the `records` part of the limit; its `bytes` are a single
    /// node's).
    pub fn with_backlog(mut self, limit: indigo::BacklogLimit) -> Self {
        self.backlog = Some(limit);
        self
    }

    /// The offset of `id`'s current index version and the record operations
    /// logged after it, from its log node.
    fn unindexed(&self, id: &str) -> Result<(u64, u64)> {
        let from = self
            .sysdb
            .latest_index_version(id)
            .map_err(sys)?
            .map_or(0, |v| v.log_offset);
        Ok((from, self.head_and_ops(id, Some(from))?.1))
    }

    /// Backpressure: a write of `ops` record operations waits while the
    /// collection's backlog (logged, not yet in an index version) would pass
    /// the bound, unless the backlog is empty, and is refused (429) once
    /// indexing has made no headway (no new version, no smaller backlog) for
    /// the limit's `wait` since the write arrived. Writers through one
    /// frontend are admitted in arrival order, and what it admitted counts
    /// against the bound until the log node's next answer includes it.
    ///
    /// The log node is asked unless its last answer is fresh: under 100 ms
    /// old (then up to the bound) or under a second and the estimate under
    /// half the bound. Writes through other frontends show only in answers,
    /// so with F frontends the backlog can pass the bound by up to about F
    /// halves of it. If the backlog cannot be measured (log node or catalogue
    /// unreachable), the write goes ahead: its append fails or succeeds on
    /// its own.
    fn admit(&self, id: &str, ops: u64) -> Result<Option<Admitted<'_>>> {
        let Some(limit) = self.backlog else {
            return Ok(None);
        };
        let arrived = Instant::now();
        let ticket = {
            let mut m = self.backlog_seen.lock();
            if m.len() > 10_000 {
                m.retain(|_, s| s.in_flight > 0 || !s.waiting.is_empty());
            }
            let s = m.entry(id.to_string()).or_default();
            s.next_ticket += 1;
            s.waiting.insert(s.next_ticket);
            s.next_ticket
        };
        // Leaves the line however this ends.
        struct InLine<'a>(&'a ClusterDb, &'a str, u64);
        impl Drop for InLine<'_> {
            fn drop(&mut self) {
                if let Some(s) = self.0.backlog_seen.lock().get_mut(self.1) {
                    s.waiting.remove(&self.2);
                }
                self.0.backlog_turn.notify_all();
            }
        }
        let _line = InLine(self, id, ticket);
        let admitted = |s: &mut Seen| {
            s.in_flight += ops;
            Ok(Some(Admitted {
                db: self,
                id: id.to_string(),
                ops,
                tried: false,
            }))
        };
        let refused = |est: u64| {
            Err(Error::Backlog(format!(
                "collection {id} has {est} record operations waiting to be indexed, over its \
                 bound of {}, and indexing made no headway for {:?}; check /api/v2/healthcheck \
                 (is a compactor running?) and retry later",
                limit.records, limit.wait
            )))
        };
        let mut pause = Duration::from_millis(20);
        let mut m = self.backlog_seen.lock();
        loop {
            let s = m.entry(id.to_string()).or_default();
            let stalled_since = s.headway_at.map_or(arrived, |h| h.max(arrived));
            if *s.waiting.first().unwrap_or(&ticket) != ticket {
                // Behind another writer: wait for the line to move.
                if stalled_since.elapsed() >= limit.wait {
                    return refused(s.estimate());
                }
                self.backlog_turn
                    .wait_for(&mut m, Duration::from_millis(50));
                continue;
            }
            let est = s.estimate();
            let age = s.answer.map(|a| a.1.elapsed());
            let room = |bound: u64| est == 0 || est + ops <= bound;
            match age {
                Some(a) if a < Duration::from_millis(100) && room(limit.records) => {
                    return admitted(s)
                }
                Some(a) if a < Duration::from_secs(1) && room(limit.records / 2) => {
                    return admitted(s)
                }
                _ => {}
            }
            // Ask the log node, without the lock. Appends counted before
            // the question may be in the answer too: they leave `appended`
            // when it comes (counting later ones twice errs on the safe side).
            let before = s.appended;
            let answer = MutexGuard::unlocked(&mut m, || self.unindexed(id));
            let s = m.entry(id.to_string()).or_default();
            let Ok((folded, pending)) = answer else {
                return admitted(s);
            };
            s.answer = Some((pending, Instant::now()));
            s.appended -= before.min(s.appended);
            let moved = match s.last {
                Some((f, p)) => folded > f || pending < p,
                None => true,
            };
            if moved {
                s.headway_at = Some(Instant::now());
            }
            s.last = Some((folded, pending));
            self.backlog_turn.notify_all();
            let est = s.estimate();
            if est == 0 || est + ops <= limit.records {
                return admitted(s);
            }
            let stalled_since = s.headway_at.map_or(arrived, |h| h.max(arrived));
            if stalled_since.elapsed() >= limit.wait {
                return refused(est);
            }
            self.backlog_turn.wait_for(&mut m, pause);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The vector index new collections report when they name none.
    pub fn with_default_index(mut self, kind: indigo::schema::VectorIndexKind) -> Self {
        self.default_index = kind;
        self
    }

    /// Serves forks, seeding their logs through `log`.
    pub fn with_forks(mut self, log: Arc<indigo_objlog::ObjectLog>) -> Self {
        self.fork_log = Some(log);
        self
    }

    /// A copy-on-write fork of collection `id` named `new_name` (see
    /// `indigo_version::fork_collection`); `None` where forks are not served.
    pub fn fork_collection(&self, id: &str, new_name: &str) -> Option<Result<CollectionInfo>> {
        let log = self.fork_log.as_ref()?;
        Some((|| {
            rules::check_collection_name(new_name)?;
            let forked = indigo_version::fork_collection(
                &*self.sysdb,
                log,
                id,
                new_name,
                FORK_MAX_TAIL_BYTES,
            )
            .map_err(|e| match e {
                indigo_version::ForkError::SysDb(e) => sys(e),
                e => Error::Unavailable(format!("{e}")),
            })?;
            Ok(forked.collection)
        })())
    }

    pub fn fork_count(&self, id: &str) -> Result<u64> {
        self.sysdb.get_collection_by_id(id).map_err(sys)?;
        self.sysdb.fork_count(id).map_err(sys)
    }

    fn handle(self: &Arc<Self>, info: indigo_sysdb::Collection) -> RemoteCollection {
        RemoteCollection {
            info,
            db: self.clone(),
        }
    }

    pub fn failures(&self) -> Vec<Failure> {
        let mut f = self.health.failures();
        for (role, members) in [("log", &self.logs), ("query", &self.queries)] {
            if members.live().is_empty() {
                f.push(Failure {
                    component: "cluster",
                    subject: role.to_string(),
                    error: format!("no live {role} node"),
                    since: std::time::SystemTime::now(),
                    attempts: 1,
                });
            }
        }
        f
    }

    pub fn background_errors_total(&self) -> Vec<(&'static str, u64)> {
        self.health.errors_total()
    }

    pub fn gauges(&self) -> Vec<(String, f64)> {
        vec![
            (
                "indigo_cluster_log_nodes".into(),
                self.logs.live().len() as f64,
            ),
            (
                "indigo_cluster_query_nodes".into(),
                self.queries.live().len() as f64,
            ),
        ]
    }

    pub fn reset(&self) -> Result<()> {
        for c in self.sysdb.all_collections().map_err(sys)? {
            self.sysdb
                .delete_collection(&c.tenant, &c.database, &c.name)
                .map_err(sys)?;
        }
        self.sysdb.reset().map_err(sys)
    }

    pub fn create_tenant(&self, name: &str) -> Result<()> {
        rules::check_tenant_name(name)?;
        self.sysdb.create_tenant(name).map_err(sys)
    }

    pub fn get_tenant(&self, name: &str) -> Result<()> {
        if self.sysdb.tenant_exists(name).map_err(sys)? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("Tenant [{name}] not found")))
        }
    }

    pub fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        rules::check_database_name(name)?;
        self.sysdb.create_database(tenant, name).map_err(sys)
    }

    pub fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        self.sysdb.get_database(tenant, name).map_err(sys)
    }

    pub fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        self.sysdb
            .list_databases(tenant, limit, offset)
            .map_err(sys)
    }

    pub fn delete_database(&self, tenant: &str, name: &str) -> Result<()> {
        for c in self
            .sysdb
            .list_collections(tenant, name, None, 0)
            .map_err(sys)?
        {
            self.delete_collection(tenant, name, &c.name)?;
        }
        self.sysdb.delete_database(tenant, name).map_err(sys)
    }

    pub fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<CollectionInfo>> {
        self.sysdb
            .list_collections(tenant, database, limit, offset)
            .map_err(sys)
    }

    pub fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        self.sysdb.count_collections(tenant, database).map_err(sys)
    }

    pub fn create_collection(
        self: &Arc<Self>,
        tenant: &str,
        database: &str,
        name: &str,
        metadata: Option<Value>,
        configuration: Option<Value>,
        get_or_create: bool,
    ) -> Result<RemoteCollection> {
        rules::check_collection_name(name)?;
        if let Some(m) = &metadata {
            rules::check_collection_metadata(m)?;
        }
        let config = CollectionConfig::from_create(
            configuration.as_ref(),
            metadata.as_ref(),
            self.default_index,
        )?;
        config.check_limits(&self.limits)?;
        let (info, _) = self
            .sysdb
            .create_collection(NewCollection {
                tenant,
                database,
                name,
                metadata,
                configuration: config.to_json(),
                get_or_create,
                id: None,
            })
            .map_err(sys)?;
        Ok(self.handle(info))
    }

    pub fn get_collection(
        self: &Arc<Self>,
        tenant: &str,
        database: &str,
        name: &str,
    ) -> Result<RemoteCollection> {
        let info = self
            .sysdb
            .get_collection(tenant, database, name)
            .map_err(sys)?;
        Ok(self.handle(info))
    }

    pub fn get_collection_by_id(self: &Arc<Self>, id: &str) -> Result<RemoteCollection> {
        let info = self.sysdb.get_collection_by_id(id).map_err(sys)?;
        Ok(self.handle(info))
    }

    pub fn modify_collection(
        &self,
        id: &str,
        new_name: Option<String>,
        new_metadata: Option<Value>,
        new_configuration: Option<Value>,
    ) -> Result<CollectionInfo> {
        if let Some(n) = &new_name {
            rules::check_collection_name(n)?;
        }
        if let Some(m) = &new_metadata {
            rules::check_collection_metadata(m)?;
        }
        let current = self.sysdb.get_collection_by_id(id).map_err(sys)?;
        let mut config = CollectionConfig::from_stored(&current.configuration)?;
        if let Some(c) = &new_configuration {
            config.apply(c, false)?;
            config.check_limits(&self.limits)?;
        }
        self.sysdb
            .update_collection(
                id,
                CollectionUpdate {
                    name: new_name,
                    metadata: new_metadata,
                    configuration: new_configuration.is_some().then(|| config.to_json()),
                },
            )
            .map_err(sys)
    }

    /// The catalogue entry goes now; the collection's objects and log go with
    /// the garbage collector, after its grace period.
    pub fn delete_collection(&self, tenant: &str, database: &str, name: &str) -> Result<()> {
        self.sysdb
            .delete_collection(tenant, database, name)
            .map_err(sys)?;
        Ok(())
    }

    /// Tries `f` on each member in preference order until one acts.
    fn route<T>(
        &self,
        members: &Members,
        role: &str,
        key: &str,
        mut f: impl FnMut(&str) -> Attempt<T>,
    ) -> Result<T> {
        let mut why = Vec::new();
        for attempt in 0..2 {
            let ranked = members.ranked(key);
            if ranked.is_empty() {
                why.push(format!("no live {role} node"));
            }
            for m in &ranked {
                match f(&m.address) {
                    Attempt::Done(t) => return Ok(t),
                    Attempt::Stop(e) => return Err(e),
                    Attempt::Next(w) => why.push(format!("{} ({}): {w}", m.id, m.address)),
                }
            }
            if attempt == 0 {
                // The list may be stale: read the leases again, once.
                members.invalidate();
            }
        }
        Err(Error::Unavailable(format!(
            "no {role} node could serve collection {key}: {}; retry later",
            why.join("; ")
        )))
    }

    /// Appends a write to the collection's log through its log node.
    fn append(&self, collection: &str, body: &[u8]) -> Result<u64> {
        self.route(&self.logs, "log", collection, |addr| {
            let url = format!("http://{addr}/internal/v1/log/{collection}/append");
            let mut fenced = 0;
            loop {
                let r = self
                    .agent
                    .post(&url)
                    .set(wire::HEADER, wire::PROTOCOL)
                    .set("content-type", "application/octet-stream")
                    .send_bytes(body);
                return match r {
                    Ok(resp) => match resp.into_json::<Value>() {
                        Ok(v) => match v["offset"].as_u64() {
                            Some(o) => Attempt::Done(o),
                            None => Attempt::Stop(Error::Unavailable(format!(
                                "log node {addr} answered without an offset; the write's \
                                 outcome is unknown"
                            ))),
                        },
                        Err(e) => Attempt::Stop(Error::Unavailable(format!(
                            "log node {addr}'s answer was lost ({e}); the write's outcome is \
                             unknown: read before writing again"
                        ))),
                    },
                    // Fenced: another writer took the log; nothing was written.
                    Err(ureq::Error::Status(409, _)) if fenced < 3 => {
                        fenced += 1;
                        continue;
                    }
                    Err(ureq::Error::Status(409, resp)) => Attempt::Next(error_message(resp)),
                    Err(ureq::Error::Status(code, resp)) => {
                        Attempt::Stop(status_error(code, error_message(resp)))
                    }
                    Err(ureq::Error::Transport(t))
                        if t.kind() == ureq::ErrorKind::ConnectionFailed =>
                    {
                        Attempt::Next(t.to_string())
                    }
                    Err(ureq::Error::Transport(t)) => Attempt::Stop(Error::Unavailable(format!(
                        "log node {addr} did not answer ({t}); the write's outcome is unknown: \
                         read before writing again"
                    ))),
                };
            }
        })
    }

    /// The newest acknowledged offset of a collection's log, from its log node.
    fn head(&self, collection: &str) -> Result<u64> {
        Ok(self.head_and_ops(collection, None)?.0)
    }

    /// The head, and with `ops_after` the record operations logged after that
    /// offset (the log node counts them from the entries' headers).
    fn head_and_ops(&self, collection: &str, ops_after: Option<u64>) -> Result<(u64, u64)> {
        self.route(&self.logs, "log", collection, |addr| {
            let mut url = format!("http://{addr}/internal/v1/log/{collection}/head");
            if let Some(a) = ops_after {
                url.push_str(&format!("?ops_after={a}"));
            }
            match self
                .agent
                .get(&url)
                .set(wire::HEADER, wire::PROTOCOL)
                .call()
            {
                Ok(resp) => match resp.into_json::<Value>().ok() {
                    Some(v) => match (v["head"].as_u64(), v["ops"].as_u64()) {
                        (Some(h), ops) if ops.is_some() || ops_after.is_none() => {
                            Attempt::Done((h, ops.unwrap_or(0)))
                        }
                        _ => Attempt::Next("a bad answer".into()),
                    },
                    None => Attempt::Next("a bad answer".into()),
                },
                Err(ureq::Error::Status(code, resp)) if code < 500 => {
                    Attempt::Stop(status_error(code, error_message(resp)))
                }
                Err(e) => Attempt::Next(e.to_string()),
            }
        })
    }

    /// Runs a read plan on the collection's query node.
    fn read(&self, target: &Target, op: Value) -> Result<Value> {
        let mut plan = wire::target_to_wire(target);
        plan["op"] = op;
        let body = plan.to_string();
        let id = &target.collection.id;
        self.route(&self.queries, "query", id, |addr| {
            let url = format!("http://{addr}/internal/v1/query/{id}");
            match self
                .agent
                .post(&url)
                .set(wire::HEADER, wire::PROTOCOL)
                .set("content-type", "application/json")
                .send_string(&body)
            {
                Ok(resp) => match resp.into_json::<Value>() {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => Attempt::Next(e.to_string()),
                },
                Err(ureq::Error::Status(code, resp)) if code < 500 => {
                    Attempt::Stop(status_error(code, error_message(resp)))
                }
                // Reads are repeatable: any other failure moves to the next node.
                Err(ureq::Error::Status(code, resp)) => {
                    Attempt::Next(format!("{code}: {}", error_message(resp)))
                }
                Err(e) => Attempt::Next(e.to_string()),
            }
        })
    }
}

/// The message of an internal node's error answer (Chroma's error JSON), or
/// what it sent instead.
fn error_message(resp: ureq::Response) -> String {
    let (code, url) = (resp.status(), resp.get_url().to_string());
    let text = resp.into_string().unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["message"].is_string() => v["message"].as_str().unwrap_or("").to_string(),
        _ => format!(
            "{url} answered {code}: {}",
            text.chars().take(200).collect::<String>()
        ),
    }
}

/// An internal node's error answer, as the core's error (so the gateway answers
/// the client with the same status and name as a single node would).
fn status_error(code: u16, message: String) -> Error {
    match code {
        400 => Error::InvalidArgument(message),
        404 => Error::NotFound(message),
        409 => Error::AlreadyExists(message),
        429 | 503 => Error::Unavailable(message),
        _ => Error::Storage(message),
    }
}

/// A collection of a cluster, as a frontend serves it.
#[derive(Clone)]
pub struct RemoteCollection {
    info: indigo_sysdb::Collection,
    db: Arc<ClusterDb>,
}

impl RemoteCollection {
    pub fn info(&self) -> &CollectionInfo {
        &self.info
    }

    pub fn limits(&self) -> &Limits {
        &self.db.limits
    }

    pub fn write(&self, kind: WriteKind, records: Vec<RecordOp>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (entry, dim) = rules::prepare_write(kind, records, &self.db.limits)?;
        if let (Some(dim), Some(d)) = (dim, self.info.dimension) {
            if d != dim {
                return Err(Error::DimensionMismatch {
                    expected: d,
                    got: dim,
                });
            }
        }
        // Before anything changes: a refused write changes nothing.
        let mut admitted = self.db.admit(&self.info.id, entry.records.len() as u64)?;
        if let Some(dim) = dim {
            match self.info.dimension {
                Some(_) => {}
                None => match self.db.sysdb.set_dimension(&self.info.id, dim) {
                    Ok(()) => {}
                    Err(SysDbError::InvalidArgument(_)) => {
                        let now = self
                            .db
                            .sysdb
                            .get_collection_by_id(&self.info.id)
                            .map_err(sys)?;
                        return Err(Error::DimensionMismatch {
                            expected: now.dimension.unwrap_or(0),
                            got: dim,
                        });
                    }
                    Err(e) => return Err(e.into()),
                },
            }
        }
        // Keys written for the first time join the schema before the write is
        // acknowledged (Chroma lists every key its compactor has seen).
        let keys = indigo::schema::new_keys(&self.info.configuration["schema"], &entry.records);
        if !keys.is_empty() {
            self.db
                .sysdb
                .discover_keys(&self.info.id, &keys)
                .map_err(sys)?;
        }
        if let Some(a) = &mut admitted {
            a.tried = true;
        }
        self.db.append(&self.info.id, &entry.encode())?;
        drop(admitted);
        Ok(())
    }

    /// What a read must cover: the current version and the log's head now.
    fn target(&self) -> Result<Target> {
        let version = self
            .db
            .sysdb
            .latest_index_version(&self.info.id)
            .map_err(sys)?
            .and_then(|v| Some((v.version, v.location["key"].as_str()?.to_string())));
        let mut info = self.info.clone();
        if info.dimension.is_none() {
            // Fixed by a write since this handle was made?
            info = self.db.sysdb.get_collection_by_id(&info.id).map_err(sys)?;
        }
        Ok(Target {
            collection: info,
            version,
            min_offset: self.db.head(&self.info.id)?,
        })
    }

    pub fn count(&self) -> Result<u64> {
        let v = self.db.read(&self.target()?, json!({"count": {}}))?;
        v["count"]
            .as_u64()
            .ok_or_else(|| Error::Storage("a query node answered count without a number".into()))
    }

    pub fn get(&self, req: &GetRequest) -> Result<Records> {
        rules::check_ids(&req.selection, &self.db.limits)?;
        let op = json!({"get": {
            "selection": wire::selection_to_wire(&req.selection),
            "limit": req.limit, "offset": req.offset,
            "include": wire::include_to_wire(req.include),
        }});
        let v = self.db.read(&self.target()?, op)?;
        wire::records_from_wire(&v).map_err(Error::Storage)
    }

    pub fn query(&self, req: &QueryRequest) -> Result<Vec<Records>> {
        let target = self.target()?;
        let dim = target.collection.dimension.unwrap_or(0);
        if let Some(answer) = rules::check_query(req, &self.db.limits, dim)? {
            return Ok(answer);
        }
        let op = json!({"query": {
            "embeddings": req.embeddings.iter().map(|e| wire::vector_to_wire(e)).collect::<Vec<_>>(),
            "n_results": req.n_results,
            "selection": wire::selection_to_wire(&req.selection),
            "include": wire::include_to_wire(req.include),
        }});
        let v = self.db.read(&target, op)?;
        v["results"]
            .as_array()
            .ok_or_else(|| Error::Storage("a query node answered without results".into()))?
            .iter()
            .map(|r| wire::records_from_wire(r).map_err(Error::Storage))
            .collect()
    }

    pub fn query_sparse(&self, req: &indigo::SparseQueryRequest) -> Result<Records> {
        let target = self.target()?;
        indigo::rules::check_sparse_query(
            req,
            &target.collection.configuration["schema"],
            &self.db.limits,
        )?;
        let op = json!({"sparse_query": {
            "key": req.key,
            "vector": req.vector.to_json(),
            "n_results": req.n_results,
            "selection": wire::selection_to_wire(&req.selection),
            "include": wire::include_to_wire(req.include),
        }});
        let v = self.db.read(&target, op)?;
        wire::records_from_wire(&v).map_err(Error::Storage)
    }

    pub fn delete(&self, sel: &Selection, limit: Option<u32>) -> Result<u64> {
        rules::check_delete(sel, limit, &self.db.limits)?;
        let v = self.db.read(
            &self.target()?,
            json!({"ids": {"selection": wire::selection_to_wire(sel)}}),
        )?;
        let existing: Vec<String> = v["ids"]
            .as_array()
            .ok_or_else(|| Error::Storage("a query node answered without ids".into()))?
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        let mut existing = existing;
        rules::truncate_to_limit(&mut existing, limit);
        self.write(WriteKind::Delete, rules::delete_ops(sel, &existing))?;
        Ok(existing.len() as u64)
    }

    /// (folded into the current version, logged).
    pub fn indexing_status(&self) -> Result<(u64, u64)> {
        let sysdb = &self.db.sysdb;
        let mut latest = sysdb.latest_index_version(&self.info.id).map_err(sys)?;
        loop {
            let (from, indexed) = latest.as_ref().map_or((0, 0), |v| (v.log_offset, v.ops()));
            let (_, pending) = self.db.head_and_ops(&self.info.id, Some(from))?;
            // A version committed meanwhile may have let the log drop entries
            // counted from: count again from it.
            let now = sysdb.latest_index_version(&self.info.id).map_err(sys)?;
            if now.as_ref().map(|v| v.version) == latest.as_ref().map(|v| v.version) {
                return Ok((indexed, indexed + pending));
            }
            latest = now;
        }
    }
}
