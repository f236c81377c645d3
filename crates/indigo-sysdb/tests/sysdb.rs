use indigo_sysdb::{
    CollectionUpdate, IndexVersion, NewCollection, SqliteSysDb, SysDb, SysDbError,
    DEFAULT_DATABASE, DEFAULT_TENANT,
};
use serde_json::json;

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
    let db = SqliteSysDb::in_memory().unwrap();
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
    let db = SqliteSysDb::in_memory().unwrap();
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
    };
    db.register_index_version(&v).unwrap();
    assert!(matches!(
        db.register_index_version(&v),
        Err(SysDbError::AlreadyExists(_))
    ));
    db.register_index_version(&IndexVersion {
        version: 2,
        log_offset: 20,
        ..v.clone()
    })
    .unwrap();
    assert_eq!(
        db.latest_index_version(&c.id).unwrap().unwrap().log_offset,
        20
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
    let db = SqliteSysDb::in_memory().unwrap();
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
