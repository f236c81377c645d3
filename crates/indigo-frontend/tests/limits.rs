//! Every input is bounded: a request beyond a limit gets a 4xx with Chroma's error
//! JSON and changes nothing; requests in flight and their time are bounded;
//! clients are rate-limited per address and failed authentications are slowed;
//! metrics labels stay bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body_util::BodyExt;
use indigo_frontend::{router, Settings};
use serde_json::{json, Value};
use tower::ServiceExt;

const BASE: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

fn small() -> Settings {
    Settings {
        max_dimension: 8,
        max_hnsw_neighbors: 32,
        max_hnsw_ef: 500,
        max_n_results: 50,
        max_query_embeddings: 3,
        max_ids: 5,
        max_searches: 2,
        max_filter_values: 4,
        max_filter_conditions: 6,
        max_regexes: 1,
        ..Settings::default()
    }
}

fn request(method: &str, uri: &str, body: Value, addr: Option<&str>) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    if let Some(a) = addr {
        let a: SocketAddr = a.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(a));
    }
    req
}

async fn send(app: &axum::Router, req: Request<Body>) -> (u16, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Value) -> (u16, Value) {
    send(app, request(method, uri, body, None)).await
}

fn setup(settings: Settings) -> (tempfile::TempDir, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        indigo::Indigo::open_with(
            dir.path(),
            indigo::Options {
                limits: settings.limits(),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    (dir, router(db, settings))
}

/// A 4xx with Chroma's error JSON whose name is `name`.
fn refused(r: &(u16, Value), name: &str) {
    assert!((400..500).contains(&r.0), "{r:?}");
    assert_eq!(r.1["error"], name, "{r:?}");
    assert!(
        r.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{r:?}"
    );
}

#[tokio::test]
async fn requests_beyond_each_limit_are_refused_and_change_nothing() {
    let (_dir, app) = setup(small());
    // Configuration: HNSW parameters, by configuration and by legacy metadata.
    for body in [
        json!({"name": "col", "configuration": {"hnsw": {"max_neighbors": 33}}}),
        json!({"name": "col", "configuration": {"hnsw": {"ef_construction": 501}}}),
        json!({"name": "col", "metadata": {"hnsw:M": 1048576}}),
        json!({"name": "col", "metadata": {"hnsw:search_ef": 501}}),
    ] {
        refused(
            &call(&app, "POST", BASE, body).await,
            "InvalidArgumentError",
        );
    }
    assert_eq!(call(&app, "GET", BASE, json!(null)).await.1, json!([]));
    let (s, c) = call(&app, "POST", BASE, json!({"name": "col"})).await;
    assert_eq!(s, 200);
    let id = c["id"].as_str().unwrap().to_string();
    let col = format!("{BASE}/{id}");
    refused(
        &call(
            &app,
            "PUT",
            &col,
            json!({"new_configuration": {"hnsw": {"ef_search": 501}}}),
        )
        .await,
        "InvalidArgumentError",
    );
    // Dimension.
    let r = call(
        &app,
        "POST",
        &format!("{col}/add"),
        json!({"ids": ["a"], "embeddings": [vec![0.0f32; 9]]}),
    )
    .await;
    refused(&r, "InvalidArgumentError");
    assert_eq!(
        call(&app, "GET", &format!("{col}/count"), json!(null))
            .await
            .1,
        0
    );
    let ids: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
    let embs: Vec<Vec<f32>> = (0..5).map(|i| vec![i as f32; 8]).collect();
    let (s, _) = call(
        &app,
        "POST",
        &format!("{col}/add"),
        json!({"ids": ids, "embeddings": embs}),
    )
    .await;
    assert_eq!(s, 201);
    // Results and query embeddings per query.
    let q =
        |n: usize, k: usize| json!({"query_embeddings": vec![vec![0.0f32; 8]; k], "n_results": n});
    assert_eq!(
        call(&app, "POST", &format!("{col}/query"), q(50, 3))
            .await
            .0,
        200
    );
    refused(
        &call(&app, "POST", &format!("{col}/query"), q(51, 1)).await,
        "QuotaError",
    );
    refused(
        &call(&app, "POST", &format!("{col}/query"), q(1, 4)).await,
        "QuotaError",
    );
    // Ids per get and delete; the refused delete deletes nothing.
    let six: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    refused(
        &call(&app, "POST", &format!("{col}/get"), json!({"ids": six})).await,
        "QuotaError",
    );
    refused(
        &call(&app, "POST", &format!("{col}/delete"), json!({"ids": six})).await,
        "QuotaError",
    );
    assert_eq!(
        call(&app, "GET", &format!("{col}/count"), json!(null))
            .await
            .1,
        5
    );
    // Filters: $in width, $or width, conditions, regular expressions.
    for w in [
        json!({"where": {"k": {"$in": [1, 2, 3, 4, 5]}}}),
        json!({"where": {"$or": [{"a": 1}, {"b": 1}, {"c": 1}, {"d": 1}, {"e": 1}]}}),
        json!({"where": {"$and": [{"a": 1}, {"$and": [{"b": 1}, {"$and": [{"c": 1}, {"$and": [{"d": 1}, {"e": 1}]}]}]}]}}),
        json!({"where_document": {"$or": [{"$regex": "a"}, {"$regex": "b"}]}}),
    ] {
        refused(
            &call(&app, "POST", &format!("{col}/get"), w.clone()).await,
            "InvalidArgumentError",
        );
        refused(
            &call(&app, "POST", &format!("{col}/delete"), w).await,
            "InvalidArgumentError",
        );
    }
    assert_eq!(
        call(&app, "GET", &format!("{col}/count"), json!(null))
            .await
            .1,
        5
    );
    // Searches per request, and a search's limit.
    let s1 = json!({"limit": {"limit": 2}});
    assert_eq!(
        call(
            &app,
            "POST",
            &format!("{col}/search"),
            json!({"searches": [s1, s1]})
        )
        .await
        .0,
        200
    );
    refused(
        &call(
            &app,
            "POST",
            &format!("{col}/search"),
            json!({"searches": [s1, s1, s1]}),
        )
        .await,
        "QuotaError",
    );
    refused(
        &call(
            &app,
            "POST",
            &format!("{col}/search"),
            json!({"searches": [{"limit": {"limit": 51}}]}),
        )
        .await,
        "QuotaError",
    );
}

#[tokio::test]
async fn metric_labels_stay_bounded() {
    let (_dir, app) = setup(Settings::default());
    for m in ["FOO", "BAR", "BAZ"] {
        call(&app, m, "/api/v2/heartbeat", json!(null)).await;
    }
    call(&app, "GET", "/no/such/route/1", json!(null)).await;
    call(&app, "GET", "/no/such/route/2", json!(null)).await;
    let (_, m) = call(&app, "GET", "/metrics", json!(null)).await;
    let m = m.as_str().unwrap();
    assert!(!m.contains("FOO") && !m.contains("/no/such"), "{m}");
    assert!(m.contains("method=\"OTHER\""), "{m}");
    assert!(m.contains("route=\"unmatched\""), "{m}");
}

#[tokio::test]
async fn clients_are_limited_per_address_and_failed_authentication_is_slowed() {
    let settings = Settings {
        rate_limit_per_second: 0.05,
        rate_limit_burst: 2.0,
        ..Settings::default()
    };
    let (_dir, app) = setup(settings);
    let hb = |addr: &str| {
        request(
            "GET",
            "/api/v2/tenants/default_tenant",
            json!(null),
            Some(addr),
        )
    };
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(send(&app, hb("10.0.0.1:5000")).await.0);
    }
    assert_eq!(a, vec![200, 200, 429]);
    // Another address has its own bucket.
    assert_eq!(send(&app, hb("10.0.0.2:5000")).await.0, 200);

    let settings = Settings {
        tokens: vec![indigo_frontend::settings::TokenGrant {
            token: "right".into(),
            tenant: "default_tenant".into(),
            databases: vec![],
            user_id: String::new(),
            admin: false,
        }],
        auth_failures_per_minute: 3.0,
        ..Settings::default()
    };
    let (_dir, app) = setup(settings);
    let with = |token: &str, addr: &str| {
        let mut r = request(
            "GET",
            "/api/v2/tenants/default_tenant",
            json!(null),
            Some(addr),
        );
        r.headers_mut()
            .insert("x-chroma-token", token.parse().unwrap());
        r
    };
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(send(&app, with("guess", "10.0.0.3:1")).await.0);
    }
    assert_eq!(got, vec![401, 401, 401, 429, 429]);
    // Others, and the right token from elsewhere, are not slowed.
    assert_eq!(send(&app, with("guess", "10.0.0.4:1")).await.0, 401);
    assert_eq!(send(&app, with("right", "10.0.0.4:1")).await.0, 200);
}

/// A body that never finishes: the request stays in flight until it times out.
fn stalled(uri: &str) -> Request<Body> {
    let stream = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

#[tokio::test]
async fn requests_in_flight_and_their_time_are_bounded() {
    let settings = Settings {
        max_requests_in_flight: 1,
        request_timeout_secs: 2,
        ..Settings::default()
    };
    let (_dir, app) = setup(settings);
    let uri = format!("{BASE}/00000000-0000-0000-0000-000000000000/get");
    // While a stalled request holds the only slot, others are turned away. (The
    // stalled one may itself be turned away if it arrives while a probe holds the
    // slot; then it is sent again.)
    let (slow, busy) = loop {
        let slow = tokio::spawn({
            let app = app.clone();
            let uri = uri.clone();
            async move { send(&app, stalled(&uri)).await }
        });
        let busy = loop {
            let r = call(&app, "GET", "/api/v2/tenants/default_tenant", json!(null)).await;
            if r.0 == 503 || slow.is_finished() {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if busy.0 == 503 {
            break (slow, busy);
        }
        let (status, body) = slow.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("max_requests_in_flight"));
    };
    assert!(busy.1["message"]
        .as_str()
        .unwrap()
        .contains("max_requests_in_flight"));
    assert_eq!(
        call(&app, "GET", "/api/v2/heartbeat", json!(null)).await.0,
        200
    );
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("request_timeout_secs"));
    // The slot is free again.
    assert_eq!(
        call(&app, "GET", "/api/v2/tenants/default_tenant", json!(null))
            .await
            .0,
        200
    );
}
