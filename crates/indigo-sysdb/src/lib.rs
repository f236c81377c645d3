//! Indigo's system database: the catalogue of tenants, databases and collections,
//! the index versions the compactor registers, and each consumer's log checkpoint.
//!
//! Invariants:
//! - Names are unique where Chroma's are: a tenant's database names, a database's
//!   collection names. Every change is one SQLite transaction.
//! - The schema is versioned: migrations run in order, once, inside a transaction;
//!   a database written by a newer build is refused rather than guessed at.
//! - The default tenant and database exist, as the official clients expect.
//!
//! [`SysDb`] is a trait with two implementations: [`SqliteSysDb`] on one machine,
//! and `PgSysDb` (feature `postgres`) for the distributed mode. Both pass the same
//! contract tests (`tests/sysdb.rs`).

#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "postgres")]
pub use pg::PgSysDb;

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

pub const DEFAULT_TENANT: &str = "default_tenant";
pub const DEFAULT_DATABASE: &str = "default_database";
/// Index versions kept per collection.
const KEEP_INDEX_VERSIONS: i64 = 8;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysDbError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("system database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another backend's failure (PostgreSQL), with its message.
    #[error("system database error: {0}")]
    Backend(String),
    /// What the request relied on changed meanwhile (a fork's source version
    /// was dropped, or its intent was claimed as abandoned): nothing changed;
    /// the request may be sent again.
    #[error("{0}")]
    Stale(String),
    #[error("system database {path} has schema version {found}; this build knows up to {known}: upgrade Indigo")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

pub type Result<T, E = SysDbError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub id: String,
    pub name: String,
    pub tenant: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub database: String,
    pub metadata: Option<Value>,
    pub configuration: Value,
    /// Fixed by the first write; `None` until then.
    pub dimension: Option<u32>,
    /// Bumped by every change to name, metadata or configuration.
    pub version: i64,
}

/// What a new collection is created with.
#[derive(Debug, Clone)]
pub struct NewCollection<'a> {
    pub tenant: &'a str,
    pub database: &'a str,
    pub name: &'a str,
    pub metadata: Option<Value>,
    pub configuration: Value,
    /// Return the existing collection of that name instead of failing.
    pub get_or_create: bool,
    /// The id to give it (a catalogue rebuilt from the collections' own records
    /// keeps their ids); `None` makes a new one.
    pub id: Option<&'a str>,
}

/// Changes to a collection; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct CollectionUpdate {
    pub name: Option<String>,
    pub metadata: Option<Value>,
    pub configuration: Option<Value>,
}

/// An index version registered by the compactor: what it built, up to which log
/// offset.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexVersion {
    pub collection: String,
    pub version: i64,
    pub log_offset: u64,
    /// Where the version's files are (a path or an object-store key) and any
    /// other facts the compactor keeps, as JSON.
    pub location: Value,
    /// When it was committed (ms since the epoch; set by the system database).
    pub created_ms: u64,
}

/// A fork ready to be committed: its log is seeded to continue `version`'s
/// offset (see [`SysDb::commit_fork`]).
#[derive(Debug, Clone)]
pub struct ForkCommit<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub name: &'a str,
    /// The source's version the fork starts from, as read (none yet: `None`).
    pub version: Option<&'a IndexVersion>,
}

impl IndexVersion {
    /// The record operations folded into this version and all before it (the
    /// `ops` fact of its location; 0 for versions made before it was counted).
    pub fn ops(&self) -> u64 {
        self.location
            .get("ops")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// A process of the distributed mode, known by its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Unique per process (a UUID, say).
    pub id: String,
    /// `frontend`, `log`, `query`, `compactor`, `gc`.
    pub role: String,
    /// Where others reach it (`host:port`).
    pub address: String,
    /// The lease ends then (ms since the epoch) unless renewed.
    pub lease_until_ms: u64,
}

/// A new configuration (a modify, computed from an older read) keeps the schema
/// keys `current` has and it lacks: keys discovered meanwhile are not lost.
pub(crate) fn keep_discovered(new: &Value, current: &Value) -> Value {
    let mut out = new.clone();
    let (Some(cur), Some(Value::Object(keys))) = (
        current["schema"]["keys"].as_object(),
        out.get_mut("schema").and_then(|s| s.get_mut("keys")),
    ) else {
        return out;
    };
    for (k, v) in cur {
        match keys.get_mut(k) {
            None => {
                keys.insert(k.clone(), v.clone());
            }
            Some(Value::Object(mine)) => {
                if let Value::Object(theirs) = v {
                    for (ty, t) in theirs {
                        mine.entry(ty.clone()).or_insert_with(|| t.clone());
                    }
                }
            }
            Some(_) => {}
        }
    }
    out
}

/// A schema keeps at most this many keys of its own; keys beyond are used and
/// indexed by the defaults, but not listed.
pub const MAX_SCHEMA_KEYS: usize = 1024;

/// Adds each (key, value type) not yet in `configuration`'s schema, with the
/// defaults' settings for that type (Chroma lists every key its compactor has
/// seen). Nothing without a stored schema. Whether anything changed.
pub fn add_schema_keys(configuration: &mut Value, keys: &[(String, &str)]) -> bool {
    let Some(schema) = configuration.get_mut("schema").filter(|s| s.is_object()) else {
        return false;
    };
    let defaults = schema["defaults"].clone();
    if !schema["keys"].is_object() {
        schema["keys"] = Value::Object(Default::default());
    }
    let Some(map) = schema["keys"].as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for (key, ty) in keys {
        let Some(d) = defaults.get(*ty).filter(|d| d.is_object()) else {
            continue;
        };
        if !map.contains_key(key) && map.len() >= MAX_SCHEMA_KEYS {
            continue;
        }
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(e) = entry {
            if !e.contains_key(*ty) {
                e.insert((*ty).to_string(), d.clone());
                changed = true;
            }
        }
    }
    changed
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub trait SysDb: Send + Sync {
    fn create_tenant(&self, name: &str) -> Result<()>;
    fn tenant_exists(&self, name: &str) -> Result<bool>;
    fn create_database(&self, tenant: &str, name: &str) -> Result<Database>;
    fn get_database(&self, tenant: &str, name: &str) -> Result<Database>;
    fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>>;
    fn delete_database(&self, tenant: &str, name: &str) -> Result<()>;
    /// Creates a collection; with `get_or_create`, returns an existing one instead
    /// (second value: whether it was created).
    fn create_collection(&self, c: NewCollection<'_>) -> Result<(Collection, bool)>;
    fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection>;
    fn get_collection_by_id(&self, id: &str) -> Result<Collection>;
    fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Collection>>;
    fn count_collections(&self, tenant: &str, database: &str) -> Result<u64>;
    /// Every collection of every tenant (for recovery at startup).
    fn all_collections(&self) -> Result<Vec<Collection>>;
    /// Removes every tenant, database and collection, then recreates the defaults.
    fn reset(&self) -> Result<()>;
    fn update_collection(&self, id: &str, u: CollectionUpdate) -> Result<Collection>;
    /// Fixes the dimension if unset; errors if it is set to another value.
    fn set_dimension(&self, id: &str, dim: u32) -> Result<()>;
    /// Adds metadata keys written for the first time to the schema kept in the
    /// collection's configuration (see [`add_schema_keys`]), in one transaction so
    /// concurrent writers lose none. The updated collection if anything changed.
    fn discover_keys(&self, id: &str, keys: &[(String, &str)]) -> Result<Option<Collection>>;
    /// Deletes a collection and records its id among the deleted ones.
    fn delete_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection>;
    /// Ids of deleted collections whose data may still be somewhere (the log).
    fn deleted_collections(&self) -> Result<Vec<String>>;
    /// Nothing of a deleted collection is left: its record can go.
    fn forget_deleted(&self, id: &str) -> Result<()>;
    fn set_checkpoint(&self, consumer: &str, collection: &str, offset: u64) -> Result<()>;
    /// A consumer's checkpoint (0 if it has none).
    fn checkpoint(&self, consumer: &str, collection: &str) -> Result<u64>;
    /// Commits a new index version if the collection's current one is still
    /// `expected` (0: none yet), atomically: the version, its log offset and
    /// location become current and the collection's `version` goes up. `false`:
    /// another commit came first (the caller's files are then orphans, never
    /// state). This compare-and-swap is what fences a stale compactor.
    fn commit_index_version(&self, v: &IndexVersion, expected: i64) -> Result<bool>;
    /// The collection's current index version.
    fn latest_index_version(&self, collection: &str) -> Result<Option<IndexVersion>>;
    /// Every index version still recorded for the collection, oldest first (for
    /// garbage collection).
    fn index_versions(&self, collection: &str) -> Result<Vec<IndexVersion>>;
    /// Forgets these versions (their files are being deleted). The current one is
    /// never dropped.
    fn drop_index_versions(&self, collection: &str, versions: &[i64]) -> Result<()>;
    /// Every index version recorded, of every collection, read at one moment
    /// (garbage collection marks what they name: with forks, a version may name
    /// another collection's files).
    fn all_index_versions(&self) -> Result<Vec<IndexVersion>>;
    /// Records the intent to fork `source` into the new id `id`, before the
    /// fork's log is written (so an abandoned fork's log is found and removed).
    fn begin_fork(&self, id: &str, source: &str) -> Result<()>;
    /// Makes the fork a collection, in one transaction: its intent is consumed
    /// (gone: `Stale`), the source must exist (`NotFound`) and so must the
    /// version it starts from (dropped meanwhile: `Stale`); the new collection
    /// copies the source's metadata, configuration and dimension, has that
    /// version as its current one, and joins the source's fork tree.
    fn commit_fork(&self, f: &ForkCommit<'_>) -> Result<Collection>;
    /// Gives up fork intents begun at or before `started_before_ms` (with `id`, only
    /// that one): each becomes a deleted collection, so what its log holds is
    /// removed. The ids given up; a fork whose intent is gone cannot commit.
    fn abandon_forks(&self, id: Option<&str>, started_before_ms: u64) -> Result<Vec<String>>;
    /// Chroma's fork count: the collections of `id`'s fork tree that exist,
    /// less one (0 for a collection never forked; the same for every member).
    fn fork_count(&self, id: &str) -> Result<u64>;
    /// Takes or renews `m`'s lease until `m.lease_until_ms`.
    fn heartbeat(&self, m: &Member) -> Result<()>;
    /// Members whose lease has not ended, of `role` (or all).
    fn members(&self, role: Option<&str>) -> Result<Vec<Member>>;
    /// Ends a member's lease now (an orderly exit).
    fn leave(&self, id: &str) -> Result<()>;
}

/// Schema migrations, applied in order; `schema_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE tenants (name TEXT PRIMARY KEY);
     CREATE TABLE databases (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
        UNIQUE (tenant, name));
     CREATE TABLE collections (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        database_id TEXT NOT NULL REFERENCES databases(id) ON DELETE CASCADE,
        metadata TEXT,
        configuration TEXT NOT NULL,
        dimension INTEGER,
        version INTEGER NOT NULL DEFAULT 0,
        UNIQUE (database_id, name));
     CREATE TABLE checkpoints (
        consumer TEXT NOT NULL,
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        log_offset INTEGER NOT NULL,
        PRIMARY KEY (consumer, collection_id));
     CREATE TABLE index_versions (
        collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        log_offset INTEGER NOT NULL,
        location TEXT NOT NULL,
        PRIMARY KEY (collection_id, version));",
    // Deleted collections, so start-up knows whose log records and directories may
    // go (and does not mistake them for data the catalogue forgot).
    "CREATE TABLE deleted_collections (
        id TEXT PRIMARY KEY,
        deleted_at INTEGER NOT NULL);",
    // When index versions were committed (garbage collection keeps a time
    // window), and the members of a distributed deployment.
    "ALTER TABLE index_versions ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE members (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        address TEXT NOT NULL,
        lease_until_ms INTEGER NOT NULL);",
    // Fork lineage: each collection forked, or forked from, and the root of its
    // tree (a collection's fork count is the tree's size less one).
    "CREATE TABLE forks (
        collection_id TEXT PRIMARY KEY,
        root TEXT NOT NULL);
     CREATE INDEX forks_root ON forks (root);",
    // Forks begun (the distributed fork writes its log before its catalogue
    // entry; an intent left behind is given up and its log removed).
    "CREATE TABLE pending_forks (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        started_ms INTEGER NOT NULL);",
];

pub struct SqliteSysDb {
    conn: Mutex<Connection>,
}

pub(crate) fn json_text(v: &Value) -> String {
    v.to_string()
}

impl SqliteSysDb {
    /// Opens (or creates) the catalogue at `path`, migrating it to this build's schema.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteSysDb> {
        let path = path.as_ref();
        let conn = Connection::open(path)?;
        Self::init(conn, &path.display().to_string())
    }

    /// Writes a consistent copy of the whole catalogue to the new file `to`
    /// (SQLite's `VACUUM INTO`: one read transaction, so it is a single moment).
    pub fn backup_to(&self, to: &Path) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
        Ok(())
    }

    /// Records that `fork` was forked from `source` (before the fork's catalogue
    /// entry is made: a row whose collection never came counts for nothing).
    pub fn record_fork(&self, source: &str, fork: &str) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        join_fork_tree(&tx, source, fork)?;
        tx.commit()?;
        Ok(())
    }

    /// Lists `id` among the deleted collections (a fork a crash cut short before
    /// its catalogue entry), so start-up drops the log records it left.
    pub fn remember_deleted(&self, id: &str) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.conn.lock().execute(
            "INSERT OR IGNORE INTO deleted_collections (id, deleted_at) VALUES (?1, ?2)",
            params![id, now],
        )?;
        Ok(())
    }

    /// An in-memory catalogue (for tests).
    pub fn in_memory() -> Result<SqliteSysDb> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(mut conn: Connection, path: &str) -> Result<SqliteSysDb> {
        // The compactor records a checkpoint about once a second; folding the WAL
        // every 16 pages and trimming it to 64 KiB keeps the catalogue's files
        // small (SQLite's default lets the WAL reach 4 MiB and keeps the file).
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
             PRAGMA wal_autocheckpoint=16; PRAGMA journal_size_limit=65536;",
        )?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let found: i64 = tx
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(SysDbError::TooNew {
                path: path.to_string(),
                found,
                known,
            });
        }
        for m in &MIGRATIONS[found as usize..] {
            tx.execute_batch(m)?;
        }
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [known])?;
        ensure_defaults(&tx)?;
        tx.commit()?;
        Ok(SqliteSysDb {
            conn: Mutex::new(conn),
        })
    }

    fn database_id(conn: &Connection, tenant: &str, name: &str) -> Result<String> {
        conn.query_row(
            "SELECT id FROM databases WHERE tenant = ?1 AND name = ?2",
            [tenant, name],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| SysDbError::NotFound(format!("Database [{name}] not found")))
    }

    fn row_to_collection(r: &rusqlite::Row<'_>) -> rusqlite::Result<Collection> {
        let metadata: Option<String> = r.get(3)?;
        let configuration: String = r.get(4)?;
        Ok(Collection {
            id: r.get(0)?,
            name: r.get(1)?,
            tenant: r.get(7)?,
            database: r.get(6)?,
            metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
            configuration: serde_json::from_str(&configuration).unwrap_or(Value::Null),
            dimension: r.get(5)?,
            version: r.get(2)?,
        })
    }

    const COLLECTION_SELECT: &'static str =
        "SELECT c.id, c.name, c.version, c.metadata, c.configuration, c.dimension, d.name, d.tenant
         FROM collections c JOIN databases d ON c.database_id = d.id";

    fn collection_where(
        conn: &Connection,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<Collection>> {
        let sql = format!("{} WHERE {clause}", Self::COLLECTION_SELECT);
        Ok(conn
            .query_row(&sql, args, Self::row_to_collection)
            .optional()?)
    }
}

/// Records `fork` in `source`'s fork tree (the source joins it as its root if
/// it was never forked).
fn join_fork_tree(tx: &rusqlite::Transaction<'_>, source: &str, fork: &str) -> Result<()> {
    let root: String = tx
        .query_row(
            "SELECT root FROM forks WHERE collection_id = ?1",
            [source],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| source.to_string());
    tx.execute(
        "INSERT OR IGNORE INTO forks (collection_id, root) VALUES (?1, ?2)",
        params![source, root],
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO forks (collection_id, root) VALUES (?1, ?2)",
        params![fork, root],
    )?;
    Ok(())
}

fn index_version_row(collection: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<IndexVersion> {
    let loc: String = r.get(2)?;
    Ok(IndexVersion {
        collection: collection.to_string(),
        version: r.get(0)?,
        log_offset: r.get::<_, i64>(1)? as u64,
        location: serde_json::from_str(&loc).unwrap_or(Value::Null),
        created_ms: r.get::<_, i64>(3)? as u64,
    })
}

/// Creates the default tenant and database if they are missing.
fn ensure_defaults(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO tenants (name) VALUES (?1)",
        [DEFAULT_TENANT],
    )?;
    let has_default: bool = tx
        .query_row(
            "SELECT 1 FROM databases WHERE tenant = ?1 AND name = ?2",
            [DEFAULT_TENANT, DEFAULT_DATABASE],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if !has_default {
        tx.execute(
            "INSERT INTO databases (id, name, tenant) VALUES (?1, ?2, ?3)",
            params![
                uuid::Uuid::new_v4().to_string(),
                DEFAULT_DATABASE,
                DEFAULT_TENANT
            ],
        )?;
    }
    Ok(())
}

pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 512 {
        return Err(SysDbError::InvalidArgument(format!(
            "{kind} name must be 1 to 512 characters, got {} characters",
            name.len()
        )));
    }
    Ok(())
}

impl SysDb for SqliteSysDb {
    fn create_tenant(&self, name: &str) -> Result<()> {
        check_name("tenant", name)?;
        let conn = self.conn.lock();
        let n = conn.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?1)", [name])?;
        if n == 0 {
            return Err(SysDbError::AlreadyExists(format!(
                "Tenant [{name}] already exists"
            )));
        }
        Ok(())
    }

    fn tenant_exists(&self, name: &str) -> Result<bool> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row("SELECT 1 FROM tenants WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        check_name("database", name)?;
        let conn = self.conn.lock();
        if conn
            .query_row(
                "SELECT 1 FROM tenants WHERE name = ?1",
                [tenant],
                |_| Ok(()),
            )
            .optional()?
            .is_none()
        {
            return Err(SysDbError::NotFound(format!("Tenant [{tenant}] not found")));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let n = conn.execute(
            "INSERT OR IGNORE INTO databases (id, name, tenant) VALUES (?1, ?2, ?3)",
            params![id, name, tenant],
        )?;
        if n == 0 {
            return Err(SysDbError::AlreadyExists(format!(
                "Database [{name}] already exists"
            )));
        }
        Ok(Database {
            id,
            name: name.to_string(),
            tenant: tenant.to_string(),
        })
    }

    fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        let conn = self.conn.lock();
        Ok(Database {
            id: Self::database_id(&conn, tenant, name)?,
            name: name.to_string(),
            tenant: tenant.to_string(),
        })
    }

    fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare(
            "SELECT id, name, tenant FROM databases WHERE tenant = ?1 ORDER BY rowid LIMIT ?2 OFFSET ?3",
        )?;
        let limit = limit.map_or(-1, i64::from);
        let rows = st.query_map(params![tenant, limit, offset], |r| {
            Ok(Database {
                id: r.get(0)?,
                name: r.get(1)?,
                tenant: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_database(&self, tenant: &str, name: &str) -> Result<()> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "DELETE FROM databases WHERE tenant = ?1 AND name = ?2",
            [tenant, name],
        )?;
        if n == 0 {
            return Err(SysDbError::NotFound(format!("Database [{name}] not found")));
        }
        Ok(())
    }

    fn create_collection(&self, c: NewCollection<'_>) -> Result<(Collection, bool)> {
        check_name("collection", c.name)?;
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let db = Self::database_id(&tx, c.tenant, c.database)?;
        if let Some(existing) =
            Self::collection_where(&tx, "c.database_id = ?1 AND c.name = ?2", &[&db, &c.name])?
        {
            if c.get_or_create {
                return Ok((existing, false));
            }
            return Err(SysDbError::AlreadyExists(format!(
                "Collection [{}] already exists",
                c.name
            )));
        }
        let id = match c.id {
            Some(id) => id.to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        tx.execute(
            "INSERT INTO collections (id, name, database_id, metadata, configuration) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, c.name, db, c.metadata.as_ref().map(json_text), json_text(&c.configuration)],
        )?;
        let created = Self::collection_where(&tx, "c.id = ?1", &[&id])?.expect("just inserted");
        tx.commit()?;
        Ok((created, true))
    }

    fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection> {
        let conn = self.conn.lock();
        Self::collection_where(
            &conn,
            "d.tenant = ?1 AND d.name = ?2 AND c.name = ?3",
            &[&tenant, &database, &name],
        )?
        .ok_or_else(|| SysDbError::NotFound(format!("Collection [{name}] does not exist")))
    }

    fn get_collection_by_id(&self, id: &str) -> Result<Collection> {
        let conn = self.conn.lock();
        Self::collection_where(&conn, "c.id = ?1", &[&id])?
            .ok_or_else(|| SysDbError::NotFound(format!("Collection [{id}] does not exist")))
    }

    fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Collection>> {
        let conn = self.conn.lock();
        Self::database_id(&conn, tenant, database)?;
        let sql = format!(
            "{} WHERE d.tenant = ?1 AND d.name = ?2 ORDER BY c.rowid LIMIT ?3 OFFSET ?4",
            Self::COLLECTION_SELECT
        );
        let mut st = conn.prepare(&sql)?;
        let limit = limit.map_or(-1, i64::from);
        let rows = st.query_map(
            params![tenant, database, limit, offset],
            Self::row_to_collection,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn reset(&self) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("DELETE FROM collections; DELETE FROM databases; DELETE FROM tenants;")?;
        ensure_defaults(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn all_collections(&self) -> Result<Vec<Collection>> {
        let conn = self.conn.lock();
        let sql = format!("{} ORDER BY c.rowid", Self::COLLECTION_SELECT);
        let mut st = conn.prepare(&sql)?;
        let rows = st.query_map([], Self::row_to_collection)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        let conn = self.conn.lock();
        let db = Self::database_id(&conn, tenant, database)?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM collections WHERE database_id = ?1",
            [db],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn update_collection(&self, id: &str, u: CollectionUpdate) -> Result<Collection> {
        if let Some(n) = &u.name {
            check_name("collection", n)?;
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let cur = Self::collection_where(&tx, "c.id = ?1", &[&id])?
            .ok_or_else(|| SysDbError::NotFound(format!("Collection [{id}] does not exist")))?;
        if let Some(n) = &u.name {
            if *n != cur.name {
                let db = Self::database_id(&tx, &cur.tenant, &cur.database)?;
                if Self::collection_where(&tx, "c.database_id = ?1 AND c.name = ?2", &[&db, n])?
                    .is_some()
                {
                    return Err(SysDbError::AlreadyExists(format!(
                        "Collection [{n}] already exists"
                    )));
                }
            }
        }
        tx.execute(
            "UPDATE collections SET name = ?2, metadata = ?3, configuration = ?4, version = version + 1 WHERE id = ?1",
            params![
                id,
                u.name.as_deref().unwrap_or(&cur.name),
                u.metadata.as_ref().or(cur.metadata.as_ref()).map(json_text),
                json_text(&u.configuration.as_ref().map_or_else(
                    || cur.configuration.clone(),
                    |c| keep_discovered(c, &cur.configuration)
                )),
            ],
        )?;
        let out = Self::collection_where(&tx, "c.id = ?1", &[&id])?.expect("exists");
        tx.commit()?;
        Ok(out)
    }

    fn discover_keys(&self, id: &str, keys: &[(String, &str)]) -> Result<Option<Collection>> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(mut c) = Self::collection_where(&tx, "c.id = ?1", &[&id])? else {
            return Err(SysDbError::NotFound(format!(
                "Collection [{id}] does not exist"
            )));
        };
        if !add_schema_keys(&mut c.configuration, keys) {
            return Ok(None);
        }
        tx.execute(
            "UPDATE collections SET configuration = ?2 WHERE id = ?1",
            params![id, json_text(&c.configuration)],
        )?;
        tx.commit()?;
        Ok(Some(c))
    }

    fn set_dimension(&self, id: &str, dim: u32) -> Result<()> {
        let conn = self.conn.lock();
        let cur: Option<Option<u32>> = conn
            .query_row(
                "SELECT dimension FROM collections WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        match cur {
            None => Err(SysDbError::NotFound(format!(
                "Collection [{id}] does not exist"
            ))),
            Some(Some(d)) if d != dim => Err(SysDbError::InvalidArgument(format!(
                "collection expecting embedding with dimension of {d}, got {dim}"
            ))),
            Some(Some(_)) => Ok(()),
            Some(None) => {
                conn.execute(
                    "UPDATE collections SET dimension = ?2 WHERE id = ?1 AND dimension IS NULL",
                    params![id, dim],
                )?;
                Ok(())
            }
        }
    }

    fn delete_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let c = Self::collection_where(
            &tx,
            "d.tenant = ?1 AND d.name = ?2 AND c.name = ?3",
            &[&tenant, &database, &name],
        )?
        .ok_or_else(|| SysDbError::NotFound(format!("Collection [{name}] does not exist")))?;
        tx.execute("DELETE FROM collections WHERE id = ?1", [&c.id])?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        tx.execute(
            "INSERT OR REPLACE INTO deleted_collections (id, deleted_at) VALUES (?1, ?2)",
            params![c.id, now],
        )?;
        tx.commit()?;
        Ok(c)
    }

    fn deleted_collections(&self) -> Result<Vec<String>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare("SELECT id FROM deleted_collections ORDER BY id")?;
        let ids = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }

    fn forget_deleted(&self, id: &str) -> Result<()> {
        self.conn
            .lock()
            .execute("DELETE FROM deleted_collections WHERE id = ?1", [id])?;
        Ok(())
    }

    fn set_checkpoint(&self, consumer: &str, collection: &str, offset: u64) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO checkpoints (consumer, collection_id, log_offset) VALUES (?1, ?2, ?3)
             ON CONFLICT (consumer, collection_id) DO UPDATE SET log_offset = MAX(log_offset, excluded.log_offset)",
            params![consumer, collection, offset as i64],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                SysDbError::NotFound(format!("Collection [{collection}] does not exist"))
            }
            e => e.into(),
        })?;
        Ok(())
    }

    fn checkpoint(&self, consumer: &str, collection: &str) -> Result<u64> {
        let conn = self.conn.lock();
        let v: Option<i64> = conn
            .query_row(
                "SELECT log_offset FROM checkpoints WHERE consumer = ?1 AND collection_id = ?2",
                [consumer, collection],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    fn commit_index_version(&self, v: &IndexVersion, expected: i64) -> Result<bool> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if Self::collection_where(&tx, "c.id = ?1", &[&v.collection])?.is_none() {
            return Err(SysDbError::NotFound(format!(
                "Collection [{}] does not exist",
                v.collection
            )));
        }
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM index_versions WHERE collection_id = ?1",
            [&v.collection],
            |r| r.get(0),
        )?;
        if current != expected || v.version <= current {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO index_versions (collection_id, version, log_offset, location, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![v.collection, v.version, v.log_offset as i64, json_text(&v.location), now_ms() as i64],
        )?;
        tx.execute(
            "UPDATE collections SET version = version + 1 WHERE id = ?1",
            [&v.collection],
        )?;
        // Locally a version's files are replaced in place: a short history is
        // kept for inspection only.
        tx.execute(
            "DELETE FROM index_versions WHERE collection_id = ?1 AND version <= ?2",
            params![v.collection, v.version - KEEP_INDEX_VERSIONS],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn index_versions(&self, collection: &str) -> Result<Vec<IndexVersion>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare(
            "SELECT version, log_offset, location, created_ms FROM index_versions WHERE collection_id = ?1 ORDER BY version",
        )?;
        let rows = st.query_map([collection], |r| index_version_row(collection, r))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn drop_index_versions(&self, collection: &str, versions: &[i64]) -> Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM index_versions WHERE collection_id = ?1",
            [collection],
            |r| r.get(0),
        )?;
        for v in versions.iter().filter(|&&v| v != current) {
            tx.execute(
                "DELETE FROM index_versions WHERE collection_id = ?1 AND version = ?2",
                params![collection, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn all_index_versions(&self) -> Result<Vec<IndexVersion>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare(
            "SELECT version, log_offset, location, created_ms, collection_id FROM index_versions
             ORDER BY collection_id, version",
        )?;
        let rows = st.query_map([], |r| {
            let c: String = r.get(4)?;
            index_version_row(&c, r)
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn begin_fork(&self, id: &str, source: &str) -> Result<()> {
        self.conn.lock().execute(
            "INSERT INTO pending_forks (id, source, started_ms) VALUES (?1, ?2, ?3)",
            params![id, source, now_ms() as i64],
        )?;
        Ok(())
    }

    fn commit_fork(&self, f: &ForkCommit<'_>) -> Result<Collection> {
        check_name("collection", f.name)?;
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM pending_forks WHERE id = ?1", [f.id])? == 0 {
            return Err(SysDbError::Stale(format!(
                "the fork {} was given up as abandoned; fork again",
                f.id
            )));
        }
        let src = Self::collection_where(&tx, "c.id = ?1", &[&f.source])?.ok_or_else(|| {
            SysDbError::NotFound(format!("Collection [{}] does not exist", f.source))
        })?;
        if let Some(v) = f.version {
            let there: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM index_versions WHERE collection_id = ?1 AND version = ?2",
                    params![f.source, v.version],
                    |r| r.get(0),
                )
                .optional()?;
            if there.is_none() {
                return Err(SysDbError::Stale(format!(
                    "version {} of collection {} was dropped while it was being forked; \
                     fork again",
                    v.version, f.source
                )));
            }
        }
        let db = Self::database_id(&tx, &src.tenant, &src.database)?;
        let taken: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM collections WHERE database_id = ?1 AND name = ?2",
                params![db, f.name],
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Err(SysDbError::AlreadyExists(format!(
                "Collection [{}] already exists",
                f.name
            )));
        }
        tx.execute(
            "INSERT INTO collections (id, name, database_id, metadata, configuration, dimension)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                f.id,
                f.name,
                db,
                src.metadata.as_ref().map(json_text),
                json_text(&src.configuration),
                src.dimension
            ],
        )?;
        if let Some(v) = f.version {
            tx.execute(
                "INSERT INTO index_versions (collection_id, version, log_offset, location, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![f.id, v.version, v.log_offset as i64, json_text(&v.location), now_ms() as i64],
            )?;
        }
        join_fork_tree(&tx, f.source, f.id)?;
        let made = Self::collection_where(&tx, "c.id = ?1", &[&f.id])?.expect("just inserted");
        tx.commit()?;
        Ok(made)
    }

    fn abandon_forks(&self, id: Option<&str>, started_before_ms: u64) -> Result<Vec<String>> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT id FROM pending_forks WHERE (?1 IS NULL OR id = ?1) AND started_ms <= ?2",
            )?;
            let rows = st.query_map(
                params![id, started_before_ms.min(i64::MAX as u64) as i64],
                |r| r.get(0),
            )?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let now = (now_ms() / 1000) as i64;
        for i in &ids {
            tx.execute("DELETE FROM pending_forks WHERE id = ?1", [i])?;
            tx.execute(
                "INSERT OR IGNORE INTO deleted_collections (id, deleted_at) VALUES (?1, ?2)",
                params![i, now],
            )?;
        }
        tx.commit()?;
        Ok(ids)
    }

    fn fork_count(&self, id: &str) -> Result<u64> {
        let conn = self.conn.lock();
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM forks f JOIN collections c ON c.id = f.collection_id
             WHERE f.root = (SELECT coalesce((SELECT root FROM forks WHERE collection_id = ?1), ?1))",
            [id],
            |r| r.get(0),
        )?;
        Ok((n as u64).saturating_sub(1))
    }

    fn heartbeat(&self, m: &Member) -> Result<()> {
        self.conn.lock().execute(
            "INSERT INTO members (id, role, address, lease_until_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET role = excluded.role, address = excluded.address,
             lease_until_ms = excluded.lease_until_ms",
            params![m.id, m.role, m.address, m.lease_until_ms as i64],
        )?;
        Ok(())
    }

    fn members(&self, role: Option<&str>) -> Result<Vec<Member>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare(
            "SELECT id, role, address, lease_until_ms FROM members
             WHERE lease_until_ms > ?1 AND (?2 IS NULL OR role = ?2) ORDER BY id",
        )?;
        let rows = st.query_map(params![now_ms() as i64, role], |r| {
            Ok(Member {
                id: r.get(0)?,
                role: r.get(1)?,
                address: r.get(2)?,
                lease_until_ms: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn leave(&self, id: &str) -> Result<()> {
        self.conn
            .lock()
            .execute("DELETE FROM members WHERE id = ?1", [id])?;
        Ok(())
    }

    fn latest_index_version(&self, collection: &str) -> Result<Option<IndexVersion>> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row(
                "SELECT version, log_offset, location, created_ms FROM index_versions WHERE collection_id = ?1 ORDER BY version DESC LIMIT 1",
                [collection],
                |r| index_version_row(collection, r),
            )
            .optional()?)
    }
}
