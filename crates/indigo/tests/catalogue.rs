//! The catalogue is the authority, never a reason to delete: a lost, older or
//! newer catalogue stops start-up with a message saying what was found and what to
//! do, leaves every byte of data where it was, and `repair` rebuilds what the
//! catalogue lacks from the collections' own records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indigo::{Batch, Error, Indigo, QueryRequest};
use serde_json::json;

/// Every file under `root` with its contents' hash (the catalogue's own files
/// aside), to show that a refused start-up changed nothing.
fn data_files(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if !name.starts_with("sysdb.sqlite3") && name != "LOCK" {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    xxhash_rust::xxh3::xxh3_64(&bytes),
                );
            }
        }
    }
    out
}

fn remove_catalogue(root: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(root.join(format!("sysdb.sqlite3{suffix}")));
    }
}

fn copy_catalogue(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("sysdb.sqlite3{suffix}");
        if from.join(&name).exists() {
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        } else {
            let _ = std::fs::remove_file(to.join(&name));
        }
    }
}

fn vectors(n: usize, seed: f32) -> (Vec<String>, Vec<Vec<f32>>) {
    let ids = (0..n).map(|i| format!("id{i}")).collect();
    let embs = (0..n)
        .map(|i| {
            let a = i as f32 * 0.1;
            vec![a.cos(), a.sin(), seed]
        })
        .collect();
    (ids, embs)
}

/// Two collections in different tenants and databases, with metadata and
/// configuration, part folded into indexes and part only in the log.
fn populate(root: &Path) -> (String, String) {
    let db = Indigo::open(root).unwrap();
    db.create_tenant("acme").unwrap();
    db.create_database("acme", "prod").unwrap();
    let a = db
        .create_collection(
            "acme",
            "prod",
            "articles",
            Some(json!({"owner": "ops", "hnsw:space": "cosine"})),
            None,
        )
        .unwrap();
    let b = db
        .create_collection(
            "default_tenant",
            "default_database",
            "notes",
            None,
            Some(json!({"hnsw": {"ef_search": 50}})),
        )
        .unwrap();
    let (ids, embs) = vectors(300, 1.0);
    a.add(Batch::new(ids, embs)).unwrap();
    let (ids, embs) = vectors(200, 2.0);
    b.add(Batch::new(ids, embs)).unwrap();
    db.compact().unwrap();
    let (ids, embs) = vectors(320, 1.0);
    a.upsert(Batch::new(ids[300..].to_vec(), embs[300..].to_vec()))
        .unwrap(); // left in the log
    (a.id().to_string(), b.id().to_string())
}

fn check_restored(root: &Path, a_id: &str, b_id: &str) {
    let db = Indigo::open(root).unwrap();
    let a = db.get_collection("acme", "prod", "articles").unwrap();
    assert_eq!(a.id(), a_id);
    assert_eq!(
        a.info().metadata,
        Some(json!({"owner": "ops", "hnsw:space": "cosine"}))
    );
    assert_eq!(a.info().configuration["hnsw"]["space"], "cosine");
    assert_eq!(
        a.count().unwrap(),
        320,
        "folded and logged records are all there"
    );
    let (_, embs) = vectors(320, 1.0);
    let hits = a
        .query(&QueryRequest::new(vec![embs[310].clone()], 1))
        .unwrap();
    assert_eq!(hits[0].ids, vec!["id310"]);
    let b = db
        .get_collection("default_tenant", "default_database", "notes")
        .unwrap();
    assert_eq!(b.id(), b_id);
    assert_eq!(b.info().configuration["hnsw"]["ef_search"], 50);
    assert_eq!(b.info().dimension, Some(3));
    assert_eq!(b.count().unwrap(), 200);
    // And it takes writes again.
    b.add(Batch::new(vec!["new".into()], vec![vec![0.0, 0.0, 0.0]]))
        .unwrap();
    assert_eq!(b.count().unwrap(), 201);
}

#[test]
fn a_missing_catalogue_deletes_nothing_and_repair_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (a_id, b_id) = populate(root);
    remove_catalogue(root);
    let before = data_files(root);

    let err = Indigo::open(root).err().expect("start-up must refuse");
    eprintln!("what the user sees:\n{err}");
    let Error::Catalogue(msg) = &err else {
        panic!("{err}")
    };
    assert!(msg.contains("sysdb.sqlite3 is missing"), "{msg}");
    assert!(msg.contains(&a_id) && msg.contains(&b_id), "{msg}");
    assert!(msg.contains("indigo repair --path"), "{msg}");
    assert_eq!(
        data_files(root),
        before,
        "a refused start-up changes nothing"
    );
    assert!(
        !root.join("sysdb.sqlite3").exists(),
        "no empty catalogue is created over the data"
    );

    let report = indigo::repair(root, false).unwrap();
    let mut restored: Vec<_> = report
        .restored
        .iter()
        .map(|(id, t, d, n)| (id.as_str(), t.as_str(), d.as_str(), n.as_str()))
        .collect();
    restored.sort();
    let mut want = vec![
        (a_id.as_str(), "acme", "prod", "articles"),
        (b_id.as_str(), "default_tenant", "default_database", "notes"),
    ];
    want.sort();
    assert_eq!(restored, want);
    assert!(report.unknown_log.is_empty());
    check_restored(root, &a_id, &b_id);
}

#[test]
fn an_older_catalogue_is_refused_and_repair_adds_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let old = dir.path().join("old-catalogue");
    {
        let db = Indigo::open(&root).unwrap();
        let c = db
            .create_collection("default_tenant", "default_database", "early", None, None)
            .unwrap();
        c.add(Batch::new(vec!["e".into()], vec![vec![1.0, 2.0]]))
            .unwrap();
    }
    copy_catalogue(&root, &old);
    let late_id = {
        let db = Indigo::open(&root).unwrap();
        let c = db
            .create_collection("default_tenant", "default_database", "late", None, None)
            .unwrap();
        let (ids, embs) = vectors(100, 3.0);
        c.add(Batch::new(ids, embs)).unwrap();
        db.compact().unwrap();
        c.id().to_string()
    };
    // An operator restores the catalogue from the older copy.
    copy_catalogue(&old, &root);
    let before = data_files(&root);
    let err = Indigo::open(&root).err().expect("start-up must refuse");
    eprintln!("what the user sees:\n{err}");
    let msg = err.to_string();
    assert!(msg.contains(&late_id) && msg.contains("\"late\""), "{msg}");
    assert!(msg.contains("does not know"), "{msg}");
    assert_eq!(
        data_files(&root),
        before,
        "a refused start-up changes nothing"
    );

    let report = indigo::repair(&root, false).unwrap();
    assert_eq!(report.restored.len(), 1);
    let db = Indigo::open(&root).unwrap();
    let late = db
        .get_collection("default_tenant", "default_database", "late")
        .unwrap();
    assert_eq!(late.count().unwrap(), 100);
    let early = db
        .get_collection("default_tenant", "default_database", "early")
        .unwrap();
    assert_eq!(early.count().unwrap(), 1);
}

#[test]
fn a_catalogue_naming_a_lost_directory_is_refused_until_told_to_forget_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let (a_id, _) = populate(&root);
    let moved = dir.path().join("moved-away");
    std::fs::rename(root.join("collections").join(&a_id), &moved).unwrap();
    let err = Indigo::open(&root).err().expect("start-up must refuse");
    eprintln!("what the user sees:\n{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("directory is missing") && msg.contains(&a_id),
        "{msg}"
    );
    assert!(msg.contains("--forget-missing"), "{msg}");
    let report = indigo::repair(&root, true).unwrap();
    assert_eq!(report.forgotten, vec![a_id.clone()]);
    let db = Indigo::open(&root).unwrap();
    assert!(db.get_collection("acme", "prod", "articles").is_err());
    assert_eq!(
        db.get_collection("default_tenant", "default_database", "notes")
            .unwrap()
            .count()
            .unwrap(),
        200
    );
    assert!(
        moved.join("store").exists(),
        "the data moved away is untouched"
    );
}

#[test]
fn a_delete_interrupted_before_the_catalogue_entry_went_keeps_the_collection() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (a_id, b_id) = populate(root);
    // The marker is written before the catalogue entry goes; the crash came in
    // between, so the delete was never acknowledged.
    let marker = root.join("collections").join(&a_id).join("DELETING");
    std::fs::write(&marker, b"").unwrap();
    check_restored(root, &a_id, &b_id);
    assert!(!marker.exists());
}
