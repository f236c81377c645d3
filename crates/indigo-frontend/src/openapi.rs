//! The OpenAPI document of Indigo's routes, served at `/openapi.json`. Request and
//! response bodies are described by Chroma's own schemas (its 1.5.9 document,
//! vendored in `openapi/`, Apache-2.0), because the wire format is Chroma's; the
//! routes Chroma lacks or answers differently are described here. The route table
//! is checked against the router by a test, and `schemathesis` checks the
//! server's answers against this document in the test command.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

/// (method, path, summary, status of success) of every route Indigo serves.
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/api/v2/heartbeat", "Server time in nanoseconds (liveness).", "200"),
    ("get", "/api/v2/healthcheck", "Readiness of the executor and the log.", "200"),
    ("get", "/api/v2/version", "The Chroma API version served.", "200"),
    ("get", "/api/v2/pre-flight-checks", "Max batch size and base64 support.", "200"),
    ("get", "/api/v2/auth/identity", "The caller's tenant and databases.", "200"),
    ("post", "/api/v2/reset", "Deletes everything (only with allow_reset).", "200"),
    ("post", "/api/v2/tenants", "Creates a tenant.", "200"),
    ("get", "/api/v2/tenants/{tenant}", "Gets a tenant.", "200"),
    ("patch", "/api/v2/tenants/{tenant}", "Chroma Cloud only: answers 501.", "501"),
    ("get", "/api/v2/tenants/{tenant}/databases", "Lists databases (limit, offset).", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases", "Creates a database.", "200"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}", "Gets a database.", "200"),
    ("delete", "/api/v2/tenants/{tenant}/databases/{database}", "Deletes a database and its collections.", "200"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections", "Lists collections (limit, offset).", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections", "Creates a collection (get_or_create optional).", "200"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections_count", "Counts collections.", "200"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}", "Gets a collection by name (or id).", "200"),
    ("put", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}", "Renames a collection or changes its metadata or configuration.", "200"),
    ("delete", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}", "Deletes a collection by name (or id).", "200"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections/by-id/{collection}", "Gets a collection by id.", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/add", "Adds records; existing ids are left unchanged.", "201"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/upsert", "Adds records or updates existing ones.", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/update", "Updates given fields of existing records.", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/delete", "Deletes records by ids and/or filters.", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/get", "Gets records by ids and/or filters.", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/query", "Nearest neighbours of query embeddings, pre-filtered.", "200"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/count", "Counts records.", "200"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/indexing_status", "How much of the log is indexed.", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/search", "Searches with filters, KNN rank expressions, limit and select.", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/fork", "Forks the collection (copy-on-write) into new_name.", "200"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/fork_count", "How many forks the collection's fork tree holds.", "200"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/functions/attach", "Distributed Chroma only: answers 501.", "501"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/functions/{name}", "Distributed Chroma only: answers 501.", "501"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/attached_functions/{name}/detach", "Distributed Chroma only: answers 501.", "501"),
    ("get", "/api/v2/collections/{crn}", "Chroma Cloud only: answers 501.", "501"),
    ("post", "/api/v2/admin/backup", "Takes a consistent online backup into backup_dir/{name}.", "200"),
    ("get", "/ready", "Readiness (as /api/v2/healthcheck).", "200"),
    ("get", "/metrics", "Prometheus metrics.", "200"),
    ("get", "/openapi.json", "This document.", "200"),
];

/// Chroma's OpenAPI document, whose schemas Indigo's wire format follows.
const CHROMA: &str = include_str!("../openapi/chroma-1.5.9.json");

/// A path with its parameter names blanked, to match Chroma's paths (which name
/// the parameters differently) to Indigo's.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn error_response(what: &str) -> Value {
    json!({
        "description": what,
        "content": json_content(json!({"$ref": "#/components/schemas/ErrorResponse"})),
    })
}

/// The success body of routes Chroma's document lacks or describes otherwise.
fn own_success(method: &str, path: &str) -> Option<Value> {
    Some(match (method, path) {
        ("get", "/api/v2/version") => json_content(json!({"type": "string"})),
        ("post", "/api/v2/reset") => json_content(json!({"type": "boolean"})),
        ("get", "/api/v2/healthcheck" | "/ready") => json_content(json!({
            "type": "object",
            "required": ["is_executor_ready", "is_log_client_ready"],
            "properties": {
                "is_executor_ready": {"type": "boolean"},
                "is_log_client_ready": {"type": "boolean"},
            },
        })),
        ("post", "/api/v2/admin/backup") => json_content(json!({
            "type": "object",
            "required": ["path", "collections", "log_records", "files", "bytes"],
            "properties": {
                "path": {"type": "string"},
                "collections": {"type": "integer", "minimum": 0},
                "log_records": {"type": "integer", "minimum": 0},
                "files": {"type": "integer", "minimum": 0},
                "bytes": {"type": "integer", "minimum": 0},
            },
        })),
        // Chroma's document gives this route its collection list's schema.
        ("get", "/api/v2/tenants/{tenant}/databases") => json_content(json!({
            "type": "array",
            "items": {"$ref": "#/components/schemas/Database"},
        })),
        ("get", "/metrics") => json!({"text/plain": {"schema": {"type": "string"}}}),
        ("get", "/openapi.json") => json_content(json!({"type": "object"})),
        _ => return None,
    })
}

/// The request body of routes Chroma's document lacks.
fn own_request(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/api/v2/admin/backup") => Some(json!({
            "required": true,
            "content": json_content(json!({
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}},
            })),
        })),
        _ => None,
    }
}

/// Builds the document from [`ROUTES`] and Chroma's schemas.
pub fn document() -> Value {
    let chroma: Value = serde_json::from_str(CHROMA).expect("the vendored document is JSON");
    let mut theirs: HashMap<(String, String), &Value> = HashMap::new();
    for (path, item) in chroma["paths"].as_object().into_iter().flatten() {
        for (m, op) in item.as_object().into_iter().flatten() {
            theirs.insert((m.clone(), shape(path)), op);
        }
    }
    let mut paths = Map::new();
    for (m, path, summary, status) in ROUTES {
        let chroma_op = theirs.get(&(m.to_string(), shape(path))).copied();
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        // Query parameters (limit, offset, ...) are Chroma's.
        if let Some(op) = chroma_op {
            params.extend(
                op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .cloned(),
            );
        }
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{m} {path}"),
            "parameters": params,
        });
        let request = own_request(m, path).or_else(|| chroma_op?.get("requestBody").cloned());
        if let Some(r) = request {
            op["requestBody"] = r;
        }
        let mut responses = Map::new();
        if *status == "501" {
            responses.insert(
                "501".into(),
                error_response("Not served by Indigo (Chroma Cloud or distributed Chroma only)."),
            );
        } else {
            let mut ok = json!({"description": summary});
            let content = own_success(m, path).or_else(|| {
                chroma_op?["responses"][*status]
                    .get("content")
                    .filter(|c| c.as_object().is_some_and(|c| !c.is_empty()))
                    .cloned()
            });
            if let Some(c) = content {
                ok["content"] = c;
            }
            responses.insert(status.to_string(), ok);
        }
        responses.insert(
            "4XX".into(),
            error_response(
                "Bad input, unknown name, conflict, auth, limit or quota: nothing changed.",
            ),
        );
        responses.insert(
            "5XX".into(),
            error_response("A server-side failure or overload; the message says what to do next."),
        );
        op["responses"] = Value::Object(responses);
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(m.to_string(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Indigo",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Indigo's HTTP API: Chroma's API v2, as the official chromadb clients use it.",
        },
        "paths": paths,
        "components": {"schemas": chroma["components"]["schemas"].clone()},
    })
}
