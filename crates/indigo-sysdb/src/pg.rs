//! The system database on PostgreSQL, for the distributed mode: the same contract
//! as [`crate::SqliteSysDb`], shared by every process of a deployment. Every
//! change is one transaction; the index-version commit is a compare-and-swap
//! (`UPDATE … WHERE index_version = $expected`), which is what fences a stale
//! compactor. Members hold leases (a row with an expiry they renew).

use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Transaction};
use serde_json::Value;

use crate::{
    check_name, json_text, now_ms, Collection, CollectionUpdate, Database, ForkCommit,
    IndexVersion, Member, NewCollection, Result, SysDb, SysDbError, DEFAULT_DATABASE,
    DEFAULT_TENANT,
};

/// Schema migrations, applied in order under an advisory lock; `schema_version`
/// counts those applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE tenants (name TEXT PRIMARY KEY);
     CREATE TABLE databases (
        seq BIGSERIAL,
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
        UNIQUE (tenant, name));
     CREATE TABLE collections (
        seq BIGSERIAL,
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        database_id TEXT NOT NULL REFERENCES databases(id) ON DELETE CASCADE,
        metadata TEXT,
        configuration TEXT NOT NULL,
        dimension BIGINT,
        version BIGINT NOT NULL DEFAULT 0,
        index_version BIGINT NOT NULL DEFAULT 0,
        UNIQUE (database_id, name));
     CREATE TABLE checkpoints (
        consumer TEXT NOT NULL,
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        log_offset BIGINT NOT NULL,
        PRIMARY KEY (consumer, collection_id));
     CREATE TABLE index_versions (
        collection_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        log_offset BIGINT NOT NULL,
        location TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (collection_id, version));
     CREATE TABLE deleted_collections (
        id TEXT PRIMARY KEY,
        deleted_at BIGINT NOT NULL);
     CREATE TABLE members (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        address TEXT NOT NULL,
        lease_until_ms BIGINT NOT NULL);",
    // Forks: lineage, intents begun (a fork writes its log before its catalogue
    // row), and index versions no longer outliving their collection (a deleted
    // collection's rows would pin files that forks do not name).
    "CREATE TABLE forks (
        collection_id TEXT PRIMARY KEY,
        root TEXT NOT NULL);
     CREATE INDEX forks_root ON forks (root);
     CREATE TABLE pending_forks (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        started_ms BIGINT NOT NULL);
     DELETE FROM index_versions v
      WHERE NOT EXISTS (SELECT 1 FROM collections c WHERE c.id = v.collection_id);",
];

/// An arbitrary key for the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x0001_d160_5e5d;

pub struct PgSysDb {
    config: String,
    client: Mutex<Option<Client>>,
}

fn pg(e: postgres::Error) -> SysDbError {
    SysDbError::Backend(format!("PostgreSQL: {e}"))
}

fn is(e: &postgres::Error, state: &SqlState) -> bool {
    e.code() == Some(state)
}

const COLLECTION_SELECT: &str =
    "SELECT c.id, c.name, c.version, c.metadata, c.configuration, c.dimension, d.name, d.tenant
     FROM collections c JOIN databases d ON c.database_id = d.id";

fn collection(r: &Row) -> Collection {
    let metadata: Option<String> = r.get(3);
    let configuration: String = r.get(4);
    let dimension: Option<i64> = r.get(5);
    Collection {
        id: r.get(0),
        name: r.get(1),
        version: r.get(2),
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        configuration: serde_json::from_str(&configuration).unwrap_or(Value::Null),
        dimension: dimension.map(|d| d as u32),
        database: r.get(6),
        tenant: r.get(7),
    }
}

fn index_version(collection: &str, r: &Row) -> IndexVersion {
    let loc: String = r.get(2);
    IndexVersion {
        collection: collection.to_string(),
        version: r.get(0),
        log_offset: r.get::<_, i64>(1) as u64,
        location: serde_json::from_str(&loc).unwrap_or(Value::Null),
        created_ms: r.get::<_, i64>(3) as u64,
    }
}

fn database_id(tx: &mut Transaction<'_>, tenant: &str, name: &str) -> Result<String> {
    tx.query_opt(
        "SELECT id FROM databases WHERE tenant = $1 AND name = $2",
        &[&tenant, &name],
    )
    .map_err(pg)?
    .map(|r| r.get(0))
    .ok_or_else(|| SysDbError::NotFound(format!("Database [{name}] not found")))
}

fn collection_where(
    tx: &mut Transaction<'_>,
    clause: &str,
    args: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Option<Collection>> {
    let sql = format!("{COLLECTION_SELECT} WHERE {clause}");
    Ok(tx
        .query_opt(sql.as_str(), args)
        .map_err(pg)?
        .map(|r| collection(&r)))
}

/// Records `v` (its number, offset and location) as a version of `collection`,
/// committed now.
fn insert_index_version(
    tx: &mut Transaction<'_>,
    collection: &str,
    v: &IndexVersion,
) -> Result<()> {
    tx.execute(
        "INSERT INTO index_versions (collection_id, version, log_offset, location, created_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &collection,
            &v.version,
            &(v.log_offset as i64),
            &json_text(&v.location),
            &(now_ms() as i64),
        ],
    )
    .map_err(pg)?;
    Ok(())
}

fn ensure_defaults(tx: &mut Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT INTO tenants (name) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&DEFAULT_TENANT],
    )
    .map_err(pg)?;
    tx.execute(
        "INSERT INTO databases (id, name, tenant) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[
            &uuid::Uuid::new_v4().to_string(),
            &DEFAULT_DATABASE,
            &DEFAULT_TENANT,
        ],
    )
    .map_err(pg)?;
    Ok(())
}

impl PgSysDb {
    /// Connects (`host=… port=… user=… dbname=…` or a `postgres://` URL) and
    /// brings the schema up to date.
    pub fn connect(config: &str) -> Result<PgSysDb> {
        let db = PgSysDb {
            config: config.to_string(),
            client: Mutex::new(None),
        };
        db.with(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .map_err(pg)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                .map_err(pg)?;
            let found: i64 = tx
                .query_opt("SELECT version FROM schema_version", &[])
                .map_err(pg)?
                .map_or(0, |r| r.get(0));
            let known = MIGRATIONS.len() as i64;
            if found > known {
                return Err(SysDbError::TooNew {
                    path: "PostgreSQL".into(),
                    found,
                    known,
                });
            }
            for m in &MIGRATIONS[found as usize..] {
                tx.batch_execute(m).map_err(pg)?;
            }
            tx.execute("DELETE FROM schema_version", &[]).map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&known],
            )
            .map_err(pg)?;
            ensure_defaults(tx)
        })?;
        Ok(db)
    }

    /// Runs `f` in a transaction, reconnecting once if the connection was lost
    /// before anything ran.
    fn with<T>(&self, mut f: impl FnMut(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut guard = self.client.lock();
        for attempt in 0..2 {
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(Client::connect(&self.config, NoTls).map_err(|e| {
                    SysDbError::Backend(format!(
                        "cannot connect to PostgreSQL ({}): {e}",
                        self.config
                    ))
                })?);
            }
            let done = match guard.as_mut().unwrap().transaction() {
                Ok(mut tx) => {
                    let out = f(&mut tx)?;
                    tx.commit().map_err(pg)?;
                    Some(out)
                }
                // The connection was lost since the last call: connect again.
                Err(e) if attempt == 0 && e.is_closed() => None,
                Err(e) => return Err(pg(e)),
            };
            match done {
                Some(out) => return Ok(out),
                None => {
                    guard.take();
                }
            }
        }
        unreachable!("the second attempt returns")
    }
}

impl SysDb for PgSysDb {
    fn create_tenant(&self, name: &str) -> Result<()> {
        check_name("tenant", name)?;
        self.with(|tx| {
            let n = tx
                .execute(
                    "INSERT INTO tenants (name) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&name],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(SysDbError::AlreadyExists(format!(
                    "Tenant [{name}] already exists"
                )));
            }
            Ok(())
        })
    }

    fn tenant_exists(&self, name: &str) -> Result<bool> {
        self.with(|tx| {
            Ok(tx
                .query_opt("SELECT 1 FROM tenants WHERE name = $1", &[&name])
                .map_err(pg)?
                .is_some())
        })
    }

    fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        check_name("database", name)?;
        self.with(|tx| {
            if tx
                .query_opt("SELECT 1 FROM tenants WHERE name = $1", &[&tenant])
                .map_err(pg)?
                .is_none()
            {
                return Err(SysDbError::NotFound(format!("Tenant [{tenant}] not found")));
            }
            let id = uuid::Uuid::new_v4().to_string();
            let n = tx
                .execute(
                    "INSERT INTO databases (id, name, tenant) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&id, &name, &tenant],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(SysDbError::AlreadyExists(format!("Database [{name}] already exists")));
            }
            Ok(Database {
                id,
                name: name.to_string(),
                tenant: tenant.to_string(),
            })
        })
    }

    fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        self.with(|tx| {
            Ok(Database {
                id: database_id(tx, tenant, name)?,
                name: name.to_string(),
                tenant: tenant.to_string(),
            })
        })
    }

    fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        self.with(|tx| {
            let limit = limit.map(i64::from);
            let rows = tx
                .query(
                    "SELECT id, name, tenant FROM databases WHERE tenant = $1 ORDER BY seq LIMIT $2 OFFSET $3",
                    &[&tenant, &limit, &i64::from(offset)],
                )
                .map_err(pg)?;
            Ok(rows
                .iter()
                .map(|r| Database {
                    id: r.get(0),
                    name: r.get(1),
                    tenant: r.get(2),
                })
                .collect())
        })
    }

    fn delete_database(&self, tenant: &str, name: &str) -> Result<()> {
        self.with(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM databases WHERE tenant = $1 AND name = $2",
                    &[&tenant, &name],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(SysDbError::NotFound(format!("Database [{name}] not found")));
            }
            Ok(())
        })
    }

    fn create_collection(&self, c: NewCollection<'_>) -> Result<(Collection, bool)> {
        check_name("collection", c.name)?;
        self.with(|tx| {
            let db = database_id(tx, c.tenant, c.database)?;
            let existing =
                || format!("{COLLECTION_SELECT} WHERE c.database_id = $1 AND c.name = $2");
            let id = match c.id {
                Some(id) => id.to_string(),
                None => uuid::Uuid::new_v4().to_string(),
            };
            // The insert decides races between processes; the unique constraint on
            // (database, name) is the arbiter.
            let n = tx
                .execute(
                    "INSERT INTO collections (id, name, database_id, metadata, configuration)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (database_id, name) DO NOTHING",
                    &[
                        &id,
                        &c.name,
                        &db,
                        &c.metadata.as_ref().map(json_text),
                        &json_text(&c.configuration),
                    ],
                )
                .map_err(|e| {
                    if is(&e, &SqlState::UNIQUE_VIOLATION) {
                        SysDbError::AlreadyExists(format!("Collection id [{id}] already exists"))
                    } else {
                        pg(e)
                    }
                })?;
            if n == 0 {
                let row = tx
                    .query_one(existing().as_str(), &[&db, &c.name])
                    .map_err(pg)?;
                if c.get_or_create {
                    return Ok((collection(&row), false));
                }
                return Err(SysDbError::AlreadyExists(format!(
                    "Collection [{}] already exists",
                    c.name
                )));
            }
            let created = collection_where(tx, "c.id = $1", &[&id])?.expect("just inserted");
            Ok((created, true))
        })
    }

    fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection> {
        self.with(|tx| {
            collection_where(
                tx,
                "d.tenant = $1 AND d.name = $2 AND c.name = $3",
                &[&tenant, &database, &name],
            )?
            .ok_or_else(|| SysDbError::NotFound(format!("Collection [{name}] does not exist")))
        })
    }

    fn get_collection_by_id(&self, id: &str) -> Result<Collection> {
        self.with(|tx| {
            collection_where(tx, "c.id = $1", &[&id])?
                .ok_or_else(|| SysDbError::NotFound(format!("Collection [{id}] does not exist")))
        })
    }

    fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Collection>> {
        self.with(|tx| {
            database_id(tx, tenant, database)?;
            let sql = format!(
                "{COLLECTION_SELECT} WHERE d.tenant = $1 AND d.name = $2 ORDER BY c.seq LIMIT $3 OFFSET $4"
            );
            let limit = limit.map(i64::from);
            let rows = tx
                .query(
                    sql.as_str(),
                    &[&tenant, &database, &limit, &i64::from(offset)],
                )
                .map_err(pg)?;
            Ok(rows.iter().map(collection).collect())
        })
    }

    fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        self.with(|tx| {
            let db = database_id(tx, tenant, database)?;
            let n: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM collections WHERE database_id = $1",
                    &[&db],
                )
                .map_err(pg)?
                .get(0);
            Ok(n as u64)
        })
    }

    fn all_collections(&self) -> Result<Vec<Collection>> {
        self.with(|tx| {
            let sql = format!("{COLLECTION_SELECT} ORDER BY c.seq");
            Ok(tx
                .query(sql.as_str(), &[])
                .map_err(pg)?
                .iter()
                .map(collection)
                .collect())
        })
    }

    fn reset(&self) -> Result<()> {
        self.with(|tx| {
            tx.batch_execute(
                "DELETE FROM collections; DELETE FROM databases; DELETE FROM tenants;",
            )
            .map_err(pg)?;
            ensure_defaults(tx)
        })
    }

    fn update_collection(&self, id: &str, u: CollectionUpdate) -> Result<Collection> {
        if let Some(n) = &u.name {
            check_name("collection", n)?;
        }
        self.with(|tx| {
            let cur = collection_where(tx, "c.id = $1 FOR UPDATE OF c", &[&id])?
                .ok_or_else(|| SysDbError::NotFound(format!("Collection [{id}] does not exist")))?;
            let name = u.name.clone().unwrap_or(cur.name.clone());
            tx.execute(
                "UPDATE collections SET name = $2, metadata = $3, configuration = $4, version = version + 1 WHERE id = $1",
                &[
                    &id,
                    &name,
                    &u.metadata.as_ref().or(cur.metadata.as_ref()).map(json_text),
                    &json_text(&u.configuration.as_ref().map_or_else(
                        || cur.configuration.clone(),
                        |c| crate::keep_discovered(c, &cur.configuration),
                    )),
                ],
            )
            .map_err(|e| {
                if is(&e, &SqlState::UNIQUE_VIOLATION) {
                    SysDbError::AlreadyExists(format!("Collection [{name}] already exists"))
                } else {
                    pg(e)
                }
            })?;
            Ok(collection_where(tx, "c.id = $1", &[&id])?.expect("exists"))
        })
    }

    fn discover_keys(&self, id: &str, keys: &[(String, &str)]) -> Result<Option<Collection>> {
        self.with(|tx| {
            // The row lock keeps a concurrent discovery from losing ours.
            let mut c = collection_where(tx, "c.id = $1 FOR UPDATE OF c", &[&id])?
                .ok_or_else(|| SysDbError::NotFound(format!("Collection [{id}] does not exist")))?;
            if !crate::add_schema_keys(&mut c.configuration, keys) {
                return Ok(None);
            }
            tx.execute(
                "UPDATE collections SET configuration = $2 WHERE id = $1",
                &[&id, &json_text(&c.configuration)],
            )
            .map_err(pg)?;
            Ok(Some(c))
        })
    }

    fn set_dimension(&self, id: &str, dim: u32) -> Result<()> {
        self.with(|tx| {
            let cur: Option<Option<i64>> = tx
                .query_opt(
                    "SELECT dimension FROM collections WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .map_err(pg)?
                .map(|r| r.get(0));
            match cur {
                None => Err(SysDbError::NotFound(format!(
                    "Collection [{id}] does not exist"
                ))),
                Some(Some(d)) if d != i64::from(dim) => Err(SysDbError::InvalidArgument(format!(
                    "collection expecting embedding with dimension of {d}, got {dim}"
                ))),
                Some(Some(_)) => Ok(()),
                Some(None) => {
                    tx.execute(
                        "UPDATE collections SET dimension = $2 WHERE id = $1",
                        &[&id, &i64::from(dim)],
                    )
                    .map_err(pg)?;
                    Ok(())
                }
            }
        })
    }

    fn delete_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection> {
        self.with(|tx| {
            let c = collection_where(
                tx,
                "d.tenant = $1 AND d.name = $2 AND c.name = $3",
                &[&tenant, &database, &name],
            )?
            .ok_or_else(|| SysDbError::NotFound(format!("Collection [{name}] does not exist")))?;
            tx.execute("DELETE FROM collections WHERE id = $1", &[&c.id])
                .map_err(pg)?;
            // Its versions go with it: what they name is the deleted
            // collection's to remove, except files a fork's versions name.
            tx.execute(
                "DELETE FROM index_versions WHERE collection_id = $1",
                &[&c.id],
            )
            .map_err(pg)?;
            tx.execute(
                "INSERT INTO deleted_collections (id, deleted_at) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at",
                &[&c.id, &((now_ms() / 1000) as i64)],
            )
            .map_err(pg)?;
            Ok(c)
        })
    }

    fn deleted_collections(&self) -> Result<Vec<String>> {
        self.with(|tx| {
            Ok(tx
                .query("SELECT id FROM deleted_collections ORDER BY id", &[])
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn forget_deleted(&self, id: &str) -> Result<()> {
        self.with(|tx| {
            tx.execute("DELETE FROM deleted_collections WHERE id = $1", &[&id])
                .map_err(pg)?;
            Ok(())
        })
    }

    fn set_checkpoint(&self, consumer: &str, collection: &str, offset: u64) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "INSERT INTO checkpoints (consumer, collection_id, log_offset) VALUES ($1, $2, $3)
                 ON CONFLICT (consumer, collection_id)
                 DO UPDATE SET log_offset = GREATEST(checkpoints.log_offset, excluded.log_offset)",
                &[&consumer, &collection, &(offset as i64)],
            )
            .map_err(|e| {
                if is(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                    SysDbError::NotFound(format!("Collection [{collection}] does not exist"))
                } else {
                    pg(e)
                }
            })?;
            Ok(())
        })
    }

    fn checkpoint(&self, consumer: &str, collection: &str) -> Result<u64> {
        self.with(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT log_offset FROM checkpoints WHERE consumer = $1 AND collection_id = $2",
                    &[&consumer, &collection],
                )
                .map_err(pg)?
                .map_or(0, |r| r.get::<_, i64>(0) as u64))
        })
    }

    fn commit_index_version(&self, v: &IndexVersion, expected: i64) -> Result<bool> {
        self.with(|tx| {
            // The compare-and-swap: zero rows means another commit came first.
            let n = tx
                .execute(
                    "UPDATE collections SET index_version = $2, version = version + 1
                     WHERE id = $1 AND index_version = $3 AND $2 > $3",
                    &[&v.collection, &v.version, &expected],
                )
                .map_err(pg)?;
            if n == 0 {
                if collection_where(tx, "c.id = $1", &[&v.collection])?.is_none() {
                    return Err(SysDbError::NotFound(format!(
                        "Collection [{}] does not exist",
                        v.collection
                    )));
                }
                return Ok(false);
            }
            insert_index_version(tx, &v.collection, v)?;
            Ok(true)
        })
    }

    fn latest_index_version(&self, collection: &str) -> Result<Option<IndexVersion>> {
        self.with(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT v.version, v.log_offset, v.location, v.created_ms
                     FROM index_versions v JOIN collections c
                       ON c.id = v.collection_id AND c.index_version = v.version
                     WHERE v.collection_id = $1",
                    &[&collection],
                )
                .map_err(pg)?
                .map(|r| index_version(collection, &r)))
        })
    }

    fn index_versions(&self, collection: &str) -> Result<Vec<IndexVersion>> {
        self.with(|tx| {
            Ok(tx
                .query(
                    "SELECT version, log_offset, location, created_ms FROM index_versions
                     WHERE collection_id = $1 ORDER BY version",
                    &[&collection],
                )
                .map_err(pg)?
                .iter()
                .map(|r| index_version(collection, r))
                .collect())
        })
    }

    fn drop_index_versions(&self, collection: &str, versions: &[i64]) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "DELETE FROM index_versions v WHERE v.collection_id = $1 AND v.version = ANY($2)
                 AND NOT EXISTS (SELECT 1 FROM collections c
                                 WHERE c.id = v.collection_id AND c.index_version = v.version)",
                &[&collection, &versions],
            )
            .map_err(pg)?;
            Ok(())
        })
    }

    fn all_index_versions(&self) -> Result<Vec<IndexVersion>> {
        self.with(|tx| {
            Ok(tx
                .query(
                    "SELECT version, log_offset, location, created_ms, collection_id
                     FROM index_versions ORDER BY collection_id, version",
                    &[],
                )
                .map_err(pg)?
                .iter()
                .map(|r| index_version(r.get(4), r))
                .collect())
        })
    }

    fn begin_fork(&self, id: &str, source: &str) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "INSERT INTO pending_forks (id, source, started_ms) VALUES ($1, $2, $3)",
                &[&id, &source, &(now_ms() as i64)],
            )
            .map_err(pg)?;
            Ok(())
        })
    }

    fn commit_fork(&self, f: &ForkCommit<'_>) -> Result<Collection> {
        check_name("collection", f.name)?;
        self.with(|tx| {
            let n = tx
                .execute("DELETE FROM pending_forks WHERE id = $1", &[&f.id])
                .map_err(pg)?;
            if n == 0 {
                return Err(SysDbError::Stale(format!(
                    "the fork {} was given up as abandoned; fork again",
                    f.id
                )));
            }
            // FOR SHARE: the source and its version cannot be deleted or
            // dropped until this commits (and then the fork names the files).
            let src = tx
                .query_opt(
                    "SELECT database_id, metadata, configuration, dimension
                     FROM collections WHERE id = $1 FOR SHARE",
                    &[&f.source],
                )
                .map_err(pg)?
                .ok_or_else(|| {
                    SysDbError::NotFound(format!("Collection [{}] does not exist", f.source))
                })?;
            if let Some(v) = f.version {
                let there = tx
                    .query_opt(
                        "SELECT 1 FROM index_versions WHERE collection_id = $1 AND version = $2
                         FOR SHARE",
                        &[&f.source, &v.version],
                    )
                    .map_err(pg)?;
                if there.is_none() {
                    return Err(SysDbError::Stale(format!(
                        "version {} of collection {} was dropped while it was being forked; \
                         fork again",
                        v.version, f.source
                    )));
                }
            }
            let db: String = src.get(0);
            let metadata: Option<String> = src.get(1);
            let configuration: String = src.get(2);
            let dimension: Option<i64> = src.get(3);
            let index_version = f.version.map_or(0, |v| v.version);
            let n = tx
                .execute(
                    "INSERT INTO collections
                       (id, name, database_id, metadata, configuration, dimension, index_version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (database_id, name) DO NOTHING",
                    &[&f.id, &f.name, &db, &metadata, &configuration, &dimension, &index_version],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(SysDbError::AlreadyExists(format!(
                    "Collection [{}] already exists",
                    f.name
                )));
            }
            if let Some(v) = f.version {
                insert_index_version(tx, f.id, v)?;
            }
            let root: String = tx
                .query_opt("SELECT root FROM forks WHERE collection_id = $1", &[&f.source])
                .map_err(pg)?
                .map_or_else(|| f.source.to_string(), |r| r.get(0));
            tx.execute(
                "INSERT INTO forks (collection_id, root) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&f.source, &root],
            )
            .map_err(pg)?;
            tx.execute(
                "INSERT INTO forks (collection_id, root) VALUES ($1, $2)
                 ON CONFLICT (collection_id) DO UPDATE SET root = excluded.root",
                &[&f.id, &root],
            )
            .map_err(pg)?;
            Ok(collection_where(tx, "c.id = $1", &[&f.id])?.expect("just inserted"))
        })
    }

    fn abandon_forks(&self, id: Option<&str>, started_before_ms: u64) -> Result<Vec<String>> {
        self.with(|tx| {
            let ids: Vec<String> = tx
                .query(
                    "DELETE FROM pending_forks WHERE ($1::TEXT IS NULL OR id = $1) AND started_ms <= $2
                     RETURNING id",
                    &[&id, &(started_before_ms.min(i64::MAX as u64) as i64)],
                )
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for i in &ids {
                tx.execute(
                    "INSERT INTO deleted_collections (id, deleted_at) VALUES ($1, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[i, &((now_ms() / 1000) as i64)],
                )
                .map_err(pg)?;
            }
            Ok(ids)
        })
    }

    fn fork_count(&self, id: &str) -> Result<u64> {
        self.with(|tx| {
            let n: i64 = tx
                .query_one(
                    "SELECT count(*) FROM forks f JOIN collections c ON c.id = f.collection_id
                     WHERE f.root = coalesce((SELECT root FROM forks WHERE collection_id = $1), $1)",
                    &[&id],
                )
                .map_err(pg)?
                .get(0);
            Ok((n as u64).saturating_sub(1))
        })
    }

    fn heartbeat(&self, m: &Member) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "INSERT INTO members (id, role, address, lease_until_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET role = excluded.role, address = excluded.address,
                 lease_until_ms = excluded.lease_until_ms",
                &[&m.id, &m.role, &m.address, &(m.lease_until_ms as i64)],
            )
            .map_err(pg)?;
            Ok(())
        })
    }

    fn members(&self, role: Option<&str>) -> Result<Vec<Member>> {
        self.with(|tx| {
            Ok(tx
                .query(
                    "SELECT id, role, address, lease_until_ms FROM members
                     WHERE lease_until_ms > $1 AND ($2::TEXT IS NULL OR role = $2) ORDER BY id",
                    &[&(now_ms() as i64), &role],
                )
                .map_err(pg)?
                .iter()
                .map(|r| Member {
                    id: r.get(0),
                    role: r.get(1),
                    address: r.get(2),
                    lease_until_ms: r.get::<_, i64>(3) as u64,
                })
                .collect())
        })
    }

    fn leave(&self, id: &str) -> Result<()> {
        self.with(|tx| {
            tx.execute("DELETE FROM members WHERE id = $1", &[&id])
                .map_err(pg)?;
            Ok(())
        })
    }
}
