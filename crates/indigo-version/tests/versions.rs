//! Index versions in object storage: compactors fold the log into versions and
//! commit them by the system database's compare-and-swap; racing compactors have
//! exactly one winner per version and the loser's objects are collected later;
//! a reader opens any committed version straight from object storage, and the
//! executor answers from it plus the log tail.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use indigo_health::Health;
use indigo_log::{CollectionId, Log};
use indigo_object::{Counted, Objects, Remote, S3Config};
use indigo_objlog::{ObjectLog, ObjectLogOptions};
use indigo_segment::IndexConfig;
use indigo_sysdb::{NewCollection, PgSysDb, SqliteSysDb, SysDb, DEFAULT_DATABASE, DEFAULT_TENANT};
use indigo_types::{RecordOp, WriteEntry, WriteKind};
use indigo_version::{
    collect_garbage, fork_collection, open_version, Cache, Compacted, ForkError, GarbageCollector,
    GcPolicy, VersionCompactor, VersionManifest,
};
use serde_json::json;

fn objects() -> Vec<(&'static str, Arc<dyn Objects>)> {
    let mut v: Vec<(&'static str, Arc<dyn Objects>)> = vec![("memory", Arc::new(Remote::memory()))];
    if let Ok(url) = std::env::var("INDIGO_TEST_S3") {
        let (endpoint, bucket) = url.rsplit_once('/').unwrap();
        v.push((
            "s3",
            Arc::new(
                Remote::s3(&S3Config {
                    bucket: bucket.into(),
                    endpoint: Some(endpoint.into()),
                    region: Some("us-east-1".into()),
                    prefix: format!("versions-{:016x}", rand::random::<u64>()),
                })
                .unwrap(),
            ),
        ));
    } else if std::env::var("INDIGO_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("INDIGO_TEST_S3 is not set but the services are required");
    }
    v
}

fn sysdbs() -> Vec<(&'static str, Arc<dyn SysDb>)> {
    let mut v: Vec<(&'static str, Arc<dyn SysDb>)> =
        vec![("sqlite", Arc::new(SqliteSysDb::in_memory().unwrap()))];
    if let Ok(base) = std::env::var("INDIGO_TEST_PG") {
        let name = format!("v_{:016x}", rand::random::<u64>());
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let cfg = format!("{} dbname={name}", base.replace("dbname=postgres", ""));
        v.push(("postgres", Arc::new(PgSysDb::connect(&cfg).unwrap())));
    } else if std::env::var("INDIGO_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("INDIGO_TEST_PG is not set but the services are required");
    }
    v
}

fn log_id(id: &str) -> CollectionId {
    CollectionId::parse_uuid(id).unwrap()
}

fn write(log: &dyn Log, lid: CollectionId, kind: WriteKind, ids: std::ops::Range<u32>, tag: f32) {
    let records = ids
        .map(|i| RecordOp {
            id: format!("r{i}"),
            embedding: (kind != WriteKind::Delete).then(|| Arc::from(vec![i as f32, tag, 1.0])),
            document: (kind != WriteKind::Delete).then(|| format!("doc {i} {tag}")),
            ..Default::default()
        })
        .collect();
    log.append(lid, &WriteEntry { kind, records }.encode())
        .unwrap();
}

/// The expected records (id → tag) after each write.
type Model = BTreeMap<String, f32>;

fn apply(m: &mut Model, kind: WriteKind, ids: std::ops::Range<u32>, tag: f32) {
    for i in ids {
        let id = format!("r{i}");
        match kind {
            WriteKind::Add => {
                m.entry(id).or_insert(tag);
            }
            WriteKind::Upsert => {
                m.insert(id, tag);
            }
            WriteKind::Delete => {
                m.remove(&id);
            }
            WriteKind::Update => {
                if let Some(t) = m.get_mut(&id) {
                    *t = tag;
                }
            }
        }
    }
}

fn config() -> IndexConfig {
    IndexConfig::default()
}

/// Reads a version back and compares it with the model.
fn check_version(
    objects: &Arc<dyn Objects>,
    m: &VersionManifest,
    want: &Model,
    cache: &Arc<Cache>,
) {
    let seg = open_version(
        objects.clone(),
        m,
        cache.clone(),
        config(),
        Arc::new(Health::new()),
    )
    .unwrap();
    let snap = seg.snapshot();
    assert_eq!(snap.applied, m.log_offset);
    assert_eq!(
        snap.live().unwrap().len() as usize,
        want.len(),
        "version {}",
        m.version
    );
    for (id, tag) in want {
        let iid = snap
            .lookup(id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id} missing"));
        let r = snap.record(iid, true).unwrap().unwrap();
        assert_eq!(r.embedding[1], *tag, "{id} in version {}", m.version);
    }
}

fn collection(sysdb: &dyn SysDb, name: &str) -> String {
    sysdb
        .create_collection(NewCollection {
            tenant: DEFAULT_TENANT,
            database: DEFAULT_DATABASE,
            name,
            metadata: None,
            configuration: json!({}),
            get_or_create: false,
            id: None,
        })
        .unwrap()
        .0
        .id
}

#[test]
fn every_committed_version_reads_back_as_of_its_log_offset() {
    for (oname, objects) in objects() {
        for (sname, sysdb) in sysdbs() {
            let log: Arc<dyn Log> =
                Arc::new(ObjectLog::new(objects.clone(), ObjectLogOptions::default()));
            let id = collection(&*sysdb, "versions");
            let lid = log_id(&id);
            let work = tempfile::tempdir().unwrap();
            let c = VersionCompactor::new(
                objects.clone(),
                log.clone(),
                sysdb.clone(),
                work.path(),
                Arc::new(Health::new()),
            );
            assert_eq!(c.compact(&id, &config()).unwrap(), Compacted::Unchanged);
            let steps = [
                (WriteKind::Add, 0..300, 1.0),
                (WriteKind::Upsert, 100..400, 2.0),
                (WriteKind::Delete, 0..50, 0.0),
                (WriteKind::Update, 350..500, 3.0),
            ];
            let mut model = Model::new();
            let mut versions = Vec::new();
            for (kind, ids, tag) in steps {
                write(&*log, lid, kind, ids.clone(), tag);
                apply(&mut model, kind, ids, tag);
                match c.compact(&id, &config()).unwrap() {
                    Compacted::Committed { version, key, .. } => {
                        versions.push((
                            VersionManifest::fetch(&*objects, &key).unwrap(),
                            model.clone(),
                        ));
                        assert_eq!(version as usize, versions.len());
                    }
                    other => panic!("{oname}/{sname}: {other:?}"),
                }
            }
            // Any committed version, read straight from object storage, through
            // a cache too small for them all (entries come and go) and again
            // through a cold one.
            let dir = tempfile::tempdir().unwrap();
            let cache = Cache::open(dir.path(), 16 << 10).unwrap();
            for (m, want) in versions.iter().chain(versions.iter().rev()) {
                check_version(&objects, m, want, &cache);
            }
            let st = cache.stats();
            assert!(st.evictions > 0 && st.bytes <= st.budget, "{st:?}");
            let on_disk: u64 = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert_eq!(on_disk, st.bytes, "evicted files are deleted");
            // The executor on the current version plus the log tail sees every write.
            write(&*log, lid, WriteKind::Add, 1000..1010, 9.0);
            apply(&mut model, WriteKind::Add, 1000..1010, 9.0);
            let (m, _) = versions.last().unwrap();
            let seg = open_version(
                objects.clone(),
                m,
                cache.clone(),
                config(),
                Arc::new(Health::new()),
            )
            .unwrap();
            let tail = indigo_executor::TailCache::default();
            let mut view = indigo_executor::View::open(&seg, &*log, lid, &tail).unwrap();
            assert_eq!(
                view.count().unwrap() as usize,
                model.len(),
                "{oname}/{sname}"
            );
            let hits = view
                .query(
                    &[vec![1005.0, 9.0, 1.0]],
                    1,
                    &Default::default(),
                    indigo_executor::Include::QUERY_DEFAULT,
                )
                .unwrap();
            assert_eq!(hits[0].ids, vec!["r1005"]);
            // The collection's version went up with each commit.
            assert!(sysdb.get_collection_by_id(&id).unwrap().version >= 4);
        }
    }
}

#[test]
fn racing_compactors_commit_each_version_once_and_the_losers_objects_are_collected() {
    for (oname, objects) in objects() {
        for (sname, sysdb) in sysdbs() {
            let counted = Arc::new(Counted::new(objects.clone()));
            let objects: Arc<dyn Objects> = counted.clone();
            let log: Arc<dyn Log> =
                Arc::new(ObjectLog::new(objects.clone(), ObjectLogOptions::default()));
            let id = collection(&*sysdb, "raced");
            let lid = log_id(&id);
            let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
            let compactors: Vec<VersionCompactor> = dirs
                .iter()
                .map(|d| {
                    VersionCompactor::new(
                        objects.clone(),
                        log.clone(),
                        sysdb.clone(),
                        d.path(),
                        Arc::new(Health::new()),
                    )
                })
                .collect();
            let mut model = Model::new();
            let mut stale = 0;
            let mut committed = Vec::new();
            for round in 0..8u32 {
                write(
                    &*log,
                    lid,
                    WriteKind::Upsert,
                    round * 50..round * 50 + 80,
                    round as f32,
                );
                apply(
                    &mut model,
                    WriteKind::Upsert,
                    round * 50..round * 50 + 80,
                    round as f32,
                );
                let outcomes: Vec<Compacted> = std::thread::scope(|s| {
                    let hs: Vec<_> = compactors
                        .iter()
                        .map(|c| s.spawn(|| c.compact(&id, &config()).unwrap()))
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let wins: Vec<&Compacted> = outcomes
                    .iter()
                    .filter(|o| matches!(o, Compacted::Committed { .. }))
                    .collect();
                assert!(
                    wins.len() <= 1,
                    "{oname}/{sname}: two commits of one version: {outcomes:?}"
                );
                stale += outcomes
                    .iter()
                    .filter(|o| matches!(o, Compacted::Stale { .. }))
                    .count();
                if let Some(Compacted::Committed { version, key, .. }) = wins.first() {
                    committed.push((*version, key.clone(), model.clone()));
                }
            }
            eprintln!(
                "{oname}/{sname}: {} versions committed, {stale} stale attempts",
                committed.len()
            );
            // Versions are dense: each number committed once.
            let numbers: Vec<i64> = committed.iter().map(|c| c.0).collect();
            assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>());
            // The last committed version holds what its offset covers; catch up once
            // more and the current version holds everything.
            let c = &compactors[0];
            if let Compacted::Committed { key, .. } = c.compact(&id, &config()).unwrap() {
                committed.push((0, key, model.clone()));
            }
            let (_, key, _) = committed.last().unwrap();
            let cache = tempfile::tempdir().unwrap();
            check_version(
                &objects,
                &VersionManifest::fetch(&*objects, key).unwrap(),
                &model,
                &Cache::open(cache.path(), 64 << 20).unwrap(),
            );
            // Garbage collection: keep the newest version only; everything else,
            // orphans of stale compactors included, goes.
            let before = objects.list(&format!("col/{id}/")).unwrap().len();
            let g = collect_garbage(&*objects, &*sysdb, &id, 1, Duration::ZERO, Duration::ZERO)
                .unwrap();
            let after = objects.list(&format!("col/{id}/")).unwrap().len();
            eprintln!("{oname}/{sname}: GC {g:?}: {before} objects before, {after} after");
            assert_eq!(before - after, g.objects_deleted);
            assert!(g.objects_deleted > 0);
            if stale > 0 {
                assert!(
                    g.objects_deleted >= stale,
                    "orphans of stale compactors collected"
                );
            }
            // What is left is exactly the current version: it still reads back.
            let current = sysdb.latest_index_version(&id).unwrap().unwrap();
            let m = VersionManifest::fetch(&*objects, current.location["key"].as_str().unwrap())
                .unwrap();
            assert_eq!(after, m.files.len() + 1);
            let fresh = tempfile::tempdir().unwrap();
            check_version(
                &objects,
                &m,
                &model,
                &Cache::open(fresh.path(), 64 << 20).unwrap(),
            );
            // A grace period protects young unreferenced objects.
            objects
                .put(
                    &format!("col/{id}/f/in-flight"),
                    b"x",
                    indigo_object::PutMode::IfAbsent,
                )
                .unwrap();
            let g = collect_garbage(
                &*objects,
                &*sysdb,
                &id,
                1,
                Duration::ZERO,
                Duration::from_secs(3600),
            )
            .unwrap();
            assert_eq!((g.objects_deleted, g.objects_young), (0, 1));
        }
    }
}

#[test]
fn a_version_uploads_what_changed_not_the_collection() {
    let objects: Arc<dyn Objects> = Arc::new(Remote::memory());
    let sysdb: Arc<dyn SysDb> = Arc::new(SqliteSysDb::in_memory().unwrap());
    let log: Arc<dyn Log> = Arc::new(ObjectLog::new(objects.clone(), ObjectLogOptions::default()));
    let id = collection(&*sysdb, "growing");
    let lid = log_id(&id);
    let work = tempfile::tempdir().unwrap();
    let c = VersionCompactor::new(
        objects.clone(),
        log.clone(),
        sysdb.clone(),
        work.path(),
        Arc::new(Health::new()),
    );
    for i in 0..10 {
        write(&*log, lid, WriteKind::Add, i * 500..(i + 1) * 500, 1.0);
    }
    let Compacted::Committed {
        bytes_uploaded: first,
        ..
    } = c.compact(&id, &config()).unwrap()
    else {
        panic!()
    };
    write(&*log, lid, WriteKind::Add, 10_000..10_020, 1.0);
    let Compacted::Committed {
        bytes_uploaded: second,
        ..
    } = c.compact(&id, &config()).unwrap()
    else {
        panic!()
    };
    eprintln!("5000 records: {first} B; 20 more: {second} B");
    assert!(
        second * 10 < first,
        "the second version re-uploaded the collection: {second} B vs {first} B"
    );
}

/// A compactor drops the working copies of collections it no longer builds, and
/// builds one again from the current version when a collection comes back to it.
#[test]
fn released_working_copies_leave_the_disk_and_come_back_from_the_version() {
    let objects: Arc<dyn Objects> = Arc::new(Remote::memory());
    let sysdb: Arc<dyn SysDb> = Arc::new(SqliteSysDb::in_memory().unwrap());
    let log: Arc<dyn Log> = Arc::new(ObjectLog::new(objects.clone(), ObjectLogOptions::default()));
    let id = collection(&*sysdb, "released");
    let lid = log_id(&id);
    let work = tempfile::tempdir().unwrap();
    let c = VersionCompactor::new(
        objects.clone(),
        log.clone(),
        sysdb,
        work.path(),
        Arc::new(Health::new()),
    );
    let mut model = Model::new();
    write(&*log, lid, WriteKind::Add, 0..100, 1.0);
    apply(&mut model, WriteKind::Add, 0..100, 1.0);
    assert!(matches!(
        c.compact(&id, &config()).unwrap(),
        Compacted::Committed { .. }
    ));
    assert!(work.path().join(&id).exists());
    c.release_others(&Default::default());
    assert!(!work.path().join(&id).exists(), "the working copy is gone");
    write(&*log, lid, WriteKind::Upsert, 50..150, 2.0);
    apply(&mut model, WriteKind::Upsert, 50..150, 2.0);
    let Compacted::Committed { key, version, .. } = c.compact(&id, &config()).unwrap() else {
        panic!("no commit after the working copy was released");
    };
    assert_eq!(version, 2);
    let dir = tempfile::tempdir().unwrap();
    let m = VersionManifest::fetch(&*objects, &key).unwrap();
    check_version(
        &objects,
        &m,
        &model,
        &Cache::open(dir.path(), 64 << 20).unwrap(),
    );
}

fn manifest_of(objects: &Arc<dyn Objects>, sysdb: &dyn SysDb, id: &str) -> VersionManifest {
    let v = sysdb.latest_index_version(id).unwrap().unwrap();
    VersionManifest::fetch(&**objects, v.location["key"].as_str().unwrap()).unwrap()
}

fn check_current(objects: &Arc<dyn Objects>, sysdb: &dyn SysDb, id: &str, want: &Model) {
    let fresh = tempfile::tempdir().unwrap();
    check_version(
        objects,
        &manifest_of(objects, sysdb, id),
        want,
        &Cache::open(fresh.path(), 64 << 20).unwrap(),
    );
}

/// Keys some recorded version names.
fn named(objects: &Arc<dyn Objects>, sysdb: &dyn SysDb) -> std::collections::HashSet<String> {
    indigo_version::referenced_keys(&**objects, sysdb, &mut Default::default()).unwrap()
}

#[test]
fn a_distributed_fork_shares_files_until_garbage_collection_finds_none_named() {
    for (oname, objects) in objects() {
        for (sname, sysdb) in sysdbs() {
            let log = Arc::new(ObjectLog::new(objects.clone(), ObjectLogOptions::default()));
            let dir = tempfile::tempdir().unwrap();
            let compactor = VersionCompactor::new(
                objects.clone(),
                log.clone(),
                sysdb.clone(),
                dir.path(),
                Arc::new(Health::new()),
            );
            let gc = GarbageCollector::new(
                objects.clone(),
                sysdb.clone(),
                log.clone(),
                GcPolicy {
                    keep_versions: 1,
                    keep_window: Duration::ZERO,
                    grace: Duration::ZERO,
                },
                Arc::new(Health::new()),
            );
            let src = collection(&*sysdb, "source");
            let slid = log_id(&src);
            let mut model = Model::new();
            write(&*log, slid, WriteKind::Upsert, 0..100, 1.0);
            apply(&mut model, WriteKind::Upsert, 0..100, 1.0);
            assert!(matches!(
                compactor.compact(&src, &config()).unwrap(),
                Compacted::Committed { .. }
            ));
            // A tail not folded yet: the fork copies it.
            write(&*log, slid, WriteKind::Upsert, 50..150, 2.0);
            apply(&mut model, WriteKind::Upsert, 50..150, 2.0);

            let forked = fork_collection(&*sysdb, &log, &src, "fork", 64 << 20).unwrap();
            let fork = forked.collection.id.clone();
            let flid = log_id(&fork);
            assert_eq!(forked.log_records, 1, "{oname}/{sname}");
            assert_eq!(
                sysdb.latest_index_version(&fork).unwrap().unwrap().location,
                sysdb.latest_index_version(&src).unwrap().unwrap().location,
                "the fork starts from the source's version"
            );
            assert_eq!(sysdb.fork_count(&src).unwrap(), 1);
            assert!(matches!(
                fork_collection(&*sysdb, &log, &src, "fork", 64 << 20),
                Err(ForkError::SysDb(indigo_sysdb::SysDbError::AlreadyExists(_)))
            ));
            assert!(matches!(
                fork_collection(&*sysdb, &log, &src, "tiny", 10),
                Err(ForkError::TailTooLarge(_))
            ));

            // Apart from here on.
            let mut fmodel = model.clone();
            write(&*log, slid, WriteKind::Delete, 0..20, 0.0);
            apply(&mut model, WriteKind::Delete, 0..20, 0.0);
            write(&*log, flid, WriteKind::Upsert, 200..220, 3.0);
            apply(&mut fmodel, WriteKind::Upsert, 200..220, 3.0);
            write(&*log, flid, WriteKind::Upsert, 60..70, 4.0);
            apply(&mut fmodel, WriteKind::Upsert, 60..70, 4.0);
            for id in [&src, &fork] {
                assert!(matches!(
                    compactor.compact(id, &config()).unwrap(),
                    Compacted::Committed { .. }
                ));
            }
            check_current(&objects, &*sysdb, &src, &model);
            check_current(&objects, &*sysdb, &fork, &fmodel);
            let shared = manifest_of(&objects, &*sysdb, &fork)
                .files
                .iter()
                .filter(|f| f.key.starts_with(&format!("col/{src}/")))
                .count();
            eprintln!("{oname}/{sname}: the fork's version names {shared} of the source's files");
            assert!(shared > 0, "unchanged files are shared, not copied");

            // Collection keeps what either names, then the source goes: what
            // only it named goes with it, what the fork names stays.
            let r = gc.pass();
            assert_eq!(r.failures, 0, "{r:?}");
            check_current(&objects, &*sysdb, &src, &model);
            check_current(&objects, &*sysdb, &fork, &fmodel);
            sysdb
                .delete_collection(DEFAULT_TENANT, DEFAULT_DATABASE, "source")
                .unwrap();
            let r = gc.pass();
            assert_eq!(r.failures, 0, "{r:?}");
            assert!(r.collected.objects_referenced > 0, "{r:?}");
            let names = named(&objects, &*sysdb);
            let left = objects.list(&format!("col/{src}/")).unwrap();
            assert!(!left.is_empty());
            assert!(
                left.iter().all(|o| names.contains(&o.key)),
                "only named files stay"
            );
            assert!(objects
                .list(&indigo_objlog::prefix(slid))
                .unwrap()
                .is_empty());
            assert!(sysdb.deleted_collections().unwrap().contains(&src));
            check_current(&objects, &*sysdb, &fork, &fmodel);

            // The fork lives on: it compacts, and once nothing names the
            // source's files they go and the source is forgotten.
            write(&*log, flid, WriteKind::Upsert, 0..220, 5.0);
            apply(&mut fmodel, WriteKind::Upsert, 0..220, 5.0);
            assert!(matches!(
                compactor.compact(&fork, &config()).unwrap(),
                Compacted::Committed { .. }
            ));
            check_current(&objects, &*sysdb, &fork, &fmodel);
            gc.pass();
            let still = manifest_of(&objects, &*sysdb, &fork)
                .files
                .iter()
                .any(|f| f.key.starts_with(&format!("col/{src}/")));
            if !still {
                assert!(objects.list(&format!("col/{src}/")).unwrap().is_empty());
                assert!(!sysdb.deleted_collections().unwrap().contains(&src));
            }
            check_current(&objects, &*sysdb, &fork, &fmodel);

            // A fork of a collection never compacted copies its whole log.
            let young = collection(&*sysdb, "young");
            write(&*log, log_id(&young), WriteKind::Add, 0..30, 6.0);
            let f2 = fork_collection(&*sysdb, &log, &young, "young-fork", 64 << 20).unwrap();
            assert_eq!(f2.log_records, 1);
            assert!(sysdb
                .latest_index_version(&f2.collection.id)
                .unwrap()
                .is_none());
            assert!(matches!(
                compactor.compact(&f2.collection.id, &config()).unwrap(),
                Compacted::Committed { .. }
            ));
            let mut m2 = Model::new();
            apply(&mut m2, WriteKind::Add, 0..30, 6.0);
            check_current(&objects, &*sysdb, &f2.collection.id, &m2);

            // A fork cut short after seeding its log: given up, its log removed.
            let cut = "c0000000-0000-4000-8000-00000000000c";
            sysdb.begin_fork(cut, &young).unwrap();
            log.seed(
                log_id(cut),
                indigo_log::LogOffset(7),
                &[Arc::from(&b"x"[..])],
            )
            .unwrap();
            assert!(!objects
                .list(&indigo_objlog::prefix(log_id(cut)))
                .unwrap()
                .is_empty());
            let r = gc.pass();
            assert_eq!(r.forks_abandoned, 1, "{r:?}");
            assert!(objects
                .list(&indigo_objlog::prefix(log_id(cut)))
                .unwrap()
                .is_empty());
            let r = gc.pass();
            assert_eq!((r.forks_abandoned, r.failures), (0, 0));
            assert!(!sysdb
                .deleted_collections()
                .unwrap()
                .contains(&cut.to_string()));
        }
    }
}

/// An object's age counts to the mark (when the reading of what versions name
/// began), not to its sweep, however long a pass sweeps other prefixes first.
#[test]
fn a_sweep_judges_age_as_of_the_mark() {
    let objects: Arc<dyn Objects> = Arc::new(Remote::memory());
    let mark = std::time::SystemTime::now() - Duration::from_secs(3600);
    objects
        .put("col/x/f/new", b"x", indigo_object::PutMode::IfAbsent)
        .unwrap();
    let none = std::collections::HashSet::new();
    let grace = Duration::from_secs(600);
    // Uploaded after the mark: kept, whatever the clock says at the sweep.
    let g = indigo_version::sweep(&*objects, "col/x/", &none, mark, grace).unwrap();
    assert_eq!((g.objects_deleted, g.objects_young), (0, 1));
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let g = indigo_version::sweep(&*objects, "col/x/", &none, later, grace).unwrap();
    assert_eq!(g.objects_deleted, 1);
}
