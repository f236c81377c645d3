//! Indigo's gateway: Chroma's HTTP API v2 over the embedded core, so the official
//! `chromadb` clients work unchanged. Every request is authenticated (static
//! tokens, when configured), rate-limited, validated and checked against quotas
//! here, before it reaches the log; errors are Chroma's `{"error","message"}` JSON.

pub mod backend;
pub mod cluster;
pub mod gateway;
pub mod openapi;
mod search;
pub mod settings;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use backend::{Coll, Db};
use base64::Engine;
use indigo::{
    Error as CoreError, GetRequest, Include, Indigo, QueryRequest, RecordOp, Records, Selection,
    WriteKind,
};
use indigo_types::metadata::metadata_from_json;
use indigo_types::{DocFilter, Where};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use gateway::{Identity, Metrics, RateLimiter};
pub use settings::Settings;

/// An error answered as `{"error": name, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub name: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, name: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            name,
            message: message.into(),
        }
    }
    pub fn invalid(m: impl Into<String>) -> ApiError {
        Self::new(400, "InvalidArgumentError", m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        Self::new(404, "NotFoundError", m)
    }
    pub fn unauthenticated(m: impl Into<String>) -> ApiError {
        Self::new(401, "AuthError", m)
    }
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        Self::new(403, "AuthorizationError", m)
    }
    pub fn rate_limited(m: impl Into<String>) -> ApiError {
        Self::new(429, "RateLimitError", m)
    }
    pub fn quota(m: impl Into<String>) -> ApiError {
        Self::new(400, "QuotaError", m)
    }
    fn unsupported(m: impl Into<String>) -> ApiError {
        Self::new(501, "InternalError", m)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidArgument(m) => ApiError::invalid(m),
            CoreError::NotFound(m) => ApiError::not_found(m),
            CoreError::AlreadyExists(m) => ApiError::new(409, "UniqueConstraintError", m),
            e @ CoreError::DimensionMismatch { .. } => ApiError::invalid(e.to_string()),
            CoreError::Unavailable(m) => ApiError::new(503, "InternalError", m),
            CoreError::Quota(m) => ApiError::quota(m),
            CoreError::Backlog(m) => ApiError::rate_limited(m),
            e => ApiError::new(500, "InternalError", e.to_string()),
        }
    }
}

impl From<indigo::InvalidArgument> for ApiError {
    fn from(e: indigo::InvalidArgument) -> Self {
        ApiError::invalid(e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"error": self.name, "message": self.message})),
        )
            .into_response()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// What every handler shares.
pub struct AppState {
    pub db: Db,
    pub settings: Settings,
    limits: indigo::Limits,
    limiter: RateLimiter,
    /// Failed authentications per client address.
    auth_failures: RateLimiter,
    in_flight: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
}

type St = State<Arc<AppState>>;

tokio::task_local! {
    /// Set by an embedding that polls a request on a thread of its own (the
    /// Python binding, for reads): core work runs right there rather than on
    /// tokio's blocking pool, which costs two thread wake-ups per request.
    pub static INLINE: bool;
}

/// Runs core work off the async threads (it may wait for an fsync), or in
/// place under [`INLINE`].
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> ApiResult<T> {
    if INLINE.try_with(|i| *i).unwrap_or(false) {
        return tokio::task::block_in_place(f);
    }
    tokio::task::spawn_blocking(|| {
        let r = f();
        // Blocking threads never park; a write's buffers are megabytes.
        indigo_health::trim_now_and_then();
        r
    })
    .await
    .map_err(|e| ApiError::new(500, "InternalError", format!("worker failed: {e}")))?
}

/// The router of the whole API over a local database.
pub fn router(db: Arc<Indigo>, settings: Settings) -> Router {
    router_for(Db::Local(db), settings)
}

/// The router of the whole API over a local database or a cluster.
pub fn router_for(db: Db, settings: Settings) -> Router {
    let state = Arc::new(AppState {
        db,
        limits: settings.limits(),
        limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
        auth_failures: RateLimiter::new(
            settings.auth_failures_per_minute / 60.0,
            settings.auth_failures_per_minute,
        ),
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            settings.max_requests_in_flight.max(1),
        )),
        settings,
        metrics: Metrics::default(),
    });
    const C: &str = "/api/v2/tenants/{tenant}/databases/{database}/collections";
    let api = Router::new()
        .route("/api/v2/heartbeat", get(heartbeat))
        .route("/api/v2", get(heartbeat))
        .route("/api/v2/", get(heartbeat))
        .route("/api/v2/healthcheck", get(healthcheck))
        .route("/ready", get(healthcheck))
        .route("/api/v2/version", get(|| async { Json(json!("1.0.0")) }))
        .route("/api/v2/pre-flight-checks", get(preflight))
        .route("/api/v2/auth/identity", get(identity))
        .route("/api/v2/reset", post(reset))
        .route("/api/v2/admin/backup", post(backup))
        .route("/api/v2/tenants", post(create_tenant))
        .route(
            "/api/v2/tenants/{tenant}",
            get(get_tenant).patch(update_tenant),
        )
        .route(
            "/api/v2/tenants/{tenant}/databases",
            get(list_databases).post(create_database),
        )
        .route(
            "/api/v2/tenants/{tenant}/databases/{database}",
            get(get_database).delete(delete_database),
        )
        .route(C, get(list_collections).post(create_collection))
        .route(
            "/api/v2/tenants/{tenant}/databases/{database}/collections_count",
            get(count_collections),
        )
        .route(
            &format!("{C}/{{collection}}"),
            get(get_collection)
                .put(modify_collection)
                .delete(delete_collection),
        )
        .route(
            &format!("{C}/by-id/{{collection}}"),
            get(get_collection_by_id),
        )
        .route(&format!("{C}/{{collection}}/add"), post(add))
        .route(&format!("{C}/{{collection}}/upsert"), post(upsert))
        .route(&format!("{C}/{{collection}}/update"), post(update))
        .route(&format!("{C}/{{collection}}/delete"), post(delete_records))
        .route(&format!("{C}/{{collection}}/get"), post(get_records))
        .route(&format!("{C}/{{collection}}/query"), post(query))
        .route(&format!("{C}/{{collection}}/count"), get(count))
        .route(
            &format!("{C}/{{collection}}/indexing_status"),
            get(indexing_status),
        )
        .route(&format!("{C}/{{collection}}/search"), post(search_records))
        .route(&format!("{C}/{{collection}}/fork"), post(fork))
        .route(&format!("{C}/{{collection}}/fork_count"), get(fork_count))
        .route(
            &format!("{C}/{{collection}}/functions/attach"),
            post(distributed_only),
        )
        .route(
            &format!("{C}/{{collection}}/functions/{{name}}"),
            get(distributed_only),
        )
        .route(
            &format!("{C}/{{collection}}/attached_functions/{{name}}/detach"),
            post(distributed_only),
        )
        .route("/api/v2/collections/{crn}", get(distributed_only))
        .route("/api/v1", any(v1_gone))
        .route("/api/v1/{*rest}", any(v1_gone))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::map_response(errors_as_json))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.settings.max_payload_bytes,
        ));
    api.with_state(state)
}

/// Rejections that axum answers itself (a query string or path that does not
/// parse, a wrong method, a body over the limit) come as plain text; clients
/// expect Chroma's error JSON for every error, so they are rewrapped.
async fn errors_as_json(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 << 10).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
    };
    let name = match status.as_u16() {
        401 => "AuthError",
        403 => "AuthorizationError",
        404 => "NotFoundError",
        429 => "RateLimitError",
        s if s >= 500 => "InternalError",
        _ => "InvalidArgumentError",
    };
    let mut out = (status, Json(json!({"error": name, "message": text}))).into_response();
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// The methods counted by name in metrics; any other is counted as `OTHER`, so a
/// client cannot grow the label set.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Authentication, rate limiting, the bounds on requests in flight and their
/// time, and metrics, around every request.
async fn gate(State(st): St, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let open = matches!(
        route.as_str(),
        "/metrics"
            | "/openapi.json"
            | "/api/v2/heartbeat"
            | "/api/v2"
            | "/api/v2/"
            | "/api/v2/healthcheck"
            | "/ready"
    );
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "local".to_string(), |c| c.0.ip().to_string());
    let resp = admit(&st, &mut req, open, &peer)
        .map(|()| next.run(req))
        .map_err(IntoResponse::into_response);
    let resp = match resp {
        Err(r) => r,
        Ok(fut) => {
            let permit = if open {
                None
            } else {
                match st.in_flight.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        let e = ApiError::new(
                            503,
                            "InternalError",
                            format!(
                                "{} requests are in flight, the most this server takes \
                                 (max_requests_in_flight); retry shortly",
                                st.settings.max_requests_in_flight
                            ),
                        );
                        return finish(&st, method, &route, started, e.into_response());
                    }
                }
            };
            let limit = std::time::Duration::from_secs(st.settings.request_timeout_secs.max(1));
            let r = match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    503,
                    "InternalError",
                    format!(
                        "the request took longer than {} s (request_timeout_secs); work \
                         already handed to the database may still complete",
                        limit.as_secs()
                    ),
                )
                .into_response(),
            };
            drop(permit);
            r
        }
    };
    finish(&st, method, &route, started, resp)
}

/// Records a request in the metrics and tags its response with a trace id
/// (`chroma-trace-id`, which Chroma's clients attach to the errors they raise),
/// logged beside the request so a user's report can be found in the log.
fn finish(
    st: &AppState,
    method: &str,
    route: &str,
    started: Instant,
    mut resp: Response,
) -> Response {
    let status = resp.status().as_u16();
    st.metrics
        .record(method, route, status, started.elapsed().as_secs_f64());
    let trace = uuid::Uuid::new_v4().simple().to_string();
    // 503s (overload, a full disk) are logged where they arise, once.
    if status >= 500 && status != 503 {
        tracing::warn!(%method, %route, status, %trace, "request failed");
    } else {
        tracing::debug!(%method, %route, status, %trace, "request");
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&trace) {
        resp.headers_mut().insert("chroma-trace-id", v);
    }
    resp
}

/// Checks the payload size, authenticates and rate-limits a request, and tags it
/// with who is asking. Without tokens, clients are told apart by address; a
/// client whose tokens keep failing is slowed down before it can guess more.
fn admit(st: &AppState, req: &mut Request, open: bool, peer: &str) -> Result<(), ApiError> {
    let length = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(n) = length.filter(|&n| n > st.settings.max_payload_bytes) {
        return Err(ApiError::new(
            413,
            "QuotaError",
            format!(
                "request body of {n} bytes is over this server's limit of {} (max_payload_bytes)",
                st.settings.max_payload_bytes
            ),
        ));
    }
    if open {
        // Liveness and metrics are neither authenticated nor rate-limited.
        req.extensions_mut().insert(Identity {
            user_id: String::new(),
            grant: None,
        });
        return Ok(());
    }
    let h = req.headers();
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let identity = match gateway::authenticate(
        &st.settings.tokens,
        header("authorization"),
        header("x-chroma-token"),
    ) {
        Ok(i) => i,
        Err(e) => {
            // Every failure costs the address a token: guessing is slowed to
            // `auth_failures_per_minute`.
            if st.auth_failures.check(peer).is_err() {
                return Err(ApiError::rate_limited(
                    "too many failed authentications from this address; wait a minute",
                ));
            }
            return Err(e);
        }
    };
    let key = match &identity.grant {
        Some(g) => format!("token:{}", g.token),
        None => format!("addr:{peer}"),
    };
    st.limiter.check(&key)?;
    req.extensions_mut().insert(identity);
    Ok(())
}

type Who = axum::Extension<Identity>;

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

fn body(b: &Bytes) -> ApiResult<Value> {
    if b.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(b)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))
}

async fn heartbeat() -> Json<Value> {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Json(json!({"nanosecond heartbeat": ns as u64}))
}

/// 200 while every background component works; 503 naming each standing
/// failure (component, what it failed on, the error, since when) otherwise.
async fn healthcheck(State(st): St) -> Response {
    // A cluster's frontend may ask the catalogue who is live: not on async threads.
    let db = st.db.clone();
    let failures = match blocking(move || Ok(db.failures())).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    if failures.is_empty() {
        return Json(json!({"is_executor_ready": true, "is_log_client_ready": true}))
            .into_response();
    }
    let list: Vec<Value> = failures
        .iter()
        .map(|f| {
            let since = f
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            json!({"component": f.component, "subject": f.subject, "error": f.error,
                   "since_unix": since, "attempts": f.attempts})
        })
        .collect();
    let summary = failures
        .iter()
        .map(|f| format!("{} failing on {}: {}", f.component, f.subject, f.error))
        .collect::<Vec<_>>()
        .join("; ");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": "InternalError",
            "message": format!("background work is failing (Indigo retries it): {summary}"),
            "is_executor_ready": !failures.iter().any(|f| f.component != "log"),
            "is_log_client_ready": !failures.iter().any(|f| f.component == "log"),
            "failures": list,
        })),
    )
        .into_response()
}

async fn preflight(State(st): St) -> Json<Value> {
    Json(json!({"max_batch_size": st.settings.max_batch_size, "supports_base64_encoding": true}))
}

async fn identity(axum::Extension(who): Who) -> Json<Value> {
    match &who.grant {
        None => Json(
            json!({"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]}),
        ),
        Some(g) => {
            let dbs: Vec<String> = if g.databases.is_empty() {
                vec!["*".into()]
            } else {
                g.databases.clone()
            };
            Json(json!({"user_id": who.user_id, "tenant": g.tenant, "databases": dbs}))
        }
    }
}

async fn reset(State(st): St, axum::Extension(who): Who) -> ApiResult {
    if !st.settings.allow_reset {
        return Err(ApiError::forbidden(
            "resetting is disabled on this server; set allow_reset: true (or INDIGO_ALLOW_RESET=true) to enable it",
        ));
    }
    if who.grant.is_some() {
        return Err(ApiError::forbidden(
            "reset deletes every tenant's data; it needs a server without tokens",
        ));
    }
    let db = st.db.clone();
    blocking(move || Ok(db.reset()?)).await?;
    ok(json!(true))
}

/// Takes an online backup into `backup_dir/<name>` (see `indigo::Indigo::backup`).
async fn backup(State(st): St, axum::Extension(who): Who, b: Bytes) -> ApiResult {
    let Some(root) = st.settings.backup_dir.clone() else {
        return Err(ApiError::forbidden(
            "backups over HTTP are off on this server; set backup_dir (or INDIGO_BACKUP_DIR) \
             to the directory they go to",
        ));
    };
    if who.grant.as_ref().is_some_and(|g| !g.admin) {
        return Err(ApiError::forbidden(
            "a backup holds every tenant's data; it needs a token with admin: true",
        ));
    }
    let name = name_of(&body(&b)?, "a backup")?;
    let plain = std::path::Path::new(&name)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || name.is_empty() {
        return Err(ApiError::invalid(format!(
            "backup name {name:?} must be a plain name (no '/', '..' or absolute path)"
        )));
    }
    let dest = root.join(&name);
    let db = st.db.clone();
    let d = dest.clone();
    let r = blocking(move || Ok(db.backup(&d)?)).await?;
    ok(json!({
        "path": dest.display().to_string(),
        "collections": r.collections,
        "log_records": r.log_records,
        "files": r.files,
        "bytes": r.bytes,
    }))
}

fn name_of(v: &Value, what: &str) -> ApiResult<String> {
    v.get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid(format!("{what} needs a \"name\" string")))
}

async fn create_tenant(State(st): St, axum::Extension(who): Who, b: Bytes) -> ApiResult {
    let name = name_of(&body(&b)?, "a tenant")?;
    who.check(&name, None)?;
    let db = st.db.clone();
    blocking(move || Ok(db.create_tenant(&name)?)).await?;
    ok(json!({}))
}

async fn get_tenant(State(st): St, axum::Extension(who): Who, Path(t): Path<String>) -> ApiResult {
    who.check(&t, None)?;
    let db = st.db.clone();
    let t2 = t.clone();
    blocking(move || Ok(db.get_tenant(&t2)?)).await?;
    ok(json!({"name": t, "resource_name": null}))
}

async fn update_tenant() -> ApiResult {
    Err(ApiError::unsupported(
        "tenant resource names are a Chroma Cloud feature; Indigo does not store them",
    ))
}

#[derive(Deserialize)]
struct Page {
    limit: Option<u32>,
    offset: Option<u32>,
}

fn database_json(d: &indigo::Database) -> Value {
    json!({"id": d.id, "name": d.name, "tenant": d.tenant})
}

async fn list_databases(
    State(st): St,
    axum::Extension(who): Who,
    Path(t): Path<String>,
    Query(p): Query<Page>,
) -> ApiResult {
    who.check(&t, None)?;
    let db = st.db.clone();
    let list = blocking(move || Ok(db.list_databases(&t, p.limit, p.offset.unwrap_or(0))?)).await?;
    let list: Vec<Value> = list
        .iter()
        .filter(|d| who.check(&d.tenant, Some(&d.name)).is_ok())
        .map(database_json)
        .collect();
    ok(Value::Array(list))
}

async fn create_database(
    State(st): St,
    axum::Extension(who): Who,
    Path(t): Path<String>,
    b: Bytes,
) -> ApiResult {
    let name = name_of(&body(&b)?, "a database")?;
    who.check(&t, Some(&name))?;
    let db = st.db.clone();
    blocking(move || Ok(db.create_database(&t, &name)?)).await?;
    ok(json!({}))
}

async fn get_database(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d)): Path<(String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    let v = blocking(move || Ok(db.get_database(&t, &d)?)).await?;
    ok(database_json(&v))
}

async fn delete_database(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d)): Path<(String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    blocking(move || Ok(db.delete_database(&t, &d)?)).await?;
    ok(json!({}))
}

fn collection_json(c: &indigo::CollectionInfo) -> Value {
    // What is stored is the configuration with the schema beside it; clients get
    // them as two fields.
    let (configuration, schema) = match indigo::CollectionConfig::from_stored(&c.configuration) {
        Ok(cfg) => (cfg.configuration_json(), cfg.schema()),
        Err(_) => (c.configuration.clone(), Value::Null),
    };
    json!({
        "id": c.id,
        "name": c.name,
        "configuration_json": configuration,
        "metadata": c.metadata,
        "dimension": c.dimension,
        "tenant": c.tenant,
        "database": c.database,
        "log_position": 0,
        "version": c.version,
        "schema": schema,
    })
}

async fn list_collections(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d)): Path<(String, String)>,
    Query(p): Query<Page>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    let list =
        blocking(move || Ok(db.list_collections(&t, &d, p.limit, p.offset.unwrap_or(0))?)).await?;
    ok(Value::Array(list.iter().map(collection_json).collect()))
}

async fn count_collections(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d)): Path<(String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    let n = blocking(move || Ok(db.count_collections(&t, &d)?)).await?;
    ok(json!(n))
}

fn null_to_none(v: Option<&Value>) -> Option<Value> {
    v.filter(|v| !v.is_null()).cloned()
}

async fn create_collection(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let v = body(&b)?;
    let name = name_of(&v, "a collection")?;
    let metadata = null_to_none(v.get("metadata"));
    let mut configuration = null_to_none(v.get("configuration"));
    // The core takes the schema as a member of the configuration.
    if let Some(schema) = null_to_none(v.get("schema")) {
        match configuration.get_or_insert_with(|| json!({})) {
            Value::Object(m) => {
                m.insert("schema".into(), schema);
            }
            other => {
                return Err(ApiError::from(CoreError::InvalidArgument(format!(
                    "configuration must be an object, got {other}"
                ))))
            }
        }
    }
    let get_or_create = v
        .get("get_or_create")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let db = st.db.clone();
    let max = st.settings.max_collections_per_database;
    // Checked before an existing collection is returned, as Chroma does.
    indigo::rules::check_collection_name(&name)?;
    if let Some(m) = &metadata {
        indigo::rules::check_collection_metadata(m)?;
    }
    if let Some(s) = v.get("schema") {
        indigo::rules::check_collection_schema(s)?;
    }
    let c = blocking(move || {
        if get_or_create {
            if let Ok(c) = db.get_collection(&t, &d, &name) {
                return Ok(c.info().clone());
            }
        }
        if max > 0 && db.count_collections(&t, &d)? >= max {
            return Err(ApiError::quota(format!(
                "database {d:?} already has {max} collections, the most this server allows"
            )));
        }
        let c = db.create_collection(&t, &d, &name, metadata, configuration, get_or_create)?;
        Ok(c.info().clone())
    })
    .await?;
    ok(collection_json(&c))
}

/// Finds a collection of `t`/`d` by name, or by id (the official clients use the
/// name for GET and DELETE, the id elsewhere).
fn find(db: &Db, t: &str, d: &str, key: &str) -> ApiResult<Coll> {
    match db.get_collection(t, d, key) {
        Ok(c) => Ok(c),
        Err(CoreError::NotFound(_)) | Err(CoreError::InvalidArgument(_)) => by_id(db, t, d, key),
        Err(e) => Err(e.into()),
    }
}

fn by_id(db: &Db, t: &str, d: &str, id: &str) -> ApiResult<Coll> {
    let missing = || ApiError::not_found(format!("Collection [{id}] does not exist"));
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(missing());
    }
    let c = match db.get_collection_by_id(id) {
        Ok(c) => c,
        Err(CoreError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if c.info().tenant != t || c.info().database != d {
        return Err(missing());
    }
    Ok(c)
}

async fn get_collection(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, key)): Path<(String, String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    let c = blocking(move || Ok(find(&db, &t, &d, &key)?.info().clone())).await?;
    ok(collection_json(&c))
}

async fn get_collection_by_id(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    let c = blocking(move || Ok(by_id(&db, &t, &d, &id)?.info().clone())).await?;
    ok(collection_json(&c))
}

async fn modify_collection(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let v = body(&b)?;
    let new_name = v
        .get("new_name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let new_metadata = null_to_none(v.get("new_metadata"));
    let new_configuration = null_to_none(v.get("new_configuration"));
    let db = st.db.clone();
    blocking(move || {
        let c = find(&db, &t, &d, &id)?;
        Ok(db.modify_collection(c.id(), new_name, new_metadata, new_configuration)?)
    })
    .await?;
    ok(json!({}))
}

async fn delete_collection(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, key)): Path<(String, String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    blocking(move || {
        let c = find(&db, &t, &d, &key)?;
        let name = c.name().to_string();
        drop(c);
        Ok(db.delete_collection(&t, &d, &name)?)
    })
    .await?;
    ok(json!({}))
}

/// Embeddings as float arrays or base64 strings of little-endian f32.
fn embedding(v: &Value, i: usize) -> ApiResult<Option<Vec<f32>>> {
    match v {
        Value::Null => Ok(None),
        Value::Array(xs) => xs
            .iter()
            .map(|x| {
                x.as_f64().map(|f| f as f32).ok_or_else(|| {
                    ApiError::invalid(format!("embedding {i} has a non-number: {x}"))
                })
            })
            .collect::<ApiResult<Vec<f32>>>()
            .map(Some),
        Value::String(s) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| ApiError::invalid(format!("embedding {i}: invalid base64: {e}")))?;
            if bytes.len() % 4 != 0 {
                return Err(ApiError::invalid(format!(
                    "embedding {i}: base64 data is not a whole number of f32 values"
                )));
            }
            Ok(Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ))
        }
        other => Err(ApiError::invalid(format!(
            "embedding {i} must be a list of numbers or a base64 string, got {other}"
        ))),
    }
}

fn column<'a>(v: &'a Value, key: &str, n: usize) -> ApiResult<Option<&'a Vec<Value>>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.len() == n => Ok(Some(a)),
        Some(Value::Array(a)) => Err(ApiError::invalid(format!(
            "{key} has {} entries but there are {n} ids; give one per id",
            a.len()
        ))),
        Some(other) => Err(ApiError::invalid(format!(
            "{key} must be a list, got {other}"
        ))),
    }
}

fn string_list(v: Option<&Value>, what: &str) -> ApiResult<Option<Vec<String>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid(format!("{what} must be strings, got {x}")))
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some),
        Some(other) => Err(ApiError::invalid(format!(
            "{what} must be a list of strings, got {other}"
        ))),
    }
}

/// Parses an add/upsert/update body into records, validating every field.
fn records(v: &Value, kind: WriteKind, max_batch: usize) -> ApiResult<Vec<RecordOp>> {
    let ids =
        string_list(v.get("ids"), "ids")?.ok_or_else(|| ApiError::invalid("ids are required"))?;
    let n = ids.len();
    if n > max_batch {
        return Err(ApiError::quota(format!(
            "{n} records in one request; this server takes at most {max_batch} (see /api/v2/pre-flight-checks)"
        )));
    }
    let embs = column(v, "embeddings", n)?;
    let metas = column(v, "metadatas", n)?;
    let docs = column(v, "documents", n)?;
    let uris = column(v, "uris", n)?;
    let opt_str = |col: Option<&Vec<Value>>, i: usize, what: &str| -> ApiResult<Option<String>> {
        match col.map(|c| &c[i]) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(o) => Err(ApiError::invalid(format!(
                "{what} {i} must be a string or null, got {o}"
            ))),
        }
    };
    let mut out = Vec::with_capacity(n);
    for (i, id) in ids.into_iter().enumerate() {
        let embedding = match embs {
            Some(e) => embedding(&e[i], i)?,
            None => None,
        };
        let metadata = match metas.map(|m| &m[i]) {
            None | Some(Value::Null) => None,
            Some(m) => {
                let m = metadata_from_json(m, kind == WriteKind::Update)?;
                // `$` and `#` start operators and Chroma's reserved keys.
                if let Some(k) = m.keys().find(|k| k.starts_with(['$', '#'])) {
                    return Err(ApiError::invalid(format!(
                        "Validation error: metadatas: Invalid metadata at index {i}: key {k:?} \
                         starts with a reserved character ($ or #)"
                    )));
                }
                Some(m)
            }
        };
        out.push(RecordOp {
            id,
            embedding: embedding.map(Arc::from),
            document: opt_str(docs, i, "document")?,
            uri: opt_str(uris, i, "uri")?,
            metadata,
        });
    }
    Ok(out)
}

async fn write(
    st: Arc<AppState>,
    who: Identity,
    t: String,
    d: String,
    id: String,
    b: Bytes,
    kind: WriteKind,
) -> ApiResult<()> {
    who.check(&t, Some(&d))?;
    let v = body(&b)?;
    let recs = records(&v, kind, st.settings.max_batch_size)?;
    let max_records = st.settings.max_records_per_collection;
    let db = st.db.clone();
    blocking(move || {
        let c = by_id(&db, &t, &d, &id)?;
        if max_records > 0 && kind != WriteKind::Update {
            let have = c.count()?;
            if have + recs.len() as u64 > max_records {
                return Err(ApiError::quota(format!(
                    "collection has {have} records; adding {} would pass this server's limit of {max_records}",
                    recs.len()
                )));
            }
        }
        Ok(c.write(kind, recs)?)
    })
    .await
}

async fn add(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    write(st, who, t, d, id, b, WriteKind::Add).await?;
    Ok((StatusCode::CREATED, Json(json!({}))).into_response())
}

async fn upsert(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    write(st, who, t, d, id, b, WriteKind::Upsert).await?;
    ok(json!({}))
}

async fn update(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    write(st, who, t, d, id, b, WriteKind::Update).await?;
    ok(json!({}))
}

/// `where`, `where_document` and `ids` of a read or delete.
fn selection(v: &Value, limits: &indigo::Limits) -> ApiResult<Selection> {
    let filter = |key: &str| -> Option<&Value> {
        v.get(key)
            .filter(|w| !w.is_null() && !w.as_object().is_some_and(|o| o.is_empty()))
    };
    Ok(Selection {
        ids: string_list(v.get("ids"), "ids")?,
        where_: filter("where")
            .map(|w| Where::parse_with(w, &limits.filter))
            .transpose()?,
        where_document: filter("where_document")
            .map(|w| DocFilter::parse_with(w, &limits.filter))
            .transpose()?,
    })
}

fn include(v: &Value, default: Include) -> ApiResult<Include> {
    let Some(list) = v.get("include").filter(|x| !x.is_null()) else {
        return Ok(default);
    };
    let list = list
        .as_array()
        .ok_or_else(|| ApiError::invalid("include must be a list"))?;
    let mut inc = Include::default();
    for x in list {
        match x.as_str() {
            Some("embeddings") => inc.embeddings = true,
            Some("documents") => inc.documents = true,
            Some("metadatas") => inc.metadatas = true,
            Some("uris") => inc.uris = true,
            Some("distances") => inc.distances = true,
            _ => {
                return Err(ApiError::invalid(format!(
                    "include: {x} is not one of distances, documents, embeddings, metadatas, uris"
                )))
            }
        }
    }
    Ok(inc)
}

fn include_names(inc: Include) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (on, name) in [
        (inc.distances, "distances"),
        (inc.documents, "documents"),
        (inc.embeddings, "embeddings"),
        (inc.metadatas, "metadatas"),
        (inc.uris, "uris"),
    ] {
        if on {
            v.push(name);
        }
    }
    v
}

fn records_json(r: &Records) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("ids".into(), json!(r.ids));
    m.insert(
        "embeddings".into(),
        r.embeddings.as_ref().map_or(Value::Null, |e| {
            Value::Array(e.iter().map(|v| json!(&v[..])).collect())
        }),
    );
    m.insert("documents".into(), json!(r.documents));
    m.insert("uris".into(), json!(r.uris));
    m.insert(
        "metadatas".into(),
        r.metadatas.as_ref().map_or(Value::Null, |ms| {
            Value::Array(
                ms.iter()
                    .map(|m| {
                        m.as_ref()
                            .map_or(Value::Null, indigo_types::record::metadata_to_json)
                    })
                    .collect(),
            )
        }),
    );
    m.insert("distances".into(), json!(r.distances));
    m
}

fn count_arg(v: &Value, key: &str) -> ApiResult<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            ApiError::invalid(format!("{key} must be a non-negative integer, got {x}"))
        }),
    }
}

async fn delete_records(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let v = body(&b)?;
    let sel = selection(&v, &st.limits)?;
    let limit = count_arg(&v, "limit")?.map(|n| n.min(u32::MAX as usize) as u32);
    let db = st.db.clone();
    let n = blocking(move || Ok(by_id(&db, &t, &d, &id)?.delete(&sel, limit)?)).await?;
    ok(json!({"deleted": n}))
}

async fn get_records(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let v = body(&b)?;
    let inc = include(&v, Include::GET_DEFAULT)?;
    let req = GetRequest {
        selection: selection(&v, &st.limits)?,
        limit: count_arg(&v, "limit")?,
        offset: count_arg(&v, "offset")?.unwrap_or(0),
        include: inc,
    };
    let db = st.db.clone();
    let r = blocking(move || Ok(by_id(&db, &t, &d, &id)?.get(&req)?)).await?;
    let mut m = records_json(&r);
    m.remove("distances");
    m.insert("include".into(), json!(include_names(inc)));
    ok(Value::Object(m))
}

async fn query(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let v = body(&b)?;
    let qs = match v.get("query_embeddings") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, q)| {
                embedding(q, i)?
                    .ok_or_else(|| ApiError::invalid("query embeddings must not be null"))
            })
            .collect::<ApiResult<Vec<_>>>()?,
        _ => {
            return Err(ApiError::invalid(
                "query_embeddings (a list of embeddings) is required",
            ))
        }
    };
    let inc = include(&v, Include::QUERY_DEFAULT)?;
    let mut req = QueryRequest::new(qs, count_arg(&v, "n_results")?.unwrap_or(10));
    req.selection = selection(&v, &st.limits)?;
    req.include = inc;
    let db = st.db.clone();
    let rs = blocking(move || Ok(by_id(&db, &t, &d, &id)?.query(&req)?)).await?;
    let mut out = Map::new();
    let per: Vec<Map<String, Value>> = rs.iter().map(records_json).collect();
    let names = include_names(inc);
    for key in [
        "ids",
        "embeddings",
        "documents",
        "uris",
        "metadatas",
        "distances",
    ] {
        let val = if key == "ids" || names.contains(&key) {
            Value::Array(per.iter().map(|m| m[key].clone()).collect())
        } else {
            Value::Null
        };
        out.insert(key.into(), val);
    }
    out.insert("include".into(), json!(include_names(inc)));
    ok(Value::Object(out))
}

async fn count(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    let n = blocking(move || Ok(by_id(&db, &t, &d, &id)?.count()?)).await?;
    ok(json!(n))
}

/// Chroma's fork: a new collection holding what the source holds now.
async fn fork(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let v = body(&b)?;
    let name = match v.get("new_name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ApiError::invalid("fork needs new_name, a string")),
    };
    indigo::rules::check_collection_name(&name)?;
    let db = st.db.clone();
    let max = st.settings.max_collections_per_database;
    let c = blocking(move || {
        let src = by_id(&db, &t, &d, &id)?;
        if max > 0 && db.count_collections(&t, &d)? >= max {
            return Err(ApiError::quota(format!(
                "database {d:?} already has {max} collections, the most this server allows"
            )));
        }
        match db.fork_collection(src.id(), &name) {
            Some(r) => Ok(r?),
            None => Err(ApiError::unsupported(
                "this frontend does not serve forks (it was started without the log \
                 they are seeded through)",
            )),
        }
    })
    .await?;
    ok(collection_json(&c))
}

async fn fork_count(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    let n = blocking(move || {
        let c = by_id(&db, &t, &d, &id)?;
        Ok(db.fork_count(c.id())?)
    })
    .await?;
    ok(json!({ "count": n }))
}

async fn indexing_status(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let db = st.db.clone();
    let (indexed, total) =
        blocking(move || Ok(by_id(&db, &t, &d, &id)?.indexing_status()?)).await?;
    let progress = if total == 0 {
        1.0
    } else {
        indexed as f64 / total as f64
    };
    ok(json!({
        "num_indexed_ops": indexed,
        "num_unindexed_ops": total.saturating_sub(indexed),
        "total_ops": total,
        "op_indexing_progress": progress,
    }))
}

async fn search_records(
    State(st): St,
    axum::Extension(who): Who,
    Path((t, d, id)): Path<(String, String, String)>,
    b: Bytes,
) -> ApiResult {
    who.check(&t, Some(&d))?;
    let v = body(&b)?;
    let searches = v
        .get("searches")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ApiError::invalid("searches (a list) is required"))?;
    if searches.len() > st.limits.max_searches {
        return Err(ApiError::quota(format!(
            "{} searches in one request; this server takes at most {}",
            searches.len(),
            st.limits.max_searches
        )));
    }
    let db = st.db.clone();
    let results = blocking(move || {
        let c = by_id(&db, &t, &d, &id)?;
        searches
            .iter()
            .map(|s| search::run(&c, s))
            .collect::<ApiResult<Vec<_>>>()
    })
    .await?;
    let mut out = Map::new();
    for key in [
        "ids",
        "documents",
        "embeddings",
        "metadatas",
        "scores",
        "select",
    ] {
        out.insert(
            key.into(),
            Value::Array(results.iter().map(|r| r[key].clone()).collect()),
        );
    }
    ok(Value::Object(out))
}

async fn distributed_only() -> ApiError {
    ApiError::unsupported(
        "this route belongs to distributed Chroma (search, forks, attached functions, CRNs); \
         Indigo's single-node server does not offer it yet",
    )
}

async fn v1_gone() -> Response {
    (
        StatusCode::GONE,
        Json(
            json!({"error": "InvalidHTTPVersion", "message": "v1 API is deprecated; use /api/v2"}),
        ),
    )
        .into_response()
}

async fn metrics(State(st): St, _h: HeaderMap) -> Response {
    let db = st.db.clone();
    let (extra, failures) = blocking(move || Ok((db.gauges(), db.failures())))
        .await
        .unwrap_or_default();
    let mut text = st.metrics.render(&extra);
    text.push_str(
        "# HELP indigo_background_errors_total Failed attempts of background work, by component.\n\
         # TYPE indigo_background_errors_total counter\n",
    );
    for (component, n) in st.db.background_errors_total() {
        text.push_str(&format!(
            "indigo_background_errors_total{{component=\"{component}\"}} {n}\n"
        ));
    }
    text.push_str(
        "# HELP indigo_background_failing Standing background failures, by component.\n\
         # TYPE indigo_background_failing gauge\n",
    );
    let mut components: Vec<&str> = indigo::BACKGROUND_COMPONENTS.to_vec();
    for f in &failures {
        if !components.contains(&f.component) {
            components.push(f.component);
        }
    }
    for component in components {
        let n = failures.iter().filter(|f| f.component == component).count();
        text.push_str(&format!(
            "indigo_background_failing{{component=\"{component}\"}} {n}\n"
        ));
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// Entry points for the fuzz targets (`fuzz/`): request bodies parsed as the
/// handlers parse them, without a database. Bad input must be an `ApiError`, never
/// a panic; what passes validation must survive the log's encoding unchanged.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use indigo_types::{WriteEntry, WriteKind};
    use serde_json::Value;

    use super::*;

    fn json(bytes: &[u8]) -> Option<Value> {
        body(&Bytes::copy_from_slice(bytes)).ok()
    }

    /// An add / upsert / update body (embeddings as floats or base64).
    pub fn write_body(bytes: &[u8]) {
        let Some(v) = json(bytes) else { return };
        let limits = indigo::Limits::default();
        for kind in [WriteKind::Add, WriteKind::Update] {
            let Ok(records) = records(&v, kind, limits.max_ids) else {
                continue;
            };
            let entry = WriteEntry { kind, records };
            if indigo_types::record::validate_write(&entry).is_ok() {
                let back = WriteEntry::decode(&entry.encode()).expect("a valid write decodes");
                assert_eq!(back, entry, "a valid write changes in the log encoding");
            }
        }
    }

    /// A get / delete / query body.
    pub fn read_body(bytes: &[u8]) {
        let Some(v) = json(bytes) else { return };
        let limits = indigo::Limits::default();
        let _ = selection(&v, &limits);
        let _ = include(&v, Include::QUERY_DEFAULT);
        let _ = count_arg(&v, "n_results");
        if let Some(Value::Array(a)) = v.get("query_embeddings") {
            for (i, q) in a.iter().enumerate() {
                let _ = embedding(q, i);
            }
        }
    }

    /// A search body: every search planned (parsed and checked).
    pub fn search_body(bytes: &[u8]) {
        let Some(v) = json(bytes) else { return };
        let limits = indigo::Limits::default();
        for s in v
            .get("searches")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = search::plan(s, &limits);
        }
    }
}
