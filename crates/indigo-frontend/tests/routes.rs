//! Every route in the OpenAPI document is served by the router (none falls through
//! to "no such route" or "method not allowed"), and the document lists them.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use indigo_frontend::{openapi, router, Settings};
use tower::ServiceExt;

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(indigo::Indigo::open(dir.path()).unwrap());
    let c = db
        .create_collection("default_tenant", "default_database", "routes", None, None)
        .unwrap();
    let app = router(db.clone(), Settings::default());
    for (method, path, _, _) in openapi::ROUTES {
        let uri = path
            .replace("{tenant}", "default_tenant")
            .replace("{database}", "default_database")
            .replace("{collection}", c.id())
            .replace("{name}", "f")
            .replace("{crn}", "x");
        let req = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert_ne!(status, 405, "{method} {path}: method not allowed");
        assert!(
            !text.contains("no such route"),
            "{method} {path}: not routed"
        );
    }
    let doc = openapi::document();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    assert!(doc["paths"]
        ["/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/query"]["post"]
        .is_object());
}

#[tokio::test]
async fn the_document_describes_bodies_and_parameters() {
    let doc = openapi::document();
    for (method, path, _, status) in openapi::ROUTES {
        let op = &doc["paths"][*path][*method];
        assert!(op.is_object(), "{method} {path} missing");
        for p in op["parameters"].as_array().unwrap() {
            assert!(
                p["schema"].is_object(),
                "{method} {path}: {p} has no schema"
            );
        }
        assert!(op["responses"][*status].is_object(), "{method} {path}");
        assert!(op["responses"]["4XX"]["content"].is_object());
    }
    let c = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}";
    for route in [
        "add", "upsert", "update", "delete", "get", "query", "search",
    ] {
        let op = &doc["paths"][format!("{c}/{route}")]["post"];
        assert!(
            op["requestBody"]["content"]["application/json"]["schema"].is_object(),
            "{route}"
        );
    }
    // Every reference resolves.
    let text = doc.to_string();
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }
}

#[tokio::test]
async fn errors_axum_answers_itself_come_as_chroma_error_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(indigo::Indigo::open(dir.path()).unwrap());
    let app = router(db, Settings::default());
    for (method, uri) in [
        (
            "GET",
            "/api/v2/tenants/default_tenant/databases?offset=null",
        ),
        ("DELETE", "/api/v2/heartbeat"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "{uri}: {status}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{uri}: not JSON: {}", String::from_utf8_lossy(&body)));
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
}
