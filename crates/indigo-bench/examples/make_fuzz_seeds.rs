//! Writes seed inputs for the fuzz targets into `fuzz/corpus/<target>/`: real
//! files made by Indigo's own code (a log, a store's WAL, segment and manifest, an
//! HNSW commit log and snapshot, a collection record, a backup manifest) and
//! hand-written request bodies and filters, so the fuzzers start from valid input.
//!
//! `cargo run -p indigo-bench --example make_fuzz_seeds`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indigo::{Batch, Indigo};
use indigo_index::{Hnsw, HnswParams, Space};
use indigo_log::{CollectionId, FileLog, Log};
use indigo_storage::fs::{FaultFs, FileSystem};
use indigo_storage::{Options, Store, Strategy, WriteBatch, WriteOptions};
use serde_json::json;

fn corpus(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn seed(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(name), bytes).unwrap();
}

fn files(fs: &FaultFs, dir: &Path, ends: &str) -> Vec<(String, Vec<u8>)> {
    fs.list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(ends))
        .map(|n| {
            let b = fs.read_all(&dir.join(&n)).unwrap();
            (n, b)
        })
        .collect()
}

fn main() {
    // The write-ahead log and its payloads.
    let fs = FaultFs::new();
    let log =
        FileLog::open_with_fs(Arc::new(fs.clone()), Path::new("/log"), Default::default()).unwrap();
    let entry = indigo_types::WriteEntry {
        kind: indigo_types::WriteKind::Upsert,
        records: vec![indigo_types::RecordOp {
            id: "a".into(),
            embedding: Some(Arc::from(vec![0.5f32, -1.0])),
            document: Some("doc".into()),
            uri: None,
            metadata: Some(
                indigo_types::metadata::metadata_from_json(&json!({"k": 1, "l": ["x"]}), false)
                    .unwrap(),
            ),
        }],
    };
    seed("log_payload", "upsert", &entry.encode());
    for c in 0..3u8 {
        log.append(CollectionId([c; 16]), &entry.encode()).unwrap();
    }
    for (i, (_, b)) in files(&fs, Path::new("/log"), ".ilog")
        .into_iter()
        .enumerate()
    {
        seed("log_file", &format!("file{i}"), &b);
    }

    // A store: WAL, segments of both strategies, manifest.
    let fs = FaultFs::new();
    let dir = Path::new("/store");
    let opts = Options {
        memtable_bytes: 2 << 10,
        background: false,
        ..Default::default()
    };
    let store = Store::open_with_fs(Arc::new(fs.clone()), dir, opts).unwrap();
    let kv = store.bucket("kv", Strategy::Replace).unwrap();
    let sets = store.bucket("sets", Strategy::Set).unwrap();
    for i in 0..200u32 {
        let mut wb = WriteBatch::new();
        wb.put(&kv, format!("key{i:04}"), format!("value {i}"));
        if i % 7 == 0 {
            wb.delete(&kv, format!("key{:04}", i / 2));
        }
        wb.set_add(&sets, format!("s{}", i % 5), i as u64);
        store.write(&wb, WriteOptions::SYNC).unwrap();
    }
    for (n, b) in files(&fs, dir, ".wal") {
        seed("store_wal", &n, &b);
    }
    for (n, b) in files(&fs, dir, ".seg").into_iter().take(8) {
        seed("store_segment", &n, &b);
    }
    for (n, b) in files(&fs, dir, "MANIFEST") {
        seed("store_manifest", &n, &b);
    }
    drop(store);

    // An HNSW index: a commit log, then a snapshot.
    let fs = FaultFs::new();
    let dir = Path::new("/idx");
    let mut p = HnswParams::new(Space::L2, 4);
    p.max_neighbors = 4;
    p.ef_construction = 8;
    let idx = Hnsw::open_with_fs(Arc::new(fs.clone()), dir, p).unwrap();
    for i in 0..40u32 {
        let f = i as f32;
        idx.insert(i, &[f.sin(), f.cos(), f * 0.1, 1.0]).unwrap();
    }
    for i in (0..40).step_by(6) {
        idx.delete(i).unwrap();
    }
    idx.sync().unwrap();
    for (n, b) in files(&fs, dir, ".hnsw") {
        seed("hnsw_log", &n, &b);
    }
    idx.repair().unwrap();
    idx.condense().unwrap();
    for (n, b) in files(&fs, dir, ".hnsw") {
        if n.starts_with("snapshot") {
            seed("hnsw_snapshot", &n, &b);
        }
    }

    // A collection record and a backup manifest.
    let tmp = tempfile::tempdir().unwrap();
    let db = Indigo::open(tmp.path().join("data")).unwrap();
    let c = db
        .create_collection(
            "default_tenant",
            "default_database",
            "seeds",
            Some(json!({"topic": "fuzz"})),
            None,
        )
        .unwrap();
    c.add(Batch::new(vec!["x".into()], vec![vec![1.0, 2.0]]))
        .unwrap();
    let rec = std::fs::read(
        tmp.path()
            .join("data/collections")
            .join(c.id())
            .join("COLLECTION"),
    )
    .unwrap();
    seed("collection_record", "record", &rec);
    db.backup(&tmp.path().join("backup")).unwrap();
    seed(
        "backup_manifest",
        "manifest",
        &std::fs::read(tmp.path().join("backup/BACKUP")).unwrap(),
    );

    // The log on object storage: its manifest and fragments.
    let objects = Arc::new(indigo_object::Remote::memory());
    let olog = indigo_objlog::ObjectLog::new(objects.clone(), Default::default());
    for i in 0..3u8 {
        olog.append(CollectionId([9; 16]), &[i; 40]).unwrap();
    }
    use indigo_object::Objects;
    for (i, o) in objects.list("log/").unwrap().into_iter().enumerate() {
        seed(
            "objlog_objects",
            &format!("o{i}"),
            &objects.get(&o.key).unwrap().data,
        );
    }
    // A version manifest.
    let m = indigo_version::VersionManifest {
        collection: "c".into(),
        version: 3,
        log_offset: 77,
        dimension: Some(384),
        files: vec![indigo_version::VersionFile {
            name: "store/0000000003.seg".into(),
            key: "col/c/f/0123".into(),
            bytes: 4096,
            crc32c: 12345,
        }],
    };
    seed("version_manifest", "m", &m.encode());

    // Filters and request bodies.
    let filters = [
        json!({"a": 1}),
        json!({"$and": [{"a": {"$gte": 0}}, {"b": {"$in": ["x", "y"]}}]}),
        json!({"$or": [{"c": {"$contains": 2}}, {"d": {"$ne": false}}, {"#document": {"$contains": "quick"}}]}),
        json!({"$regex": "qu[a-z]+k"}),
        json!({"$and": [{"$contains": "fox"}, {"$not_regex": "^x"}]}),
    ];
    for (i, f) in filters.iter().enumerate() {
        seed("filter", &format!("f{i}"), f.to_string().as_bytes());
    }
    let writes = [
        json!({"ids": ["a", "b"], "embeddings": [[1.0, 2.0], [3.0, 4.5]], "documents": ["x", null],
               "metadatas": [{"k": 1, "l": [1, 2]}, null], "uris": [null, "u"]}),
        json!({"ids": ["a"], "embeddings": ["AACAPwAAAEA="], "metadatas": [{"k": null}]}),
    ];
    for (i, w) in writes.iter().enumerate() {
        seed("request_write", &format!("w{i}"), w.to_string().as_bytes());
    }
    let reads = [
        json!({"ids": ["a"], "where": {"k": 1}, "include": ["documents", "metadatas"], "limit": 3}),
        json!({"query_embeddings": [[1.0, 2.0], "AACAPwAAAEA="], "n_results": 5,
               "where_document": {"$contains": "x"}, "include": ["distances"]}),
    ];
    for (i, r) in reads.iter().enumerate() {
        seed("request_read", &format!("r{i}"), r.to_string().as_bytes());
    }
    let searches = [json!({"searches": [
        {"filter": {"k": {"$gt": 0}}, "limit": {"limit": 5, "offset": 1},
         "select": {"keys": ["#document", "#score", "k"]},
         "rank": {"$sum": [{"$mul": [{"$val": 0.5}, {"$knn": {"query": [1.0, 2.0], "limit": 10}}]},
                           {"$div": {"left": {"$val": 1.0}, "right": {"$knn": {"query": [0.0, 1.0], "return_rank": true, "default": 100.0}}}}]},
         "group_by": {"keys": ["k"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 2}}}}
    ]})];
    for (i, s) in searches.iter().enumerate() {
        seed("request_search", &format!("s{i}"), s.to_string().as_bytes());
    }
    println!("seeds written to fuzz/corpus/");
}
