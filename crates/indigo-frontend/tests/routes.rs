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
    let doc = serde_json::to_value(openapi::document()).unwrap();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    assert!(doc["paths"]
        ["/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/query"]["post"]
        .is_object());
}
