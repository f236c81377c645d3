//! `indigo serve`: one process of the distributed mode, running any of the roles
//! (frontend, log, query, compactor, gc) over the catalogue in PostgreSQL and the
//! log and index versions in S3-compatible storage. Every role holds a lease in
//! the catalogue while it runs, so the others find it.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use indigo_cluster::{Heartbeat, Members};
use indigo_health::Health;
use indigo_object::{Objects, Remote, S3Config};
use indigo_objlog::{ObjectLog, ObjectLogOptions};
use indigo_sysdb::{Member, PgSysDb, SysDb};
use serde_json::json;

use super::nodes::{LogNode, QueryNode};
use super::roles::{Compactor, Gc, RoleThread};
use super::ClusterDb;
use crate::backend::Db;
use crate::Settings;
use indigo_version::{GarbageCollector, GcPolicy};

pub const ROLES: [&str; 5] = ["frontend", "log", "query", "compactor", "gc"];

/// A running process: its address, and what stops it.
pub struct Running {
    pub address: std::net::SocketAddr,
    pub roles: Vec<String>,
    /// The process's member id (its leases are `<id>/<role>`).
    pub id: String,
    app: Option<Router>,
    listener: Option<tokio::net::TcpListener>,
    _heartbeats: Vec<Heartbeat>,
    _threads: Vec<RoleThread>,
    /// Its S3 client owns a runtime of its own: dropped outside async code.
    _objects: Arc<dyn Objects>,
}

impl Running {
    /// Serves until `shutdown` resolves. Drop the `Running` afterwards, outside
    /// the runtime: that ends every lease and stops the background roles.
    pub async fn serve(
        &mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let app = self.app.take().ok_or("serve once")?;
        let listener = self.listener.take().ok_or("serve once")?;
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| e.to_string())
    }
}

fn objects(s: &crate::settings::ClusterSettings) -> Result<Arc<dyn Objects>, String> {
    if s.s3_bucket.is_empty() {
        return Err("no S3 bucket: set s3_bucket (or INDIGO_S3_BUCKET)".into());
    }
    let r = Remote::s3(&S3Config {
        bucket: s.s3_bucket.clone(),
        endpoint: s.s3_endpoint.clone(),
        region: s.s3_region.clone(),
        prefix: s.s3_prefix.clone(),
    })
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(r))
}

/// Connects to the catalogue and the object store, binds the listen address,
/// takes the leases and starts the background roles; then [`Running::serve`] on
/// `rt`. Blocking: call it outside the runtime.
pub fn start(settings: Settings, rt: &tokio::runtime::Runtime) -> Result<Running, String> {
    let c = settings.cluster.clone();
    let roles: Vec<String> = c.roles.clone();
    if roles.is_empty() {
        return Err(format!(
            "no roles: pass --role (any of {})",
            ROLES.join(", ")
        ));
    }
    if let Some(bad) = roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
        return Err(format!(
            "unknown role {bad:?}: the roles are {}",
            ROLES.join(", ")
        ));
    }
    if c.catalogue.is_empty() {
        return Err(
            "no catalogue: set catalogue (or INDIGO_CATALOGUE) to a PostgreSQL connection".into(),
        );
    }
    let unspecified = settings
        .host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if c.advertise.is_none() && unspecified {
        return Err(format!(
            "listening on {}, which the other processes cannot dial: pass --advertise \
             HOST:PORT (an address they reach this one at)",
            settings.host
        ));
    }
    let has = |r: &str| roles.iter().any(|x| x == r);
    let health = Arc::new(Health::new());
    let sysdb: Arc<dyn SysDb> =
        Arc::new(PgSysDb::connect(&c.catalogue).map_err(|e| format!("catalogue: {e}"))?);
    // Counted: every process reports its object-store requests in /metrics.
    let counted = Arc::new(indigo_object::Counted::new(objects(&c)?));
    let object_stats = counted.stats.clone();
    let objects: Arc<dyn Objects> = counted;
    let addr = format!("{}:{}", settings.host, settings.port);
    let listener = std::net::TcpListener::bind(&addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| format!("cannot listen on {addr}: {e}; pass --port to use another"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = {
        let _g = rt.enter();
        tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?
    };
    let advertise = c.advertise.clone().unwrap_or_else(|| address.to_string());
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let lease = Duration::from_millis(c.lease_ms.max(300));
    let refresh = (lease / 3).max(Duration::from_millis(100));
    let log_opts = ObjectLogOptions {
        truncate_grace: Duration::from_secs(c.log_grace_secs),
        ..Default::default()
    };

    let mut app = Router::new();
    let mut cache = None;
    let mut threads = Vec::new();
    // A frontend forwards what it accepted: room for the largest request, in the
    // internal encoding.
    let body_limit = axum::extract::DefaultBodyLimit::max(settings.max_payload_bytes * 2);
    if has("log") {
        let log = Arc::new(ObjectLog::new(objects.clone(), log_opts.clone()));
        app = app.merge(Arc::new(LogNode::new(log)).routes().layer(body_limit));
    }
    if has("query") {
        let log = Arc::new(ObjectLog::new(objects.clone(), log_opts.clone()));
        let q = QueryNode::new(
            objects.clone(),
            log,
            &c.cache_dir,
            c.cache_bytes,
            health.clone(),
        )
        .map_err(|e| format!("cache in {}: {e}", c.cache_dir.display()))?;
        cache = Some(q.cache.clone());
        app = app.merge(Arc::new(q).routes().layer(body_limit));
    }
    if has("frontend") {
        let members = |role| Members::from_leases(sysdb.clone(), role, refresh);
        let db = ClusterDb::new(
            sysdb.clone(),
            members("log"),
            members("query"),
            settings.limits(),
            Duration::from_secs(settings.request_timeout_secs.max(1)),
            health.clone(),
        )
        .with_default_index(settings.default_index()?)
        .with_backlog(settings.backlog())
        .with_forks(Arc::new(ObjectLog::new(objects.clone(), log_opts.clone())));
        app = app.merge(crate::router_for(
            Db::Cluster(Arc::new(db)),
            settings.clone(),
        ));
    }
    if has("compactor") {
        let log = Arc::new(ObjectLog::new(objects.clone(), log_opts.clone()));
        let versions = indigo_version::VersionCompactor::new(
            objects.clone(),
            log.clone(),
            sysdb.clone(),
            &c.work_dir,
            health.clone(),
        );
        let compactor = Compactor {
            me: format!("{id}/compactor"),
            members: Members::from_leases(sysdb.clone(), "compactor", refresh),
            sysdb: sysdb.clone(),
            log,
            versions,
            health: health.clone(),
        };
        threads.push(compactor.start(Duration::from_millis(c.compact_interval_ms.max(10))));
    }
    if has("gc") {
        let gc = Gc(GarbageCollector::new(
            objects.clone(),
            sysdb.clone(),
            Arc::new(ObjectLog::new(objects.clone(), log_opts.clone())),
            GcPolicy {
                keep_versions: c.gc_keep_versions.max(1),
                keep_window: Duration::from_secs(c.gc_keep_window_secs),
                grace: Duration::from_secs(c.gc_grace_secs),
            },
            health.clone(),
        ));
        threads.push(gc.start(Duration::from_millis(c.gc_interval_ms.max(10))));
    }
    // Every process answers for itself: its failures and what it holds. A
    // frontend's /metrics is the API's; other processes serve theirs.
    let node = Arc::new(NodeStatus {
        roles: roles.clone(),
        health: health.clone(),
        cache,
        objects: object_stats,
    });
    app = app.route(
        "/internal/v1/health",
        get({
            let node = node.clone();
            move || async move { node.health() }
        }),
    );
    if !has("frontend") {
        app = app.route("/metrics", get(move || async move { node.metrics() }));
    }
    // Leases last: the process is routable once it serves.
    let mut heartbeats = Vec::new();
    for role in &roles {
        let m = Member {
            id: format!("{id}/{role}"),
            role: role.clone(),
            address: advertise.clone(),
            lease_until_ms: 0,
        };
        let hb = Heartbeat::start(sysdb.clone(), m, lease, health.clone())
            .map_err(|e| format!("catalogue: {e}"))?;
        heartbeats.push(hb);
    }
    Ok(Running {
        address,
        roles,
        id,
        app: Some(app),
        listener: Some(listener),
        _heartbeats: heartbeats,
        _threads: threads,
        _objects: objects,
    })
}

/// What a process reports about itself.
struct NodeStatus {
    roles: Vec<String>,
    health: Arc<Health>,
    cache: Option<Arc<indigo_version::Cache>>,
    objects: Arc<indigo_object::Stats>,
}

impl NodeStatus {
    /// 200 while nothing fails; 503 with each standing failure otherwise.
    fn health(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let failures: Vec<serde_json::Value> = self
            .health
            .failures()
            .iter()
            .map(|f| {
                json!({"component": f.component, "subject": f.subject, "error": f.error,
                            "attempts": f.attempts})
            })
            .collect();
        let o = self.objects.snapshot();
        let mut body = json!({"roles": self.roles, "failures": failures,
            "objects": {"gets": o.gets, "puts": o.puts, "heads": o.heads, "lists": o.lists,
                        "deletes": o.deletes, "bytes_got": o.bytes_got, "bytes_put": o.bytes_put}});
        if let Some(c) = &self.cache {
            let s = c.stats();
            body["cache"] = json!({"bytes": s.bytes, "budget": s.budget, "hits": s.hits,
                                   "misses": s.misses, "evictions": s.evictions});
        }
        let status = if failures.is_empty() {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(body)).into_response()
    }

    fn metrics(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        use std::fmt::Write;
        let mut t = String::new();
        t.push_str(
            "# HELP indigo_background_errors_total Failed attempts of background work, by component.\n\
             # TYPE indigo_background_errors_total counter\n",
        );
        for (c, n) in self.health.errors_total() {
            let _ = writeln!(t, "indigo_background_errors_total{{component=\"{c}\"}} {n}");
        }
        let failing = self.health.failures().len();
        let _ = writeln!(
            t,
            "# TYPE indigo_background_failing gauge\nindigo_background_failing {failing}"
        );
        let o = self.objects.snapshot();
        let _ = writeln!(
            t,
            "# HELP indigo_object_requests_total Requests to the object store, by operation.\n\
             # TYPE indigo_object_requests_total counter"
        );
        for (op, n) in [
            ("get", o.gets),
            ("put", o.puts),
            ("head", o.heads),
            ("list", o.lists),
            ("delete", o.deletes),
        ] {
            let _ = writeln!(t, "indigo_object_requests_total{{op=\"{op}\"}} {n}");
        }
        let _ = writeln!(
            t,
            "# TYPE indigo_object_bytes_total counter\n\
             indigo_object_bytes_total{{direction=\"in\"}} {}\n\
             indigo_object_bytes_total{{direction=\"out\"}} {}",
            o.bytes_got, o.bytes_put
        );
        if let Some(c) = &self.cache {
            let s = c.stats();
            for (name, kind, v) in [
                ("indigo_cache_bytes", "gauge", s.bytes),
                ("indigo_cache_budget_bytes", "gauge", s.budget),
                ("indigo_cache_hits_total", "counter", s.hits),
                ("indigo_cache_misses_total", "counter", s.misses),
                ("indigo_cache_fetched_bytes_total", "counter", s.bytes_in),
                ("indigo_cache_evictions_total", "counter", s.evictions),
            ] {
                let _ = writeln!(t, "# TYPE {name} {kind}\n{name} {v}");
            }
        }
        ([("content-type", "text/plain; version=0.0.4")], t).into_response()
    }
}
