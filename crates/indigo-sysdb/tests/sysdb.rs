//! The system database's contract, run against every implementation: SQLite
//! always, PostgreSQL when `INDIGO_TEST_PG` names a server (`scripts/test` starts
//! one and sets `INDIGO_REQUIRE_SERVICES=1`, so it cannot be skipped there).

use indigo_sysdb::{
    CollectionUpdate, ForkCommit, IndexVersion, Member, NewCollection, PgSysDb, SqliteSysDb, SysDb,
    SysDbError, DEFAULT_DATABASE, DEFAULT_TENANT,
};
use serde_json::json;

/// A fresh, empty database on the test PostgreSQL server, or `None` when none is
/// configured (a panic when one is required).
fn fresh_pg() -> Option<(String, String)> {
    let Ok(base) = std::env::var("INDIGO_TEST_PG") else {
        if std::env::var("INDIGO_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
            panic!("INDIGO_TEST_PG is not set but the services are required");
        }
        eprintln!("INDIGO_TEST_PG is not set: PostgreSQL contract tests skipped");
        return None;
    };
    let name = format!("t_{:016x}", rand::random::<u64>());
    let mut admin =
        postgres::Client::connect(&base, postgres::NoTls).expect("connect to the test PostgreSQL");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let cfg = format!("{} dbname={name}", base.replace("dbname=postgres", ""));
    Some((cfg, name))
}

/// Runs `test` against every implementation.
fn each(test: impl Fn(&str, &dyn SysDb)) {
    test("sqlite", &SqliteSysDb::in_memory().unwrap());
    if let Some((cfg, name)) = fresh_pg() {
        test("postgres", &PgSysDb::connect(&cfg).unwrap());
        drop_pg(&name);
    }
}

/// Drops a database [`fresh_pg`] made (each takes 7.5 MB of the test server's disk).
fn drop_pg(name: &str) {
    let base = std::env::var("INDIGO_TEST_PG").unwrap();
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
}

fn new<'a>(name: &'a str, get_or_create: bool) -> NewCollection<'a> {
    NewCollection {
        tenant: DEFAULT_TENANT,
        database: DEFAULT_DATABASE,
        name,
        metadata: Some(json!({"a": 1})),
        configuration: json!({"hnsw": {"space": "cosine"}}),
        get_or_create,
        id: None,
    }
}

#[test]
fn defaults_exist_and_names_are_unique() {
    each(|_, db| defaults_exist_and_names_are_unique_on(db));
}

fn defaults_exist_and_names_are_unique_on(db: &dyn SysDb) {
    assert!(db.tenant_exists(DEFAULT_TENANT).unwrap());
    db.get_database(DEFAULT_TENANT, DEFAULT_DATABASE).unwrap();
    assert!(matches!(
        db.create_tenant(DEFAULT_TENANT),
        Err(SysDbError::AlreadyExists(_))
    ));
    db.create_tenant("acme").unwrap();
    db.create_database("acme", "prod").unwrap();
    assert!(matches!(
        db.create_database("acme", "prod"),
        Err(SysDbError::AlreadyExists(_))
    ));
    assert!(matches!(
        db.create_database("nobody", "x"),
        Err(SysDbError::NotFound(_))
    ));
    db.create_database("acme", "dev").unwrap();
    let names: Vec<String> = db
        .list_databases("acme", None, 0)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["prod", "dev"]);
    assert_eq!(
        db.list_databases("acme", Some(1), 1).unwrap()[0].name,
        "dev"
    );
    db.delete_database("acme", "dev").unwrap();
    assert!(matches!(
        db.get_database("acme", "dev"),
        Err(SysDbError::NotFound(_))
    ));
}

#[test]
fn collections_lifecycle() {
    each(|_, db| collections_lifecycle_on(db));
}

fn collections_lifecycle_on(db: &dyn SysDb) {
    let (c, created) = db.create_collection(new("docs", false)).unwrap();
    assert!(created);
    assert_eq!(c.metadata, Some(json!({"a": 1})));
    assert!(matches!(
        db.create_collection(new("docs", false)),
        Err(SysDbError::AlreadyExists(_))
    ));
    let (same, created) = db.create_collection(new("docs", true)).unwrap();
    assert!(!created);
    assert_eq!(same.id, c.id);
    assert_eq!(db.get_collection_by_id(&c.id).unwrap().name, "docs");
    db.create_collection(new("other", false)).unwrap();
    assert_eq!(
        db.count_collections(DEFAULT_TENANT, DEFAULT_DATABASE)
            .unwrap(),
        2
    );
    assert_eq!(
        db.list_collections(DEFAULT_TENANT, DEFAULT_DATABASE, Some(1), 1)
            .unwrap()[0]
            .name,
        "other"
    );

    let u = db
        .update_collection(
            &c.id,
            CollectionUpdate {
                name: Some("renamed".into()),
                metadata: Some(json!({"b": 2})),
                configuration: None,
            },
        )
        .unwrap();
    assert_eq!((u.name.as_str(), u.version), ("renamed", 1));
    assert_eq!(u.configuration, json!({"hnsw": {"space": "cosine"}}));
    assert!(matches!(
        db.update_collection(
            &c.id,
            CollectionUpdate {
                name: Some("other".into()),
                ..Default::default()
            }
        ),
        Err(SysDbError::AlreadyExists(_))
    ));

    db.set_dimension(&c.id, 384).unwrap();
    db.set_dimension(&c.id, 384).unwrap();
    assert!(matches!(
        db.set_dimension(&c.id, 3),
        Err(SysDbError::InvalidArgument(_))
    ));
    assert_eq!(db.get_collection_by_id(&c.id).unwrap().dimension, Some(384));

    db.set_checkpoint("compactor", &c.id, 10).unwrap();
    db.set_checkpoint("compactor", &c.id, 7).unwrap();
    assert_eq!(
        db.checkpoint("compactor", &c.id).unwrap(),
        10,
        "checkpoints never move back"
    );
    assert_eq!(db.checkpoint("executor", &c.id).unwrap(), 0);
    assert!(matches!(
        db.set_checkpoint("compactor", "missing", 1),
        Err(SysDbError::NotFound(_))
    ));

    let v = IndexVersion {
        collection: c.id.clone(),
        version: 1,
        log_offset: 10,
        location: json!({"dir": "x"}),
        created_ms: 0,
    };
    let before = db.get_collection_by_id(&c.id).unwrap().version;
    assert!(db.commit_index_version(&v, 0).unwrap());
    assert!(
        !db.commit_index_version(&v, 0).unwrap(),
        "stale: 0 is no longer current"
    );
    assert!(db
        .commit_index_version(
            &IndexVersion {
                version: 2,
                log_offset: 20,
                ..v.clone()
            },
            1
        )
        .unwrap());
    let latest = db.latest_index_version(&c.id).unwrap().unwrap();
    assert_eq!((latest.version, latest.log_offset), (2, 20));
    assert!(latest.created_ms > 0);
    assert_eq!(
        db.get_collection_by_id(&c.id).unwrap().version,
        before + 2,
        "each committed index version bumps the collection's version"
    );

    let gone = db
        .delete_collection(DEFAULT_TENANT, DEFAULT_DATABASE, "renamed")
        .unwrap();
    assert_eq!(gone.id, c.id);
    assert!(matches!(
        db.get_collection_by_id(&c.id),
        Err(SysDbError::NotFound(_))
    ));
    assert_eq!(
        db.latest_index_version(&c.id).unwrap(),
        None,
        "versions go with the collection"
    );
    assert_eq!(db.checkpoint("compactor", &c.id).unwrap(), 0);
}

#[test]
fn deleting_a_database_removes_its_collections() {
    each(|_, db| deleting_a_database_removes_its_collections_on(db));
}

fn deleting_a_database_removes_its_collections_on(db: &dyn SysDb) {
    db.create_database(DEFAULT_TENANT, "tmp").unwrap();
    let (c, _) = db
        .create_collection(NewCollection {
            database: "tmp",
            ..new("x", false)
        })
        .unwrap();
    db.delete_database(DEFAULT_TENANT, "tmp").unwrap();
    assert!(matches!(
        db.get_collection_by_id(&c.id),
        Err(SysDbError::NotFound(_))
    ));
}

#[test]
fn reopening_keeps_everything_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sysdb.sqlite3");
    let id = {
        let db = SqliteSysDb::open(&path).unwrap();
        db.create_collection(new("docs", false)).unwrap().0.id
    };
    let db = SqliteSysDb::open(&path).unwrap();
    assert_eq!(
        db.get_collection(DEFAULT_TENANT, DEFAULT_DATABASE, "docs")
            .unwrap()
            .id,
        id
    );
    assert_eq!(
        db.list_databases(DEFAULT_TENANT, None, 0).unwrap().len(),
        1,
        "defaults not duplicated"
    );
    drop(db);
    bump_schema_version(&path);
    assert!(matches!(
        SqliteSysDb::open(&path),
        Err(SysDbError::TooNew { .. })
    ));
}

/// Simulates a database written by a future build.
fn bump_schema_version(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute("UPDATE schema_version SET version = version + 1", [])
        .unwrap();
}

/// Two compactors race to commit over the same version: exactly one wins, and the
/// history keeps every committed version for garbage collection.
#[test]
fn racing_commits_have_exactly_one_winner() {
    each(|name, db| {
        let (c, _) = db.create_collection(new("raced", false)).unwrap();
        for (round, current) in (0..20).zip(0i64..) {
            let wins: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|w| {
                        let id = c.id.clone();
                        s.spawn(move || {
                            db.commit_index_version(
                                &IndexVersion {
                                    collection: id,
                                    version: current + 1,
                                    log_offset: round * 10 + w as u64,
                                    location: json!({"by": w}),
                                    created_ms: 0,
                                },
                                current,
                            )
                            .unwrap()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(
                wins.iter().filter(|w| **w).count(),
                1,
                "{name}: round {round}"
            );
        }
        let all = db.index_versions(&c.id).unwrap();
        assert_eq!(all.last().unwrap().version, 20, "{name}");
        let kept: Vec<i64> = all.iter().map(|v| v.version).collect();
        db.drop_index_versions(&c.id, &kept).unwrap();
        let left: Vec<i64> = db
            .index_versions(&c.id)
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(
            left,
            vec![20],
            "{name}: the current version is never dropped"
        );
    });
}

#[test]
fn members_hold_leases() {
    each(|name, db| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let m = |id: &str, role: &str, until: u64| Member {
            id: id.into(),
            role: role.into(),
            address: format!("127.0.0.1:{}", id.len()),
            lease_until_ms: until,
        };
        db.heartbeat(&m("q1", "query", now + 60_000)).unwrap();
        db.heartbeat(&m("q2", "query", now + 60_000)).unwrap();
        db.heartbeat(&m("q3", "query", now - 1)).unwrap(); // its lease ran out
        db.heartbeat(&m("l1", "log", now + 60_000)).unwrap();
        let ids = |role| -> Vec<String> {
            db.members(role)
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect()
        };
        assert_eq!(ids(Some("query")), vec!["q1", "q2"], "{name}");
        assert_eq!(ids(None).len(), 3, "{name}");
        db.heartbeat(&m("q3", "query", now + 60_000)).unwrap(); // back
        db.leave("q1").unwrap();
        assert_eq!(ids(Some("query")), vec!["q2", "q3"], "{name}");
    });
}

#[test]
fn a_postgres_catalogue_is_shared_by_every_connection() {
    let Some((cfg, db_name)) = fresh_pg() else {
        return;
    };
    let a = PgSysDb::connect(&cfg).unwrap();
    let b = PgSysDb::connect(&cfg).unwrap();
    let (c, _) = a.create_collection(new("shared", false)).unwrap();
    assert_eq!(b.get_collection_by_id(&c.id).unwrap().name, "shared");
    assert!(matches!(
        b.create_collection(new("shared", false)),
        Err(SysDbError::AlreadyExists(_))
    ));
    // Two processes creating the same name at once: one creates, one gets it.
    let (x, y) = std::thread::scope(|s| {
        let h1 = s.spawn(|| a.create_collection(new("race", true)).unwrap());
        let h2 = s.spawn(|| b.create_collection(new("race", true)).unwrap());
        (h1.join().unwrap(), h2.join().unwrap())
    });
    assert_eq!(x.0.id, y.0.id);
    assert!(x.1 ^ y.1, "exactly one created it");
    drop(a);
    let again = PgSysDb::connect(&cfg).unwrap();
    assert_eq!(
        again.list_databases(DEFAULT_TENANT, None, 0).unwrap().len(),
        1
    );
    drop((b, again));
    drop_pg(&db_name);
}

/// Keys discovered by concurrent writers all end up in the schema, with the
/// defaults' settings for their type, and a listed key keeps its own.
#[test]
fn concurrent_discoveries_lose_no_key() {
    each(|name, db| {
        let off = json!({"enabled": false, "config": {}});
        let on = json!({"enabled": true, "config": {}});
        let mut n = new("discovering", false);
        n.configuration = json!({"schema": {
            "defaults": {"string": {"string_inverted_index": on}, "int": {"int_inverted_index": off}},
            "keys": {"mine": {"string": {"string_inverted_index": off}}},
        }});
        let (c, _) = db.create_collection(n).unwrap();
        std::thread::scope(|s| {
            for w in 0..4 {
                let id = c.id.clone();
                s.spawn(move || {
                    for i in 0..25 {
                        let keys = vec![
                            (format!("k{w}_{i}"), "string"),
                            ("mine".to_string(), "string"),
                        ];
                        db.discover_keys(&id, &keys).unwrap();
                    }
                });
            }
        });
        // An unknown value type, or no schema at all, changes nothing.
        assert!(db
            .discover_keys(&c.id, &[("x".into(), "nope")])
            .unwrap()
            .is_none());
        let got = db.get_collection_by_id(&c.id).unwrap().configuration;
        let keys = got["schema"]["keys"].as_object().unwrap();
        assert_eq!(keys.len(), 101, "{name}");
        assert_eq!(
            keys["k3_24"]["string"]["string_inverted_index"]["enabled"], true,
            "{name}"
        );
        assert_eq!(
            keys["mine"]["string"]["string_inverted_index"]["enabled"], false,
            "{name}"
        );
        let changed = db
            .discover_keys(&c.id, &[("k0_0".into(), "int")])
            .unwrap()
            .unwrap();
        let k = &changed.configuration["schema"]["keys"]["k0_0"];
        assert_eq!(
            k["int"]["int_inverted_index"]["enabled"], false,
            "{name}: {k}"
        );
        assert!(k["string"].is_object(), "{name}");
        // A modify computed from a read before a discovery keeps the key found.
        let before = db.get_collection_by_id(&c.id).unwrap().configuration;
        db.discover_keys(&c.id, &[("late".into(), "string")])
            .unwrap();
        let mut modified = before.clone();
        modified["hnsw"] = json!({"ef_search": 7});
        let after = db
            .update_collection(
                &c.id,
                CollectionUpdate {
                    name: None,
                    metadata: None,
                    configuration: Some(modified),
                },
            )
            .unwrap()
            .configuration;
        assert_eq!(after["hnsw"]["ef_search"], 7, "{name}");
        assert!(
            after["schema"]["keys"]["late"]["string"].is_object(),
            "{name}: {after}"
        );
        let (plain, _) = db.create_collection(new("schemaless", false)).unwrap();
        assert!(db
            .discover_keys(&plain.id, &[("a".into(), "string")])
            .unwrap()
            .is_none());
    });
}

#[test]
fn a_schema_lists_at_most_max_schema_keys() {
    let mut c =
        json!({"schema": {"defaults": {"bool": {"bool_inverted_index": {"enabled": true}}}}});
    let keys: Vec<(String, &str)> = (0..indigo_sysdb::MAX_SCHEMA_KEYS + 10)
        .map(|i| (format!("k{i}"), "bool"))
        .collect();
    assert!(indigo_sysdb::add_schema_keys(&mut c, &keys));
    assert_eq!(
        c["schema"]["keys"].as_object().unwrap().len(),
        indigo_sysdb::MAX_SCHEMA_KEYS
    );
}

#[test]
fn forks_commit_once_from_a_version_that_is_still_there() {
    each(|_, db| forks_commit_once_on(db));
}

fn forks_commit_once_on(db: &dyn SysDb) {
    let (src, _) = db.create_collection(new("src", false)).unwrap();
    db.set_dimension(&src.id, 3).unwrap();
    let v = |version, log_offset| IndexVersion {
        collection: src.id.clone(),
        version,
        log_offset,
        location: json!({"key": format!("col/{}/v/{version}", src.id), "ops": log_offset}),
        created_ms: 0,
    };
    assert!(db.commit_index_version(&v(1, 5), 0).unwrap());
    assert!(db.commit_index_version(&v(2, 9), 1).unwrap());
    let latest = db.latest_index_version(&src.id).unwrap().unwrap();
    let fork_id = "f0000000-0000-4000-8000-000000000001";

    // Without an intent (or with one given up) nothing commits.
    let commit = |name, version| ForkCommit {
        id: fork_id,
        source: &src.id,
        name,
        version,
    };
    assert!(matches!(
        db.commit_fork(&commit("fork", Some(&latest))),
        Err(SysDbError::Stale(_))
    ));
    db.begin_fork(fork_id, &src.id).unwrap();
    assert_eq!(
        db.abandon_forks(None, 0).unwrap(),
        Vec::<String>::new(),
        "too young"
    );
    assert_eq!(
        db.abandon_forks(Some(fork_id), u64::MAX).unwrap(),
        [fork_id]
    );
    assert!(db
        .deleted_collections()
        .unwrap()
        .contains(&fork_id.to_string()));
    assert!(matches!(
        db.commit_fork(&commit("fork", Some(&latest))),
        Err(SysDbError::Stale(_))
    ));
    db.forget_deleted(fork_id).unwrap();

    // A version dropped meanwhile, or a name taken: refused, the intent kept.
    db.begin_fork(fork_id, &src.id).unwrap();
    let dropped = v(1, 5);
    db.drop_index_versions(&src.id, &[1]).unwrap();
    assert!(matches!(
        db.commit_fork(&commit("fork", Some(&dropped))),
        Err(SysDbError::Stale(_))
    ));
    assert!(matches!(
        db.commit_fork(&commit("src", Some(&latest))),
        Err(SysDbError::AlreadyExists(_))
    ));
    assert_eq!(db.fork_count(&src.id).unwrap(), 0);

    // Committed: the source's settings, its version as the fork's current one.
    let fork = db.commit_fork(&commit("fork", Some(&latest))).unwrap();
    assert_eq!((fork.id.as_str(), fork.name.as_str()), (fork_id, "fork"));
    assert_eq!(fork.metadata, src.metadata);
    assert_eq!(fork.configuration, src.configuration);
    assert_eq!(fork.dimension, Some(3));
    let fv = db.latest_index_version(fork_id).unwrap().unwrap();
    assert_eq!(
        (fv.version, fv.log_offset, &fv.location),
        (2, 9, &latest.location)
    );
    assert_eq!(fv.ops(), 9);
    assert!(
        matches!(
            db.commit_fork(&commit("fork2", Some(&latest))),
            Err(SysDbError::Stale(_))
        ),
        "an intent commits once"
    );
    // The fork compacts on from the shared version.
    assert!(db
        .commit_index_version(
            &IndexVersion {
                collection: fork_id.into(),
                ..v(3, 12)
            },
            2
        )
        .unwrap());
    assert!(
        db.commit_index_version(&v(3, 12), 2).unwrap(),
        "the source too, apart"
    );
    let every = db.all_index_versions().unwrap();
    assert_eq!(every.iter().filter(|x| x.collection == fork_id).count(), 2);
    assert_eq!(every.iter().filter(|x| x.collection == src.id).count(), 2);

    // Lineage: both count the tree; a fork of a fork joins it; deleted
    // members stop counting.
    assert_eq!(db.fork_count(&src.id).unwrap(), 1);
    assert_eq!(db.fork_count(fork_id).unwrap(), 1);
    let second = "f0000000-0000-4000-8000-000000000002";
    db.begin_fork(second, fork_id).unwrap();
    db.commit_fork(&ForkCommit {
        id: second,
        source: fork_id,
        name: "fork-of-fork",
        version: None,
    })
    .unwrap();
    assert!(db.latest_index_version(second).unwrap().is_none());
    assert_eq!(db.fork_count(&src.id).unwrap(), 2);
    db.delete_collection(DEFAULT_TENANT, DEFAULT_DATABASE, "src")
        .unwrap();
    assert_eq!(db.fork_count(fork_id).unwrap(), 1);
    // A deleted collection's versions go with it; the fork's stay.
    let every = db.all_index_versions().unwrap();
    assert!(every.iter().all(|x| x.collection != src.id));
    assert_eq!(every.iter().filter(|x| x.collection == fork_id).count(), 2);
    // Forking a deleted source: not found.
    db.begin_fork("f0000000-0000-4000-8000-000000000003", &src.id)
        .unwrap();
    assert!(matches!(
        db.commit_fork(&ForkCommit {
            id: "f0000000-0000-4000-8000-000000000003",
            source: &src.id,
            name: "late",
            version: None
        }),
        Err(SysDbError::NotFound(_))
    ));
}
