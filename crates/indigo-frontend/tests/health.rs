//! Background failures are visible: a collection whose store fails (disk full,
//! injected through the `FaultFs` seam) shows in the log, in `/metrics` and in
//! `/api/v2/healthcheck` and `/ready` (503 with the reason); writes to it are
//! refused with a 503 instead of being acknowledged into a log nothing folds;
//! other collections keep working; and all of it clears once the disk does.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use indigo_frontend::{router, Settings};
use indigo_storage::fs::{FaultFs, FaultKind};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Value) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn add_body(from: u32, to: u32) -> Value {
    let ids: Vec<String> = (from..to).map(|i| format!("r{i}")).collect();
    let embs: Vec<Vec<f32>> = (from..to).map(|i| vec![i as f32, 1.0, 0.5]).collect();
    json!({"ids": ids, "embeddings": embs})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_collection_is_visible_refuses_writes_and_recovers() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let db = Arc::new(
        indigo::Indigo::open_with(
            dir.path(),
            indigo::Options {
                fs: Arc::new(fs.clone()),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let app = router(db.clone(), Settings::default());
    let base = "/api/v2/tenants/default_tenant/databases/default_database/collections";
    let mut ids = Vec::new();
    for name in ["failing", "healthy"] {
        let (s, c) = call(&app, "POST", base, json!({"name": name})).await;
        assert_eq!(s, 200, "{c}");
        let id = c["id"].as_str().unwrap().to_string();
        let (s, v) = call(&app, "POST", &format!("{base}/{id}/add"), add_body(0, 50)).await;
        assert_eq!(s, 201, "{v}");
        ids.push(id);
    }
    let (bad, good) = (ids[0].clone(), ids[1].clone());
    // Both first writes are folded before the fault: a compactor still working on
    // them when the disk fills would fail before the next write, which would then
    // be refused (as it should be) instead of acknowledged (what this step tests).
    for id in &ids {
        wait_for("the first writes were not indexed", async || {
            let (_, st) = call(
                &app,
                "GET",
                &format!("{base}/{id}/indexing_status"),
                json!(null),
            )
            .await;
            st["num_unindexed_ops"] == 0
        })
        .await;
    }
    let (s, _) = call(&app, "GET", "/api/v2/healthcheck", json!(null)).await;
    assert_eq!(s, 200);

    // The failing collection's disk fills up.
    fs.fail_under(
        &dir.path().join("collections").join(&bad),
        None,
        FaultKind::NoSpace,
    );
    let (s, v) = call(&app, "POST", &format!("{base}/{bad}/add"), add_body(50, 60)).await;
    assert_eq!(
        s, 201,
        "the log is fine, so this write is acknowledged: {v}"
    );
    wait_for("the failure was not reported", async || {
        call(&app, "GET", "/api/v2/healthcheck", json!(null))
            .await
            .0
            == 503
    })
    .await;
    let (s, h) = call(&app, "GET", "/api/v2/healthcheck", json!(null)).await;
    assert_eq!(s, 503);
    let failures = h["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["component"] == "compactor" && f["subject"] == bad.as_str()),
        "{h}"
    );
    assert!(h["message"].as_str().unwrap().contains("No space"), "{h}");
    assert_eq!(call(&app, "GET", "/ready", json!(null)).await.0, 503);

    // Writes to it are refused, with a reason, and change nothing.
    let (s, e) = call(&app, "POST", &format!("{base}/{bad}/add"), add_body(60, 70)).await;
    assert_eq!(s, 503, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("retry later"),
        "{e}"
    );
    // Its reads still answer, with every acknowledged record.
    let (s, n) = call(&app, "GET", &format!("{base}/{bad}/count"), json!(null)).await;
    assert_eq!((s, n), (200, json!(60)));
    // The other collection keeps working and gets indexed.
    let (s, _) = call(
        &app,
        "POST",
        &format!("{base}/{good}/add"),
        add_body(50, 80),
    )
    .await;
    assert_eq!(s, 201);
    wait_for("the healthy collection was not indexed", async || {
        let (_, st) = call(
            &app,
            "GET",
            &format!("{base}/{good}/indexing_status"),
            json!(null),
        )
        .await;
        st["num_unindexed_ops"] == 0
    })
    .await;

    // Metrics count the failed attempts; the log names the collection.
    let (_, m) = call(&app, "GET", "/metrics", json!(null)).await;
    let m = m.as_str().unwrap().to_string();
    let count = m
        .lines()
        .find_map(|l| l.strip_prefix("indigo_background_errors_total{component=\"compactor\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(count >= 1, "{m}");
    assert!(
        m.contains("indigo_background_failing{component=\"compactor\"} 1"),
        "{m}"
    );
    let logged = String::from_utf8_lossy(&log.0.lock()).into_owned();
    assert!(
        logged.contains("background failure") && logged.contains(&bad),
        "log: {logged}"
    );

    // The disk has room again: the compactor reopens the collection's files, folds
    // what was acknowledged, and health clears.
    fs.clear_fault();
    wait_for("health did not recover", async || {
        call(&app, "GET", "/api/v2/healthcheck", json!(null))
            .await
            .0
            == 200
    })
    .await;
    let (s, _) = call(&app, "POST", &format!("{base}/{bad}/add"), add_body(60, 70)).await;
    assert_eq!(s, 201);
    let (_, got) = call(
        &app,
        "POST",
        &format!("{base}/{bad}/get"),
        json!({"include": ["embeddings"]}),
    )
    .await;
    let mut got_ids: Vec<String> = got["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    got_ids.sort_by_key(|s| s[1..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..70).map(|i| format!("r{i}")).collect();
    assert_eq!(got_ids, want);
    wait_for("the recovered collection was not indexed", async || {
        let (_, st) = call(
            &app,
            "GET",
            &format!("{base}/{bad}/indexing_status"),
            json!(null),
        )
        .await;
        st["num_unindexed_ops"] == 0
    })
    .await;
    let (_, q) = call(
        &app,
        "POST",
        &format!("{base}/{bad}/query"),
        json!({"query_embeddings": [[65.0, 1.0, 0.5]], "n_results": 1}),
    )
    .await;
    assert_eq!(q["ids"], json!([["r65"]]));
    let logged = String::from_utf8_lossy(&log.0.lock()).into_owned();
    assert!(logged.contains("recovered from"), "log: {logged}");
}

/// A log that cannot be written refuses every write (nothing is acknowledged
/// that is not durable) and health says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_shows_in_health() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let db = Arc::new(
        indigo::Indigo::open_with(
            dir.path(),
            indigo::Options {
                fs: Arc::new(fs.clone()),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let app = router(db.clone(), Settings::default());
    let base = "/api/v2/tenants/default_tenant/databases/default_database/collections";
    let (_, c) = call(&app, "POST", base, json!({"name": "logged"})).await;
    let id = c["id"].as_str().unwrap().to_string();
    fs.fail_under(&dir.path().join("log"), None, FaultKind::Io);
    let (s, e) = call(&app, "POST", &format!("{base}/{id}/add"), add_body(0, 5)).await;
    assert_eq!(s, 500, "{e}");
    let (s, h) = call(&app, "GET", "/api/v2/healthcheck", json!(null)).await;
    assert_eq!(s, 503);
    assert_eq!(h["is_log_client_ready"], false, "{h}");
    assert!(h["failures"][0]["component"] == "log", "{h}");
    // Nothing was acknowledged, so nothing is there.
    assert_eq!(
        call(&app, "GET", &format!("{base}/{id}/count"), json!(null))
            .await
            .1,
        0
    );
}
