//! The schema API through HTTP, as Chroma's clients use it: a schema sent on
//! create is merged onto the defaults, kept across restarts and returned; it
//! decides which filters are served (an index switched off refuses them, with
//! Chroma's messages, in get, query, delete and search); configuration and
//! schema are reconciled (both non-default is a conflict); a node reporting
//! spann keeps and returns spann settings and lets search-time ones change.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use indigo::schema::VectorIndexKind;
use indigo_frontend::{router, Settings};
use serde_json::{json, Value};
use tower::ServiceExt;

const BASE: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

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
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn open(dir: &std::path::Path, kind: VectorIndexKind) -> axum::Router {
    let db = indigo::Indigo::open_with(
        dir,
        indigo::Options {
            default_index: kind,
            ..Default::default()
        },
    )
    .unwrap();
    router(Arc::new(db), Settings::default())
}

fn off(index: &str) -> Value {
    json!({index: {"enabled": false, "config": {}}})
}

#[tokio::test]
async fn a_schema_is_kept_and_decides_which_filters_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), VectorIndexKind::Hnsw);
    let schema = json!({"keys": {
        "secret": {"string": off("string_inverted_index")},
        "#document": {"string": off("fts_index")},
        "tag": {"string": {"string_inverted_index": {"enabled": true, "config": {}}}},
    }});
    let (s, c) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "cols1", "schema": schema}),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let keys = &c["schema"]["keys"];
    assert_eq!(
        keys["secret"]["string"]["string_inverted_index"]["enabled"],
        false
    );
    assert_eq!(keys["#document"]["string"]["fts_index"]["enabled"], false);
    // The defaults were merged in: the vector index is still on #embedding.
    assert_eq!(
        keys["#embedding"]["float_list"]["vector_index"]["enabled"],
        true
    );
    assert_eq!(
        c["schema"]["defaults"]["int"]["int_inverted_index"]["enabled"],
        true
    );

    let (s, e) = call(
        &app,
        "POST",
        &format!("{BASE}/{id}/add"),
        json!({"ids": ["a", "b"], "embeddings": [[1.0, 0.0], [0.0, 1.0]],
               "metadatas": [{"secret": "x", "tag": "t", "n": 1}, {"secret": "y", "tag": "u", "n": 2}],
               "documents": ["alpha", "beta"]}),
    )
    .await;
    assert_eq!(s, 201, "{e}");

    let meta_msg =
        "Cannot filter using metadata key 'secret' with type 'Str' because indexing is disabled";
    let fts_msg = "Cannot filter using full-text search because FTS indexing is disabled";
    let refused = [
        ("get", json!({"where": {"secret": "x"}}), meta_msg),
        (
            "get",
            json!({"where": {"$and": [{"tag": "t"}, {"secret": {"$in": ["x"]}}]}}),
            meta_msg,
        ),
        (
            "query",
            json!({"query_embeddings": [[1.0, 0.0]], "n_results": 1, "where": {"secret": "x"}}),
            meta_msg,
        ),
        ("delete", json!({"where": {"secret": "x"}}), meta_msg),
        (
            "get",
            json!({"where_document": {"$contains": "alpha"}}),
            fts_msg,
        ),
        (
            "delete",
            json!({"where_document": {"$contains": "alpha"}}),
            fts_msg,
        ),
        (
            "search",
            json!({"searches": [{"filter": {"secret": "x"}}]}),
            meta_msg,
        ),
    ];
    for (op, body, msg) in refused {
        let (s, e) = call(&app, "POST", &format!("{BASE}/{id}/{op}"), body.clone()).await;
        assert_eq!(s, 400, "{op} {body}: {e}");
        assert_eq!(e["error"], "InvalidArgumentError", "{e}");
        assert_eq!(e["message"], msg, "{op} {body}");
    }
    // Nothing was deleted by the refused deletes; other keys and types filter.
    let (_, n) = call(&app, "GET", &format!("{BASE}/{id}/count"), json!(null)).await;
    assert_eq!(n, 2);
    let (s, g) = call(
        &app,
        "POST",
        &format!("{BASE}/{id}/get"),
        json!({"where": {"tag": "t"}}),
    )
    .await;
    assert_eq!((s, &g["ids"]), (200, &json!(["a"])), "{g}");
    let (s, g) = call(
        &app,
        "POST",
        &format!("{BASE}/{id}/get"),
        json!({"where": {"secret": 5}}),
    )
    .await;
    assert_eq!(
        (s, &g["ids"]),
        (200, &json!([])),
        "an int filter on the key: {g}"
    );

    // Keys written for the first time joined the schema, with the defaults'
    // settings; listed keys kept theirs.
    let (_, c) = call(&app, "GET", &format!("{BASE}/cols1"), json!(null)).await;
    let keys = &c["schema"]["keys"];
    assert_eq!(
        keys["n"]["int"]["int_inverted_index"]["enabled"], true,
        "{c}"
    );
    assert!(keys["n"]["string"].is_null(), "{c}");
    assert_eq!(
        keys["secret"]["string"]["string_inverted_index"]["enabled"],
        false
    );
    assert_eq!(
        keys["tag"]["string"]["string_inverted_index"]["enabled"],
        true
    );

    // Across a restart, by name and in the list, the schema is the same.
    let before = c["schema"].clone();
    drop(app);
    let app = open(dir.path(), VectorIndexKind::Hnsw);
    let (_, c) = call(&app, "GET", &format!("{BASE}/cols1"), json!(null)).await;
    assert_eq!(c["schema"], before);
    let (_, list) = call(&app, "GET", BASE, json!(null)).await;
    assert_eq!(list[0]["schema"], before);
    let (s, _) = call(
        &app,
        "POST",
        &format!("{BASE}/{id}/get"),
        json!({"where": {"secret": "x"}}),
    )
    .await;
    assert_eq!(s, 400);

    // A collection created without a schema filters on everything.
    let (_, c2) = call(&app, "POST", BASE, json!({"name": "cols2"})).await;
    let id2 = c2["id"].as_str().unwrap();
    let (s, g) = call(
        &app,
        "POST",
        &format!("{BASE}/{id2}/get"),
        json!({"where": {"secret": "x"}, "where_document": {"$contains": "a"}}),
    )
    .await;
    assert_eq!(s, 200, "{g}");
}

#[tokio::test]
async fn configuration_and_schema_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), VectorIndexKind::Hnsw);
    let cosine = json!({"keys": {"#embedding": {"float_list": {"vector_index": {
        "enabled": true, "config": {"space": "cosine"}}}}}});
    // A schema alone sets the space: the index and the configuration follow it.
    let (s, c) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "colr1", "schema": cosine}),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["configuration_json"]["hnsw"]["space"], "cosine");
    let id = c["id"].as_str().unwrap();
    call(
        &app,
        "POST",
        &format!("{BASE}/{id}/add"),
        json!({"ids": ["a", "b"], "embeddings": [[1.0, 0.0], [10.0, 1.0]]}),
    )
    .await;
    let (_, q) = call(
        &app,
        "POST",
        &format!("{BASE}/{id}/query"),
        json!({"query_embeddings": [[10.0, 0.0]], "n_results": 1, "include": ["distances"]}),
    )
    .await;
    // Under cosine, [1,0] is the same direction as [10,0]; under l2 it would lose.
    assert_eq!(q["ids"], json!([["a"]]), "{q}");

    // A configuration alone: the schema follows it.
    let (_, c) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "colr2", "configuration": {"hnsw": {"space": "ip", "ef_search": 50}}}),
    )
    .await;
    let e = &c["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]["config"];
    assert_eq!(
        (&e["space"], &e["hnsw"]["ef_search"]),
        (&json!("ip"), &json!(50)),
        "{c}"
    );

    // Both non-default: refused, and nothing is created.
    let (s, e) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "colr3", "schema": cosine, "configuration": {"hnsw": {"space": "ip"}}}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("conflict"), "{e}");
    let (s, _) = call(&app, "GET", &format!("{BASE}/colr3"), json!(null)).await;
    assert_eq!(s, 404);

    // Reserved keys are refused; a sparse index is accepted on one node too
    // (Chroma refuses it outside its distributed build; Indigo has it everywhere).
    let bad = json!({"keys": {"#mine": {"string": off("string_inverted_index")}}});
    let (s, e) = call(&app, "POST", BASE, json!({"name": "colr4", "schema": bad})).await;
    assert_eq!(s, 400, "{e}");
    let sparse = json!({"keys": {"sp": {"sparse_vector": {"sparse_vector_index": {
        "enabled": true, "config": {"source_key": "text"}}}}}});
    let (s, e) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "colr5", "schema": sparse}),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(
        e["schema"]["keys"]["sp"]["sparse_vector"]["sparse_vector_index"]["enabled"],
        json!(true),
        "{e}"
    );
    // ...but not switched on for every key (the defaults): it needs a key.
    let everywhere = json!({"defaults": {"sparse_vector": {"sparse_vector_index": {
        "enabled": true, "config": {}}}}});
    let (s, e) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "colr6", "schema": everywhere}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("requires a specific key"),
        "{e}"
    );

    // A schema of the wrong shape is refused, whole.
    for bad in [
        json!({"keys": {"tag": null}}),
        json!({"keys": {"tag": {"string": {"string_inverted_index": {"enabled": "false"}}}}}),
        json!({"defaults": []}),
        json!([]),
    ] {
        let (s, e) = call(&app, "POST", BASE, json!({"name": "colr7", "schema": bad})).await;
        assert_eq!(s, 400, "{bad}: {e}");
    }

    // With string indexes off by default, a string key written for the first time
    // joins the schema switched off, and filters on it are refused.
    let strings_off = json!({"defaults": {"string": off("string_inverted_index")}});
    let (s, c) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "colr6", "schema": strings_off}),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let id = c["id"].as_str().unwrap();
    let (s, _) = call(
        &app,
        "POST",
        &format!("{BASE}/{id}/add"),
        json!({"ids": ["a"], "embeddings": [[1.0, 0.0]], "metadatas": [{"k": "v", "m": ["x", "y"]}]}),
    )
    .await;
    assert_eq!(s, 201);
    let (_, c) = call(&app, "GET", &format!("{BASE}/colr6"), json!(null)).await;
    for k in ["k", "m"] {
        assert_eq!(
            c["schema"]["keys"][k]["string"]["string_inverted_index"]["enabled"], false,
            "{c}"
        );
    }
    let (s, e) = call(
        &app,
        "POST",
        &format!("{BASE}/{id}/get"),
        json!({"where": {"k": "v"}}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
}

#[tokio::test]
async fn a_node_reporting_spann_keeps_its_settings_and_lets_search_ones_change() {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path(), VectorIndexKind::Spann);
    let (s, c) = call(&app, "POST", BASE, json!({"name": "colp1"})).await;
    assert_eq!(s, 200, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let spann = |c: &Value| {
        c["schema"]["defaults"]["float_list"]["vector_index"]["config"]["spann"].clone()
    };
    assert_eq!(spann(&c)["search_nprobe"], 64);
    assert!(c["configuration_json"]["hnsw"].is_null(), "{c}");
    assert_eq!(c["configuration_json"]["spann"]["space"], "l2");

    let (s, e) = call(
        &app,
        "PUT",
        &format!("{BASE}/{id}"),
        json!({"new_configuration": {"spann": {"search_nprobe": 32, "ef_search": 150}}}),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let (_, c) = call(&app, "GET", &format!("{BASE}/colp1"), json!(null)).await;
    assert_eq!(
        (
            spann(&c)["search_nprobe"].clone(),
            spann(&c)["ef_search"].clone()
        ),
        (json!(32), json!(150))
    );
    assert_eq!(
        c["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["spann"]
            ["search_nprobe"],
        32
    );
    assert_eq!(spann(&c)["write_nprobe"], 32, "the others stay");
    assert_eq!(c["configuration_json"]["spann"]["search_nprobe"], 32);
    // Beyond Chroma's bounds, or a build-time setting: refused, nothing changes.
    for bad in [
        json!({"search_nprobe": 129}),
        json!({"ef_search": 201}),
        json!({"write_nprobe": 8}),
    ] {
        let (s, e) = call(
            &app,
            "PUT",
            &format!("{BASE}/{id}"),
            json!({"new_configuration": {"spann": bad}}),
        )
        .await;
        assert_eq!(s, 400, "{bad}: {e}");
    }
    // An hnsw setting on a spann collection would not be kept: refused.
    let (s, e) = call(
        &app,
        "PUT",
        &format!("{BASE}/{id}"),
        json!({"new_configuration": {"hnsw": {"ef_search": 300}}}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (_, c) = call(&app, "GET", &format!("{BASE}/colp1"), json!(null)).await;
    assert_eq!(spann(&c)["search_nprobe"], 32);

    // A spann configuration on create is kept (with its space) and served.
    let (s, c) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "colp2", "configuration": {"spann": {"space": "cosine", "search_nprobe": 10}}}),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(spann(&c)["search_nprobe"], 10);
    assert_eq!(c["configuration_json"]["spann"]["space"], "cosine");
    let (s, _) = call(
        &app,
        "POST",
        BASE,
        json!({"name": "colp3", "configuration": {"spann": {"search_nprobe": 1000}}}),
    )
    .await;
    assert_eq!(s, 400);
}
