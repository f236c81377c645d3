//! Embedded Indigo: the whole data model on a local directory, with the five
//! components of the architecture in one process. Writes are validated (the
//! gateway's part), made durable in the write-ahead log and acknowledged; the
//! compactor folds them into each collection's store and HNSW index in the
//! background; reads go through the executor, which overlays what is not yet
//! folded, so every read sees every acknowledged write. The system database
//! (SQLite) holds tenants, databases, collections, checkpoints and index versions.
//!
//! ```no_run
//! use indigo::{Indigo, Batch, QueryRequest};
//! let db = Indigo::open("./indigo_data")?;
//! let c = db.get_or_create_collection("default_tenant", "default_database", "docs", None, None)?;
//! c.add(Batch::new(vec!["a".into()], vec![vec![0.1, 0.2]]))?;
//! let hits = c.query(&QueryRequest::new(vec![vec![0.1, 0.2]], 1))?;
//! # Ok::<(), indigo::Error>(())
//! ```
//!
//! Data directory: `LOCK` (held while open), `sysdb.sqlite3`, `log/`, and
//! `collections/<id>/{store,hnsw}`. See `docs/format.md`.

mod backlog;
mod backup;
mod catalogue;
pub mod config;
pub mod rules;
pub mod schema;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use indigo_compactor::{Env, Job, Jobs, Segment, Worker};
use indigo_executor::View;
use indigo_health::Health;
use indigo_log::{CollectionId, FileLog, Log, LogOffset};
use indigo_storage::fs::{FileSystem, StdFs};
use indigo_sysdb::{NewCollection, SqliteSysDb, SysDb, SysDbError};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

pub use backlog::BacklogLimit;
pub use backup::{restore, verify as verify_backup, BackupReport};
pub use catalogue::{repair, RepairReport};
pub use config::CollectionConfig;
pub use indigo_executor::{Include, Records, Selection};
pub use indigo_health::{Failure, COMPONENTS as BACKGROUND_COMPONENTS};
pub use indigo_index::Space;
pub use indigo_sysdb::{Collection as CollectionInfo, Database, DEFAULT_DATABASE, DEFAULT_TENANT};
pub use indigo_types::{
    DocFilter, FilterLimits, InvalidArgument, Limits, MetaValue, Metadata, RecordOp, Scalar,
    SparseVector, Where, WriteKind,
};

/// What can go wrong, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    /// A whole sentence, in Chroma's words (clients match on them).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A request asks for more than the [`Limits`] allow (results, ids, queries).
    #[error("{0}")]
    Quota(String),
    #[error("Collection expecting embedding with dimension of {expected}, got {got}")]
    DimensionMismatch { expected: u32, got: u32 },
    #[error("{0} is in use by another process; stop it, or open another path")]
    InUse(PathBuf),
    /// The catalogue and the data directory disagree (a lost or replaced
    /// catalogue, unknown or missing collection directories): the message says
    /// what was found and what to do. Nothing was changed.
    #[error("{0}")]
    Catalogue(String),
    /// The collection cannot take writes now: its log cannot be folded into its
    /// indexes (Indigo retries in the background). Retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Too much of the collection's log waits to be indexed and indexing made no
    /// headway for a while (see [`BacklogLimit`]). Retry later.
    #[error("{0}")]
    Backlog(String),
    /// A storage failure (disk full, I/O error, damaged file): the message names
    /// the file. Writes are refused until the database is reopened.
    #[error("storage error: {0}")]
    Storage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<InvalidArgument> for Error {
    fn from(e: InvalidArgument) -> Self {
        Error::InvalidArgument(e.0)
    }
}

impl From<SysDbError> for Error {
    fn from(e: SysDbError) -> Self {
        match e {
            SysDbError::NotFound(s) => Error::NotFound(s),
            SysDbError::AlreadyExists(s) => Error::AlreadyExists(s),
            SysDbError::InvalidArgument(s) => Error::InvalidArgument(s),
            SysDbError::Stale(s) => Error::Unavailable(s),
            e => Error::Storage(e.to_string()),
        }
    }
}

impl From<indigo_compactor::Error> for Error {
    fn from(e: indigo_compactor::Error) -> Self {
        match e {
            indigo_compactor::Error::SysDb(e) => e.into(),
            e => Error::Storage(e.to_string()),
        }
    }
}

impl From<indigo_segment::Error> for Error {
    fn from(e: indigo_segment::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<indigo_log::LogError> for Error {
    fn from(e: indigo_log::LogError) -> Self {
        Error::Storage(e.to_string())
    }
}

/// How to open a data directory.
#[derive(Clone)]
pub struct Options {
    /// Fold the log into indexes on a background thread (off: only
    /// [`Indigo::compact`] does, which tests use to exercise the log-tail path).
    pub background_compaction: bool,
    /// Answer every query by an exact scan instead of HNSW (for tests).
    pub exact_search: bool,
    /// Where the log and the collections' files live (tests inject faults and
    /// crashes here). The lock file and the system database are always on the
    /// real file system.
    pub fs: Arc<dyn FileSystem>,
    /// Bounds on what one request may ask for.
    pub limits: Limits,
    /// The vector index new collections report when they name none (Chroma's
    /// single node: hnsw; its distributed mode: spann). Indigo builds HNSW.
    pub default_index: schema::VectorIndexKind,
    /// How much of a collection's log may wait to be indexed before writes wait
    /// (only with background compaction).
    pub backlog: BacklogLimit,
    /// The memory open collections may hold before idle ones are hibernated.
    pub memory: MemoryBudget,
    /// The longest applied changes wait for a checkpoint (an index version)
    /// while more keep arriving; a collection whose log is folded to its head
    /// is checkpointed at once (at most every 100 ms).
    pub checkpoint_every: std::time::Duration,
}

/// A budget for the memory of open collections (their HNSW graphs and store
/// memtables). Over it, the compactor hibernates collections idle for at least
/// `idle`, least recently used first: their index is synced and dropped and their
/// memtable flushed; the next read or write loads the index from its files.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBudget {
    pub bytes: u64,
    pub idle: std::time::Duration,
}

impl Default for MemoryBudget {
    /// A quarter of the machine's memory (at least 512 MiB), idle for 30 s.
    fn default() -> Self {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(8 << 30, |kb| kb * 1024);
        MemoryBudget {
            bytes: (total / 4).max(512 << 20),
            idle: std::time::Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("background_compaction", &self.background_compaction)
            .field("exact_search", &self.exact_search)
            .field("limits", &self.limits)
            .field("default_index", &self.default_index)
            .field("backlog", &self.backlog)
            .field("memory", &self.memory)
            .field("checkpoint_every", &self.checkpoint_every)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            background_compaction: true,
            exact_search: false,
            fs: Arc::new(StdFs),
            limits: Limits::default(),
            default_index: schema::VectorIndexKind::Hnsw,
            backlog: BacklogLimit::default(),
            memory: MemoryBudget::default(),
            checkpoint_every: indigo_compactor::CHECKPOINT_EVERY,
        }
    }
}

/// An open collection's runtime state.
struct Open {
    id: String,
    log_id: CollectionId,
    /// Replaced by a fresh open of its files after a failure (see [`Jobs::reopen`]).
    segment: RwLock<Arc<Segment>>,
    /// 0 until the first write fixes it.
    dim: AtomicU32,
    tail: indigo_executor::TailCache,
    /// Log entries not yet folded, held to [`Options::backlog`].
    backlog: backlog::Backlog,
    /// (key, value type) pairs this process has listed in the schema already.
    discovered: Mutex<std::collections::HashSet<(String, &'static str)>>,
}

impl Open {
    fn segment(&self) -> Arc<Segment> {
        self.segment.read().clone()
    }
}

struct Inner {
    path: PathBuf,
    options: Options,
    env: Env,
    sysdb: Arc<SqliteSysDb>,
    log: Arc<FileLog>,
    open: RwLock<HashMap<String, Arc<Open>>>,
    /// Serialises opening segments and dropping collections.
    opening: Mutex<()>,
    _lock: File,
}

struct Registry(std::sync::Weak<Inner>);

impl Jobs for Registry {
    fn jobs(&self) -> Vec<Job> {
        let Some(inner) = self.0.upgrade() else {
            return Vec::new();
        };
        let open = inner.open.read();
        open.values()
            .map(|o| Job {
                id: o.id.clone(),
                log_id: o.log_id,
                segment: o.segment(),
            })
            .collect()
    }

    fn reopen(&self, job: &Job) -> indigo_compactor::Result<()> {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        // The compactor holds the segment's `hold()` here, and deleting a
        // collection takes `opening` before it waits for that: never wait for
        // `opening` indefinitely (the reopen is retried with backoff).
        let Some(_g) = inner
            .opening
            .try_lock_for(std::time::Duration::from_secs(1))
        else {
            return Err(indigo_compactor::Error::Corrupt(
                "the collection is being opened or deleted; the reopen is retried".into(),
            ));
        };
        let Some(open) = inner.open.read().get(&job.id).cloned() else {
            return Ok(());
        };
        let current = open.segment();
        if !Arc::ptr_eq(&current, &job.segment) || current.is_retired() {
            return Ok(()); // already replaced, or its collection is going
        }
        current.close();
        let info = inner
            .sysdb
            .get_collection_by_id(&job.id)
            .map_err(indigo_compactor::Error::SysDb)?;
        let fresh = inner
            .load_segment(&info)
            .map_err(|e| indigo_compactor::Error::Corrupt(e.to_string()))?;
        *open.segment.write() = Arc::new(fresh);
        open.tail.clear();
        tracing::info!(collection = %job.id, "reopened the collection's files after a failure");
        Ok(())
    }

    fn idle_pass(&self, log: &dyn Log, sysdb: &dyn SysDb) {
        if let Some(inner) = self.0.upgrade() {
            inner.hibernate_over_budget(log, sysdb);
        }
    }
}

impl Inner {
    /// Over the memory budget, hibernates idle collections, least recently used
    /// first, until under it. A collection with log entries still to fold is not
    /// idle. Failures are reported to health (index maintenance, subject the
    /// collection's directory) and the collection stays as it was.
    fn hibernate_over_budget(&self, log: &dyn Log, sysdb: &dyn SysDb) {
        let budget = self.options.memory;
        let open: Vec<Arc<Open>> = self.open.read().values().cloned().collect();
        let mut segs: Vec<(u64, u64, &Arc<Open>, Arc<Segment>)> = open
            .iter()
            .map(|o| {
                let s = o.segment();
                (s.last_used(), s.memory_bytes(), o, s)
            })
            .collect();
        let mut total: u64 = segs.iter().map(|s| s.1).sum();
        if total <= budget.bytes {
            return;
        }
        segs.sort_unstable_by_key(|s| s.0);
        let now = indigo_segment::now_ms();
        for (last, bytes, o, seg) in segs {
            if total <= budget.bytes || now.saturating_sub(last) < budget.idle.as_millis() as u64 {
                break;
            }
            if bytes == 0 || log.head(o.log_id).0 > seg.applied() {
                continue;
            }
            let Some(_held) = seg.hold() else { continue };
            let job = Job {
                id: o.id.clone(),
                log_id: o.log_id,
                segment: seg.clone(),
            };
            let subject = seg.dir().display().to_string();
            let r = indigo_compactor::checkpoint(&job, log, sysdb)
                .map_err(|e| e.to_string())
                .and_then(|_| seg.hibernate().map_err(|e| e.to_string()));
            match r {
                Ok(freed) => {
                    self.env
                        .health
                        .recovered(indigo_health::INDEX_MAINTENANCE, &subject);
                    if freed {
                        o.tail.clear();
                        total = total.saturating_sub(bytes);
                    }
                }
                Err(e) => self.env.health.failed(
                    indigo_health::INDEX_MAINTENANCE,
                    &subject,
                    &format!("hibernating the collection: {e}"),
                ),
            }
        }
    }
}

/// An open data directory.
pub struct Indigo {
    inner: Arc<Inner>,
    worker: Option<Arc<Worker>>,
}

/// Takes the data directory's lock (`LOCK`), creating the directory if needed:
/// another process gets [`Error::InUse`] at once.
fn lock_dir(path: &Path) -> Result<File> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Storage(format!("{what} {}: {e}", p.display()))
    };
    indigo_storage::fs::create_dir_durable(&StdFs, path)
        .map_err(|e| io("create data directory", path, e))?;
    let lock_path = path.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io("open lock file", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::InUse(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io("lock", &lock_path, e)),
    }
}

/// A collection id (a UUID) from its log id.
fn id_string(lid: CollectionId) -> String {
    let h: String = lid.0.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn log_id(id: &str) -> Result<CollectionId> {
    CollectionId::parse_uuid(id)
        .ok_or_else(|| Error::InvalidArgument(format!("{id:?} is not a collection id (a UUID)")))
}

impl Indigo {
    pub fn open(path: impl AsRef<Path>) -> Result<Indigo> {
        Self::open_with(path, Options::default())
    }

    /// Opens (creating if needed) the data directory at `path`. A second process
    /// opening the same path gets [`Error::InUse`] at once.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Indigo> {
        let path = path.as_ref().to_path_buf();
        let lock = lock_dir(&path)?;
        if let Some(msg) = catalogue::missing_catalogue(&*options.fs, &path)? {
            return Err(Error::Catalogue(msg));
        }
        let sysdb = Arc::new(SqliteSysDb::open(path.join("sysdb.sqlite3"))?);
        // Before anything else touches the data: does the catalogue account for it?
        let mut known = HashMap::new();
        for c in sysdb.all_collections()? {
            if let Ok(lid) = log_id(&c.id) {
                let at = sysdb.checkpoint(indigo_compactor::CONSUMER, &c.id)?;
                known.insert(c.id, (lid, at));
            }
        }
        if let Some(msg) = catalogue::disagreement(&*options.fs, &path, &known)? {
            return Err(Error::Catalogue(msg));
        }
        let log = Arc::new(FileLog::open_with_fs(
            options.fs.clone(),
            &path.join("log"),
            Default::default(),
        )?);
        let env = Env {
            fs: options.fs.clone(),
            health: Arc::new(Health::new()),
        };
        let inner = Arc::new(Inner {
            path,
            options,
            env,
            sysdb,
            log,
            open: RwLock::new(HashMap::new()),
            opening: Mutex::new(()),
            _lock: lock,
        });
        let checkpoints = inner.settle(known)?;
        // Collections with log entries not yet folded are opened now, so the
        // compactor picks them up.
        for (id, (lid, at)) in &checkpoints {
            if inner.log.head(*lid).0 > *at {
                inner.open_collection(id)?;
            }
        }
        let worker = inner.options.background_compaction.then(|| {
            Arc::new(Worker::spawn(
                Arc::new(Registry(Arc::downgrade(&inner))),
                inner.log.clone(),
                inner.sysdb.clone(),
                inner.env.health.clone(),
                inner.options.checkpoint_every,
            ))
        });
        Ok(Indigo { inner, worker })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn create_tenant(&self, name: &str) -> Result<()> {
        rules::check_tenant_name(name)?;
        Ok(self.inner.sysdb.create_tenant(name)?)
    }

    pub fn get_tenant(&self, name: &str) -> Result<()> {
        if self.inner.sysdb.tenant_exists(name)? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("Tenant [{name}] not found")))
        }
    }

    pub fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        rules::check_database_name(name)?;
        Ok(self.inner.sysdb.create_database(tenant, name)?)
    }

    pub fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        Ok(self.inner.sysdb.get_database(tenant, name)?)
    }

    pub fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        Ok(self.inner.sysdb.list_databases(tenant, limit, offset)?)
    }

    /// Deletes a database and every collection in it.
    pub fn delete_database(&self, tenant: &str, name: &str) -> Result<()> {
        let cols = self.inner.sysdb.list_collections(tenant, name, None, 0)?;
        for c in cols {
            self.delete_collection(tenant, name, &c.name)?;
        }
        Ok(self.inner.sysdb.delete_database(tenant, name)?)
    }

    /// Creates a collection. `configuration` is Chroma's configuration object;
    /// legacy `hnsw:*` keys in `metadata` are honoured too.
    pub fn create_collection(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
        metadata: Option<Value>,
        configuration: Option<Value>,
    ) -> Result<Collection> {
        self.create(tenant, database, name, metadata, configuration, false)
    }

    /// Returns the collection of that name, creating it if there is none (an
    /// existing collection keeps its metadata and configuration).
    pub fn get_or_create_collection(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
        metadata: Option<Value>,
        configuration: Option<Value>,
    ) -> Result<Collection> {
        self.create(tenant, database, name, metadata, configuration, true)
    }

    fn create(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
        metadata: Option<Value>,
        configuration: Option<Value>,
        get_or_create: bool,
    ) -> Result<Collection> {
        check_collection_name(name)?;
        if let Some(m) = &metadata {
            check_collection_metadata(m)?;
        }
        let config = CollectionConfig::from_create(
            configuration.as_ref(),
            metadata.as_ref(),
            self.inner.options.default_index,
        )?;
        config.check_limits(&self.inner.options.limits)?;
        // A concurrent delete can remove what get_or_create found (or made) before
        // it is opened; the catalogue then no longer has it, and another round
        // creates it anew, as Chroma's single transaction would have.
        let mut rounds = 0;
        loop {
            let (info, _) = self.inner.sysdb.create_collection(NewCollection {
                tenant,
                database,
                name,
                metadata: metadata.clone(),
                configuration: config.to_json(),
                get_or_create,
                id: None,
            })?;
            match self.settle_created(info) {
                Err(Error::NotFound(_)) if get_or_create && rounds < 32 => rounds += 1,
                // Chroma's clients tell this race by "concurrent" in the message.
                Err(Error::NotFound(m)) if get_or_create => {
                    return Err(Error::NotFound(format!(
                    "{m}: deleted concurrently {rounds} times while get_or_create made it; retry"
                )))
                }
                r => return r,
            }
        }
    }

    /// Writes a new collection's record into its directory and opens it, unless a
    /// delete got there first (the record would bring back a deleted directory).
    fn settle_created(&self, info: CollectionInfo) -> Result<Collection> {
        {
            let _g = self.inner.opening.lock();
            self.inner.sysdb.get_collection_by_id(&info.id)?;
            catalogue::write_record(
                &*self.inner.env.fs,
                &self.inner.collection_dir(&info.id),
                &info,
            )?;
        }
        self.handle(info)
    }

    pub fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection> {
        let info = self.inner.sysdb.get_collection(tenant, database, name)?;
        self.handle(info)
    }

    pub fn get_collection_by_id(&self, id: &str) -> Result<Collection> {
        let info = self.inner.sysdb.get_collection_by_id(id)?;
        self.handle(info)
    }

    fn handle(&self, info: CollectionInfo) -> Result<Collection> {
        let open = self.inner.open_collection(&info.id)?;
        Ok(Collection {
            inner: self.inner.clone(),
            worker: self.worker.clone(),
            open,
            info,
        })
    }

    pub fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<CollectionInfo>> {
        Ok(self
            .inner
            .sysdb
            .list_collections(tenant, database, limit, offset)?)
    }

    pub fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        Ok(self.inner.sysdb.count_collections(tenant, database)?)
    }

    /// Renames a collection or changes its metadata or (search-time)
    /// configuration.
    pub fn modify_collection(
        &self,
        id: &str,
        new_name: Option<String>,
        new_metadata: Option<Value>,
        new_configuration: Option<Value>,
    ) -> Result<CollectionInfo> {
        if let Some(n) = &new_name {
            check_collection_name(n)?;
        }
        if let Some(m) = &new_metadata {
            check_collection_metadata(m)?;
        }
        let current = self.inner.sysdb.get_collection_by_id(id)?;
        let mut config = CollectionConfig::from_stored(&current.configuration)?;
        if let Some(c) = &new_configuration {
            config.apply(c, false)?;
            config.check_limits(&self.inner.options.limits)?;
        }
        let info = self.inner.sysdb.update_collection(
            id,
            indigo_sysdb::CollectionUpdate {
                name: new_name,
                metadata: new_metadata,
                configuration: new_configuration.is_some().then(|| config.to_json()),
            },
        )?;
        if let Some(o) = self.inner.open.read().get(id) {
            o.segment().set_ef_search(config.ef_search);
        }
        catalogue::write_record(&*self.inner.env.fs, &self.inner.collection_dir(id), &info)?;
        Ok(info)
    }

    /// Deletes a collection and its data; its space comes back at once.
    pub fn delete_collection(&self, tenant: &str, database: &str, name: &str) -> Result<()> {
        let _g = self.inner.opening.lock();
        // The compactor finishes with the segment (it records checkpoints in the
        // system database) before the catalogue entry and the files go.
        let id = self.inner.sysdb.get_collection(tenant, database, name)?.id;
        let open = self.inner.open.read().get(&id).map(|o| o.segment());
        if let Some(seg) = &open {
            seg.set_retired(true);
        }
        let dir = self.inner.collection_dir(&id);
        let fs = &*self.inner.env.fs;
        // The marker first: once the catalogue entry goes, start-up must know the
        // directory's data may go with it (and is not data the catalogue forgot).
        let deleted = catalogue::mark_deleting(fs, &dir).and_then(|_| {
            self.inner
                .sysdb
                .delete_collection(tenant, database, name)
                .map_err(Error::from)
        });
        let info = match deleted {
            Ok(info) => info,
            Err(e) => {
                let _ = fs.remove(&dir.join(catalogue::DELETING));
                if let Some(seg) = &open {
                    seg.set_retired(false);
                }
                return Err(e);
            }
        };
        self.inner.env.health.forget(&info.id);
        if let Some(o) = self.inner.open.write().remove(&info.id) {
            o.segment().close();
        }
        catalogue::remove_deleted(fs, &*self.inner.log, &dir, log_id(&info.id)?)
    }

    /// Forks collection `id` into a new collection `new_name` in the same
    /// database: the records the source holds now, its metadata and
    /// configuration. Then the two evolve independently. Copy-on-write: the
    /// source's immutable files are hard-linked, so a fork costs the bytes of the
    /// logs it copies, and a file's space comes back only when neither needs it.
    ///
    /// Until the fork's catalogue entry exists its directory carries the
    /// `DELETING` marker, so a crash midway leaves nothing that start-up would
    /// take for a collection: it removes the directory as an unfinished delete.
    ///
    /// Returns the fork's catalogue entry; it is opened (its index loaded) on
    /// first use, like any collection after a restart.
    pub fn fork_collection(
        &self,
        id: &str,
        new_name: &str,
    ) -> Result<(CollectionInfo, ForkReport)> {
        check_collection_name(new_name)?;
        let src = self.get_collection_by_id(id)?;
        let fork_id = uuid::Uuid::new_v4().to_string();
        let lid = log_id(&fork_id)?;
        let dir = self.inner.collection_dir(&fork_id);
        let fs = &*self.inner.env.fs;
        catalogue::mark_deleting(fs, &dir)?;
        let made = (|| {
            // The source's log after the fork point is read below: nothing of it
            // may be truncated meanwhile.
            let _hold = self.inner.log.hold_truncation();
            let seg = src.open.segment();
            let copy = {
                // Held, the source cannot be deleted while its files are linked.
                let Some(_held) = seg.hold() else {
                    return Err(Error::NotFound(format!("Collection [{id}] does not exist")));
                };
                seg.fork_to(&dir)?
            };
            // What the source's log holds after the fork point, up to its head
            // now (writes still arriving belong to the source alone), becomes
            // the fork's first entries, in order.
            let head = self.inner.log.head(src.open.log_id);
            let mut after = LogOffset(copy.applied);
            let mut log_records = 0;
            while after < head {
                let recs = self.inner.log.read(src.open.log_id, after, 256)?;
                if recs.is_empty() {
                    break;
                }
                for r in recs.iter().filter(|r| r.offset <= head) {
                    self.inner.log.append(lid, &r.payload)?;
                    after = r.offset;
                    log_records += 1;
                }
                if recs.last().is_some_and(|r| r.offset > head) {
                    break;
                }
            }
            let now = self.inner.sysdb.get_collection_by_id(id)?;
            self.inner.sysdb.record_fork(id, &fork_id)?;
            let _g = self.inner.opening.lock();
            self.inner.sysdb.create_collection(NewCollection {
                tenant: &now.tenant,
                database: &now.database,
                name: new_name,
                metadata: now.metadata.clone(),
                configuration: now.configuration.clone(),
                get_or_create: false,
                id: Some(&fork_id),
            })?;
            if let Some(d) = now.dimension {
                self.inner.sysdb.set_dimension(&fork_id, d)?;
            }
            let info = self.inner.sysdb.get_collection_by_id(&fork_id)?;
            catalogue::write_record(fs, &dir, &info)?;
            fs.remove(&dir.join(catalogue::DELETING))
                .and_then(|_| fs.sync_dir(&dir))
                .map_err(|e| Error::Storage(format!("unmark {}: {e}", dir.display())))?;
            Ok((
                info,
                ForkReport {
                    linked_bytes: copy.linked,
                    copied_bytes: copy.copied,
                    log_records,
                },
            ))
        })();
        match made {
            Ok(made) => Ok(made),
            Err(e) => {
                // The catalogue has no entry (creating it is the last step that
                // can fail before the marker goes): the directory is no collection.
                if self.inner.sysdb.get_collection_by_id(&fork_id).is_err() {
                    let cleaned = self
                        .inner
                        .sysdb
                        .remember_deleted(&fork_id)
                        .map_err(Error::from)
                        .and_then(|_| catalogue::remove_deleted(fs, &*self.inner.log, &dir, lid));
                    if let Err(c) = cleaned {
                        tracing::warn!(
                            "an unfinished fork left {}: {c}; start-up removes it",
                            dir.display()
                        );
                    }
                }
                Err(e)
            }
        }
    }

    /// Chroma's fork count: how many forks the collection's fork tree holds
    /// (the same for each member; 0 if it was never forked).
    pub fn fork_count(&self, id: &str) -> Result<u64> {
        self.inner.sysdb.get_collection_by_id(id)?;
        Ok(self.inner.sysdb.fork_count(id)?)
    }

    /// Deletes every collection, database and tenant, leaving the defaults.
    pub fn reset(&self) -> Result<()> {
        for c in self.inner.sysdb.all_collections()? {
            self.delete_collection(&c.tenant, &c.database, &c.name)?;
        }
        Ok(self.inner.sysdb.reset()?)
    }

    /// A collection's current catalogue entry, by id.
    pub fn collection_info(&self, id: &str) -> Result<CollectionInfo> {
        Ok(self.inner.sysdb.get_collection_by_id(id)?)
    }

    /// Folds every collection's log into its indexes now and makes it durable.
    pub fn compact(&self) -> Result<()> {
        let jobs = Registry(Arc::downgrade(&self.inner)).jobs();
        for job in jobs {
            indigo_compactor::drain(&job, &*self.inner.log, &*self.inner.sysdb)?;
        }
        Ok(())
    }

    /// Operational figures for monitoring: log bytes on disk, log entries not yet
    /// folded into indexes, records folded into open collections' indexes. Costs
    /// O(open collections), whatever their size.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        let mut lag = 0u64;
        let mut records = 0u64;
        let (mut backlog_records, mut backlog_bytes, mut tail_bytes) = (0u64, 0u64, 0u64);
        let (mut memory, mut loaded) = (0u64, 0u64);
        let open: Vec<Arc<Open>> = self.inner.open.read().values().cloned().collect();
        for o in open {
            let seg = o.segment();
            lag += self
                .inner
                .log
                .head(o.log_id)
                .0
                .saturating_sub(seg.applied());
            records += seg.live_count();
            let (r, b) = o.backlog.size(seg.applied());
            backlog_records += r;
            backlog_bytes += b;
            tail_bytes += o.tail.bytes();
            let m = seg.memory_bytes();
            memory += m;
            loaded += u64::from(m > 0);
        }
        let log_bytes: u64 = std::fs::read_dir(self.inner.path.join("log"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        vec![
            ("indigo_log_bytes".into(), log_bytes as f64),
            ("indigo_compaction_lag_entries".into(), lag as f64),
            ("indigo_records".into(), records as f64),
            ("indigo_backlog_records".into(), backlog_records as f64),
            ("indigo_backlog_bytes".into(), backlog_bytes as f64),
            ("indigo_tail_cache_bytes".into(), tail_bytes as f64),
            ("indigo_collections_memory_bytes".into(), memory as f64),
            ("indigo_collections_in_memory".into(), loaded as f64),
        ]
    }

    /// Background failures that stand now (compactor, flush, merge, index
    /// maintenance), each with what it failed on; empty when all is well.
    pub fn failures(&self) -> Vec<Failure> {
        let mut f = self.inner.env.health.failures();
        if let Some(why) = self.inner.log.poisoned() {
            // Not background work, but it stops every write: health must show it.
            f.push(Failure {
                component: "log",
                subject: self.inner.path.join("log").display().to_string(),
                error: format!("{why}; restart the server once the disk is sound"),
                since: std::time::SystemTime::now(),
                attempts: 1,
            });
        }
        f
    }

    /// Failed background attempts so far, per component (for metrics).
    pub fn background_errors_total(&self) -> Vec<(&'static str, u64)> {
        self.inner.env.health.errors_total()
    }
}

impl Drop for Indigo {
    fn drop(&mut self) {
        // The worker checkpoints on the way out, so the next open has less to replay.
        self.worker.take();
    }
}

impl Inner {
    fn collection_dir(&self, id: &str) -> PathBuf {
        self.path.join("collections").join(id)
    }

    /// Settles the log and the collection directories with the catalogue, which
    /// is the authority but never a reason to delete. (Before this, open has
    /// refused to start if the catalogue does not know a collection directory, or
    /// names one with folded data whose directory is gone: [`Error::Catalogue`].)
    /// - a directory marked `DELETING` whose catalogue entry is gone is a delete
    ///   that a crash cut short: it is finished (while the catalogue still has the
    ///   entry, the delete never happened and the marker goes instead);
    /// - the log does not persist truncation, so each collection's records up to
    ///   its checkpoint are truncated again; records of collections that nothing
    ///   names are kept, and said so.
    ///
    /// Returns each collection's log id and checkpoint, by collection id.
    fn settle(
        &self,
        known: HashMap<String, (CollectionId, u64)>,
    ) -> Result<HashMap<String, (CollectionId, u64)>> {
        let fs = &*self.env.fs;
        for (id, dir, deleting) in catalogue::collection_dirs(fs, &self.path)? {
            if !deleting {
                continue;
            }
            if known.contains_key(&id) {
                tracing::warn!(collection = %id, "a delete was interrupted before the catalogue entry went (or a fork after it was made); the collection stays");
                fs.remove(&dir.join(catalogue::DELETING))
                    .and_then(|_| fs.sync_dir(&dir))
                    .map_err(|e| Error::Storage(format!("unmark {}: {e}", dir.display())))?;
                continue;
            }
            // Also a fork a crash cut short, which no catalogue entry ever named:
            // listed as deleted, its log records are dropped like a delete's.
            self.sysdb.remember_deleted(&id)?;
            catalogue::remove_deleted(fs, &*self.log, &dir, log_id(&id)?)?;
        }
        let deleted: HashMap<CollectionId, String> = self
            .sysdb
            .deleted_collections()?
            .into_iter()
            .filter_map(|id| Some((log_id(&id).ok()?, id)))
            .collect();
        let checkpoints: HashMap<CollectionId, u64> = known.values().copied().collect();
        for lid in self.log.collections() {
            match checkpoints.get(&lid) {
                Some(&at) => self.log.truncate(lid, LogOffset(at))?,
                None if deleted.contains_key(&lid) => self.log.truncate(lid, self.log.head(lid))?,
                None => tracing::warn!(
                    collection = %id_string(lid),
                    "the log holds records of a collection that the catalogue does not \
                     know; they are kept (run `indigo repair` to list them)"
                ),
            }
        }
        // A deleted collection is remembered until no log file holds its records.
        for (lid, id) in &deleted {
            if !self.log.holds(*lid) {
                self.sysdb.forget_deleted(id)?;
            }
        }
        Ok(known)
    }

    fn open_collection(&self, id: &str) -> Result<Arc<Open>> {
        if let Some(o) = self.open.read().get(id) {
            return Ok(o.clone());
        }
        let _g = self.opening.lock();
        if let Some(o) = self.open.read().get(id) {
            return Ok(o.clone());
        }
        let info = self.sysdb.get_collection_by_id(id)?;
        let lid = log_id(id)?;
        // Directories made before collections kept their own record get one now.
        catalogue::write_record(&*self.env.fs, &self.collection_dir(id), &info)?;
        let segment = self.load_segment(&info)?;
        let backlog = backlog::Backlog::from_log(&*self.log, lid, segment.applied())?;
        let open = Arc::new(Open {
            id: id.to_string(),
            log_id: lid,
            segment: RwLock::new(Arc::new(segment)),
            dim: AtomicU32::new(info.dimension.unwrap_or(0)),
            tail: Default::default(),
            backlog,
            discovered: Default::default(),
        });
        self.open.write().insert(id.to_string(), open.clone());
        Ok(open)
    }
}

impl Inner {
    /// Opens a collection's segment from its files, reconciling its index with its
    /// store using the log after the checkpoint.
    fn load_segment(&self, info: &CollectionInfo) -> Result<Segment> {
        let id = &info.id;
        let config = CollectionConfig::from_stored(&info.configuration)?;
        let lid = log_id(id)?;
        let durable = self.sysdb.checkpoint(indigo_compactor::CONSUMER, id)?;
        let recs = self.log.read(lid, LogOffset(durable), usize::MAX)?;
        let entries = indigo_compactor::decode_records(&recs)?;
        Ok(Segment::open(
            &self.env,
            &self.collection_dir(id),
            config.index_config(self.options.exact_search),
            info.dimension.map(|d| d as usize),
            durable,
            &entries,
        )?)
    }
}

use rules::{check_collection_metadata, check_collection_name};

/// Metadata of a write: in updates a `None` value removes the key.
pub type MetadataChanges = std::collections::BTreeMap<String, Option<MetaValue>>;

/// What a fork cost (see [`Indigo::fork_collection`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ForkReport {
    /// Bytes of files the fork shares with its source (hard links).
    pub linked_bytes: u64,
    /// Bytes written for the fork (logs copied).
    pub copied_bytes: u64,
    /// Source log records after the fork point, appended to the fork's log.
    pub log_records: u64,
}

/// Records to add, upsert or update: parallel lists, as Chroma's API takes them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub ids: Vec<String>,
    pub embeddings: Option<Vec<Vec<f32>>>,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    /// Metadata per record; in updates a `None` value removes a key.
    pub metadatas: Option<Vec<Option<MetadataChanges>>>,
}

impl Batch {
    pub fn new(ids: Vec<String>, embeddings: Vec<Vec<f32>>) -> Batch {
        Batch {
            ids,
            embeddings: Some(embeddings),
            ..Default::default()
        }
    }

    pub fn documents(mut self, docs: Vec<Option<String>>) -> Batch {
        self.documents = Some(docs);
        self
    }

    /// Metadata as JSON objects (`null` entries: no metadata).
    pub fn metadatas_json(mut self, metas: Vec<Value>) -> Result<Batch> {
        let parsed = metas
            .iter()
            .map(|m| match m {
                Value::Null => Ok(None),
                m => Ok(Some(indigo_types::metadata::metadata_from_json(m, true)?)),
            })
            .collect::<Result<Vec<_>>>()?;
        self.metadatas = Some(parsed);
        Ok(self)
    }

    fn into_ops(self) -> Result<Vec<RecordOp>> {
        let n = self.ids.len();
        let check = |what: &str, len: Option<usize>| match len {
            Some(l) if l != n => Err(Error::InvalidArgument(format!(
                "{what} has {l} entries but there are {n} ids; give one per id"
            ))),
            _ => Ok(()),
        };
        check("embeddings", self.embeddings.as_ref().map(Vec::len))?;
        check("documents", self.documents.as_ref().map(Vec::len))?;
        check("uris", self.uris.as_ref().map(Vec::len))?;
        check("metadatas", self.metadatas.as_ref().map(Vec::len))?;
        let mut embs = self.embeddings.map(|v| v.into_iter());
        let mut docs = self.documents.map(|v| v.into_iter());
        let mut uris = self.uris.map(|v| v.into_iter());
        let mut metas = self.metadatas.map(|v| v.into_iter());
        Ok(self
            .ids
            .into_iter()
            .map(|id| RecordOp {
                id,
                embedding: embs.as_mut().and_then(|e| e.next()).map(Arc::from),
                document: docs.as_mut().and_then(|d| d.next()).flatten(),
                uri: uris.as_mut().and_then(|u| u.next()).flatten(),
                metadata: metas.as_mut().and_then(|m| m.next()).flatten(),
            })
            .collect())
    }
}

/// A `get`: which records, how many, which fields.
#[derive(Debug, Clone)]
pub struct GetRequest {
    pub selection: Selection,
    pub limit: Option<usize>,
    pub offset: usize,
    pub include: Include,
}

impl Default for GetRequest {
    fn default() -> Self {
        GetRequest {
            selection: Selection::default(),
            limit: None,
            offset: 0,
            include: Include::GET_DEFAULT,
        }
    }
}

/// A `query`: nearest neighbours of each embedding among the selected records.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    pub embeddings: Vec<Vec<f32>>,
    pub n_results: usize,
    pub selection: Selection,
    pub include: Include,
}

impl QueryRequest {
    pub fn new(embeddings: Vec<Vec<f32>>, n_results: usize) -> QueryRequest {
        QueryRequest {
            embeddings,
            n_results,
            selection: Selection::default(),
            include: Include::QUERY_DEFAULT,
        }
    }
}

/// A query on a sparse vector key: the records whose sparse vectors under
/// `key` have the largest dot product with `vector` (distance `1 − dot`; with
/// the key's index declared `bm25`, query weights are first scaled by IDF).
#[derive(Debug, Clone)]
pub struct SparseQueryRequest {
    pub key: String,
    pub vector: indigo_types::SparseVector,
    pub n_results: usize,
    pub selection: Selection,
    pub include: Include,
}

/// A handle to one collection.
#[derive(Clone)]
pub struct Collection {
    inner: Arc<Inner>,
    worker: Option<Arc<Worker>>,
    open: Arc<Open>,
    info: CollectionInfo,
}

impl Collection {
    /// The bounds this collection's requests are held to.
    pub fn limits(&self) -> &Limits {
        &self.inner.options.limits
    }

    /// The collection as it was when this handle was made.
    pub fn info(&self) -> &CollectionInfo {
        &self.info
    }
    pub fn id(&self) -> &str {
        &self.info.id
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Adds records; ids that exist are left unchanged.
    pub fn add(&self, batch: Batch) -> Result<()> {
        self.write(WriteKind::Add, batch.into_ops()?)
    }

    /// Adds records, or updates those that exist.
    pub fn upsert(&self, batch: Batch) -> Result<()> {
        self.write(WriteKind::Upsert, batch.into_ops()?)
    }

    /// Changes the given fields of existing records; unknown ids are ignored.
    pub fn update(&self, batch: Batch) -> Result<()> {
        self.write(WriteKind::Update, batch.into_ops()?)
    }

    /// Deletes the records with these ids and/or matching the filters; returns how
    /// many existed.
    pub fn delete(&self, sel: &Selection) -> Result<u64> {
        self.delete_limited(sel, None)
    }

    /// Deletes at most `limit` of the records a filter matches (Chroma's
    /// `delete(where=…, limit=n)`); the count says how many went.
    pub fn delete_limited(&self, sel: &Selection, limit: Option<u32>) -> Result<u64> {
        rules::check_delete(sel, limit, &self.inner.options.limits)?;
        schema::check_filter(self.schema(), sel)?;
        let mut existing = self.view(|v| v.ids(sel))?;
        rules::truncate_to_limit(&mut existing, limit);
        self.write(WriteKind::Delete, rules::delete_ops(sel, &existing))?;
        Ok(existing.len() as u64)
    }

    /// Applies one write request given as records (the server's path: each record
    /// may carry a different set of fields).
    pub fn write(&self, kind: WriteKind, records: Vec<RecordOp>) -> Result<()> {
        self.writable()?;
        if records.is_empty() {
            return Ok(());
        }
        let (entry, dim) = rules::prepare_write(kind, records, &self.inner.options.limits)?;
        if let Some(dim) = dim {
            self.fix_dimension(dim)?;
        }
        self.discover_keys(&entry.records)?;
        let payload = entry.encode();
        let Some(w) = &self.worker else {
            self.inner.log.append(self.open.log_id, &payload)?;
            return Ok(());
        };
        let admitted = self.open.backlog.admit(
            entry.records.len() as u64,
            payload.len() as u64,
            &self.inner.options.backlog,
            || self.open.segment().applied(),
            |at, t| {
                self.writable()?;
                w.notify();
                Ok(self.open.segment().wait_applied_past(at, t))
            },
            || format!("collection {:?} ({})", self.name(), self.id()),
        )?;
        let offset = self.inner.log.append(self.open.log_id, &payload)?;
        admitted.logged(offset.0);
        w.notify();
        Ok(())
    }

    /// Whether the collection exists and its log is being folded.
    fn writable(&self) -> Result<()> {
        self.exists()?;
        if let Some(f) = self
            .inner
            .env
            .health
            .is_failing(indigo_health::COMPACTOR, self.id())
        {
            return Err(Error::Unavailable(format!(
                "collection {:?} ({}) cannot take writes now: its log cannot be folded into \
                 its indexes ({}); Indigo retries in the background, so retry later",
                self.name(),
                self.id(),
                f.error
            )));
        }
        Ok(())
    }

    fn fix_dimension(&self, dim: u32) -> Result<()> {
        let cur = self.open.dim.load(Ordering::Acquire);
        if cur == dim {
            return Ok(());
        }
        if cur != 0 {
            return Err(Error::DimensionMismatch {
                expected: cur,
                got: dim,
            });
        }
        match self.inner.sysdb.set_dimension(&self.open.id, dim) {
            Ok(()) => {
                self.open.dim.store(dim, Ordering::Release);
                let info = self.inner.sysdb.get_collection_by_id(&self.open.id)?;
                catalogue::write_record(
                    &*self.inner.env.fs,
                    &self.inner.collection_dir(&self.open.id),
                    &info,
                )
            }
            Err(SysDbError::InvalidArgument(_)) => {
                let info = self.inner.sysdb.get_collection_by_id(&self.open.id)?;
                let expected = info.dimension.unwrap_or(0);
                self.open.dim.store(expected, Ordering::Release);
                Err(Error::DimensionMismatch { expected, got: dim })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Lists metadata keys written for the first time in the collection's schema
    /// (as Chroma's compactor does), before the write is acknowledged.
    fn discover_keys(&self, records: &[RecordOp]) -> Result<()> {
        let mut keys = schema::new_keys(self.schema(), records);
        keys.retain(|k| !self.open.discovered.lock().contains(k));
        if keys.is_empty() {
            return Ok(());
        }
        if let Some(info) = self.inner.sysdb.discover_keys(&self.open.id, &keys)? {
            catalogue::write_record(
                &*self.inner.env.fs,
                &self.inner.collection_dir(&self.open.id),
                &info,
            )?;
        }
        self.open.discovered.lock().extend(keys);
        Ok(())
    }

    /// A handle outlives its collection: once deleted, it answers NotFound
    /// rather than logging writes nobody will fold.
    fn exists(&self) -> Result<()> {
        if self.open.segment().is_retired() {
            return Err(Error::NotFound(format!(
                "Collection [{}] does not exist: it was deleted",
                self.id()
            )));
        }
        Ok(())
    }

    fn view<T>(&self, f: impl FnOnce(&mut View<'_>) -> indigo_executor::Result<T>) -> Result<T> {
        self.exists()?;
        let seg = self.open.segment();
        let mut v = View::open(&seg, &*self.inner.log, self.open.log_id, &self.open.tail)?;
        Ok(f(&mut v)?)
    }

    pub fn count(&self) -> Result<u64> {
        self.view(|v| v.count())
    }

    /// The stored schema (null for a collection made before Indigo kept them,
    /// whose indexes are all on).
    pub fn schema(&self) -> &Value {
        &self.info.configuration["schema"]
    }

    pub fn get(&self, req: &GetRequest) -> Result<Records> {
        rules::check_ids(&req.selection, &self.inner.options.limits)?;
        schema::check_filter(self.schema(), &req.selection)?;
        self.view(|v| v.get(&req.selection, req.limit, req.offset, req.include))
    }

    pub fn query(&self, req: &QueryRequest) -> Result<Vec<Records>> {
        let dim = self.open.dim.load(Ordering::Acquire);
        schema::check_filter(self.schema(), &req.selection)?;
        if let Some(answer) = rules::check_query(req, &self.inner.options.limits, dim)? {
            return Ok(answer);
        }
        self.view(|v| {
            if let Some(ids) = &req.selection.ids {
                if let Some(id) = v.missing_id(ids)? {
                    return Ok(Err(rules::missing_query_id(id)));
                }
            }
            v.query(&req.embeddings, req.n_results, &req.selection, req.include)
                .map(Ok)
        })?
    }

    /// The records nearest a sparse query; see [`SparseQueryRequest`].
    pub fn query_sparse(&self, req: &SparseQueryRequest) -> Result<Records> {
        schema::check_filter(self.schema(), &req.selection)?;
        let bm25 = rules::check_sparse_query(req, self.schema(), &self.inner.options.limits)?;
        self.view(|v| {
            if let Some(ids) = &req.selection.ids {
                if let Some(id) = v.missing_id(ids)? {
                    return Ok(Err(rules::missing_query_id(id)));
                }
            }
            v.query_sparse(
                &req.key,
                &req.vector,
                bm25,
                req.n_results,
                &req.selection,
                req.include,
            )
            .map(Ok)
        })?
    }

    /// (applied, logged) log entries: how far the compactor has folded this
    /// collection's log into its indexes (ahead of what is durable).
    pub fn fold_progress(&self) -> (u64, u64) {
        (
            self.open.segment().applied(),
            self.inner.log.head(self.open.log_id).0,
        )
    }

    /// (indexed, total) record operations, as Chroma counts indexing progress:
    /// those folded into the current index version, and all logged.
    pub fn indexing_status(&self) -> Result<(u64, u64)> {
        let sysdb = &self.inner.sysdb;
        let mut latest = sysdb.latest_index_version(&self.open.id)?;
        loop {
            let (from, indexed) = latest.as_ref().map_or((0, 0), |v| (v.log_offset, v.ops()));
            let head = self.inner.log.head(self.open.log_id).0;
            let pending =
                indigo_segment::count_ops(&*self.inner.log, self.open.log_id, from, head)?;
            // A version committed meanwhile may have let the log drop entries
            // counted from: count again from it.
            let now = sysdb.latest_index_version(&self.open.id)?;
            if now.as_ref().map(|v| v.version) == latest.as_ref().map(|v| v.version) {
                return Ok((indexed, indexed + pending));
            }
            latest = now;
        }
    }
}

/// Entry points for the fuzz targets (`fuzz/`): the data directory's own small
/// formats, decoded from untrusted bytes.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    /// A collection's `COLLECTION` record; what decodes re-encodes identically.
    pub fn collection_record(bytes: &[u8]) {
        if let Ok(c) = crate::catalogue::decode_record(bytes) {
            let again = crate::catalogue::encode_record(&c);
            assert_eq!(crate::catalogue::decode_record(&again).as_ref(), Ok(&c));
        }
    }

    /// A backup's `BACKUP` manifest.
    pub fn backup_manifest(bytes: &[u8]) {
        let _ = crate::backup::decode_manifest_for_fuzzing(bytes);
    }
}
