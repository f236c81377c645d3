//! The OpenAPI document of Indigo's own routes, served at `/openapi.json`. The route
//! table here is checked against the router by a test, so the two cannot drift.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, Required, ResponseBuilder};

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
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/fork", "Distributed Chroma only: answers 501.", "501"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/fork_count", "Distributed Chroma only: answers 501.", "501"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/functions/attach", "Distributed Chroma only: answers 501.", "501"),
    ("get", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/functions/{name}", "Distributed Chroma only: answers 501.", "501"),
    ("post", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/attached_functions/{name}/detach", "Distributed Chroma only: answers 501.", "501"),
    ("get", "/api/v2/collections/{crn}", "Chroma Cloud only: answers 501.", "501"),
    ("get", "/metrics", "Prometheus metrics.", "200"),
    ("get", "/openapi.json", "This document.", "200"),
];

fn method(m: &str) -> HttpMethod {
    match m {
        "get" => HttpMethod::Get,
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        "patch" => HttpMethod::Patch,
        "delete" => HttpMethod::Delete,
        other => unreachable!("method {other}"),
    }
}

/// Builds the document from [`ROUTES`].
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (m, path, summary, status) in ROUTES {
        let mut op = OperationBuilder::new()
            .summary(Some(*summary))
            .response(*status, ResponseBuilder::new().description(*summary))
            .response(
                "4XX",
                ResponseBuilder::new()
                    .description("Chroma's error JSON: {\"error\": name, \"message\": text}"),
            );
        for seg in path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True),
                );
            }
        }
        paths = paths.path(*path, PathItem::new(method(m), op.build()));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Indigo")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Indigo's HTTP API: Chroma's API v2, as the official chromadb clients use it.",
                )),
        )
        .paths(paths.build())
        .build()
}
