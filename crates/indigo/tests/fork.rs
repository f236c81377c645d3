//! Forks: a fork holds what its source held (folded or still in the log), the
//! two then evolve independently, the fork shares its source's immutable files
//! (hard links) and outlives the source's deletion and a restart; an unfinished
//! fork is not taken for a collection.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use indigo::{Batch, Error, GetRequest, Indigo, Options, QueryRequest, Selection};

const T: &str = "default_tenant";
const D: &str = "default_database";

fn vec_of(i: usize) -> Vec<f32> {
    // Distinct for every i used here (the period is 10007).
    (0..8)
        .map(|j| ((i * 7919 + j * 104_729) % 10_007) as f32 / 10_007.0)
        .collect()
}

fn batch(from: usize, to: usize) -> Batch {
    Batch::new(
        (from..to).map(|i| format!("r{i}")).collect(),
        (from..to).map(vec_of).collect(),
    )
    .documents((from..to).map(|i| Some(format!("doc {i}"))).collect())
}

/// Every record's id and document, sorted.
fn contents(c: &indigo::Collection) -> BTreeMap<String, Option<String>> {
    let r = c.get(&GetRequest::default()).unwrap();
    r.ids.into_iter().zip(r.documents.unwrap()).collect()
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_fork_holds_its_sources_records_and_then_goes_its_own_way() {
    let dir = tempfile::tempdir().unwrap();
    // Compaction only when asked, so records can be left in the log.
    let db = Indigo::open_with(
        dir.path(),
        Options {
            background_compaction: false,
            ..Options::default()
        },
    )
    .unwrap();
    let src = db.create_collection(T, D, "src", None, None).unwrap();
    src.add(batch(0, 1000)).unwrap();
    db.compact().unwrap();
    // These stay in the log (no compaction since): the fork must carry them.
    src.add(batch(1000, 1100)).unwrap();
    src.delete(&Selection {
        ids: Some(vec!["r5".into()]),
        ..Default::default()
    })
    .unwrap();
    let before = contents(&src);
    assert_eq!(before.len(), 1099);

    let (info, report) = db.fork_collection(src.id(), "fork").unwrap();
    let fork = db.get_collection_by_id(&info.id).unwrap();
    assert_ne!(fork.id(), src.id());
    assert_eq!(contents(&fork), before);
    assert!(
        report.linked_bytes > 0 && report.log_records == 2,
        "{report:?}"
    );
    let q = QueryRequest::new(vec![vec_of(42)], 3);
    assert_eq!(fork.query(&q).unwrap(), src.query(&q).unwrap());
    assert_eq!(db.fork_count(src.id()).unwrap(), 1);
    assert_eq!(db.fork_count(fork.id()).unwrap(), 1);

    // Independent from here on.
    fork.add(batch(2000, 2010)).unwrap();
    src.delete(&Selection {
        ids: Some(vec!["r7".into()]),
        ..Default::default()
    })
    .unwrap();
    db.compact().unwrap();
    assert_eq!(fork.count().unwrap(), 1109);
    assert_eq!(src.count().unwrap(), 1098);
    let fork_ids = contents(&fork);
    assert!(fork_ids.contains_key("r7") && fork_ids.contains_key("r2005"));
    assert!(!contents(&src).contains_key("r2005"));

    // A fork of the fork is in the same tree.
    let f2 = db
        .get_collection_by_id(&db.fork_collection(fork.id(), "fork2").unwrap().0.id)
        .unwrap();
    assert_eq!(f2.count().unwrap(), 1109);
    for c in [&src, &fork, &f2] {
        assert_eq!(db.fork_count(c.id()).unwrap(), 2);
    }
    // A name in use is refused, and leaves nothing behind.
    let dirs = std::fs::read_dir(dir.path().join("collections"))
        .unwrap()
        .count();
    assert!(matches!(
        db.fork_collection(src.id(), "fork"),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        db.fork_collection(src.id(), "x"),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        std::fs::read_dir(dir.path().join("collections"))
            .unwrap()
            .count(),
        dirs
    );
}

/// A source of `n` records, folded, and its fork "fork", opened.
fn source_and_fork(db: &Indigo, n: usize) -> (indigo::Collection, indigo::Collection) {
    let src = db.create_collection(T, D, "src", None, None).unwrap();
    src.add(batch(0, n)).unwrap();
    db.compact().unwrap();
    let (info, _) = db.fork_collection(src.id(), "fork").unwrap();
    let fork = db.get_collection_by_id(&info.id).unwrap();
    (src, fork)
}

#[test]
fn a_fork_shares_files_and_outlives_its_source_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fork_id;
    let expected;
    {
        let db = Indigo::open(dir.path()).unwrap();
        let (_src, fork) = source_and_fork(&db, 2000);
        fork_id = fork.id().to_string();
        expected = contents(&fork);
        // Copy-on-write: the fork's immutable files are the source's (a second
        // name of the same inode), not copies.
        let fork_dir = dir.path().join("collections").join(&fork_id);
        let shared = files(&fork_dir)
            .iter()
            .filter(|p| std::fs::metadata(p).unwrap().nlink() > 1)
            .count();
        assert!(shared > 0, "no file of the fork is shared with its source");
        db.delete_collection(T, D, "src").unwrap();
        assert_eq!(contents(&fork), expected);
    }
    let db = Indigo::open(dir.path()).unwrap();
    let fork = db.get_collection(T, D, "fork").unwrap();
    assert_eq!(fork.id(), fork_id);
    assert_eq!(contents(&fork), expected);
    let hits = fork
        .query(&QueryRequest::new(vec![vec_of(1234)], 1))
        .unwrap();
    assert_eq!(hits[0].ids, vec!["r1234".to_string()]);
    fork.add(batch(5000, 5001)).unwrap();
    assert_eq!(fork.count().unwrap(), 2001);
}

#[test]
fn an_unfinished_fork_is_removed_at_start_up_not_taken_for_a_collection() {
    let dir = tempfile::tempdir().unwrap();
    let stray;
    {
        let db = Indigo::open(dir.path()).unwrap();
        let (_src, fork) = source_and_fork(&db, 100);
        // What a crash before the catalogue entry leaves: a fork's files under
        // an id the catalogue does not know, still marked.
        let cols = dir.path().join("collections");
        stray = cols.join("0f0f0f0f-1111-4222-8333-444455556666");
        std::fs::create_dir(&stray).unwrap();
        for f in files(&cols.join(fork.id())) {
            let rel = f.strip_prefix(cols.join(fork.id())).unwrap();
            let to = stray.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
        }
        std::fs::write(stray.join("DELETING"), b"").unwrap();
    }
    let db = Indigo::open(dir.path()).unwrap();
    assert!(!stray.exists());
    assert_eq!(
        db.get_collection(T, D, "fork").unwrap().count().unwrap(),
        100
    );
}
