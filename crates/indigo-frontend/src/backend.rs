//! What the gateway serves from: the local database (`indigo run`, and the
//! embedded core) or a cluster of processes (`indigo serve`, the distributed
//! mode). Handlers see one interface; the variants differ in where the work runs,
//! never in what it means.

use std::path::Path;
use std::sync::Arc;

use indigo::{
    BackupReport, CollectionInfo, Database, Failure, GetRequest, Indigo, Limits, QueryRequest,
    RecordOp, Records, Result, Selection, WriteKind,
};
use serde_json::Value;

use crate::cluster::{ClusterDb, RemoteCollection};

/// The database the gateway serves.
#[derive(Clone)]
pub enum Db {
    Local(Arc<Indigo>),
    Cluster(Arc<ClusterDb>),
}

/// One collection of it.
#[derive(Clone)]
pub enum Coll {
    Local(indigo::Collection),
    Cluster(RemoteCollection),
}

macro_rules! both {
    ($self:ident, $v:ident => $e:expr) => {
        match $self {
            Db::Local($v) => $e,
            Db::Cluster($v) => $e,
        }
    };
}

macro_rules! coll {
    ($self:ident, $v:ident => $e:expr) => {
        match $self {
            Coll::Local($v) => $e,
            Coll::Cluster($v) => $e,
        }
    };
}

impl Db {
    pub fn failures(&self) -> Vec<Failure> {
        both!(self, d => d.failures())
    }
    pub fn background_errors_total(&self) -> Vec<(&'static str, u64)> {
        both!(self, d => d.background_errors_total())
    }
    pub fn gauges(&self) -> Vec<(String, f64)> {
        both!(self, d => d.gauges())
    }
    pub fn reset(&self) -> Result<()> {
        both!(self, d => d.reset())
    }
    pub fn backup(&self, to: &Path) -> Result<BackupReport> {
        match self {
            Db::Local(d) => d.backup(to),
            Db::Cluster(_) => Err(indigo::Error::InvalidArgument(
                "a cluster keeps its data in object storage and PostgreSQL: back those up \
                 (bucket versioning or replication, pg_dump); see docs/deployment.md"
                    .into(),
            )),
        }
    }
    pub fn create_tenant(&self, name: &str) -> Result<()> {
        both!(self, d => d.create_tenant(name))
    }
    pub fn get_tenant(&self, name: &str) -> Result<()> {
        both!(self, d => d.get_tenant(name))
    }
    pub fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        both!(self, d => d.create_database(tenant, name))
    }
    pub fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        both!(self, d => d.get_database(tenant, name))
    }
    pub fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        both!(self, d => d.list_databases(tenant, limit, offset))
    }
    pub fn delete_database(&self, tenant: &str, name: &str) -> Result<()> {
        both!(self, d => d.delete_database(tenant, name))
    }
    pub fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<CollectionInfo>> {
        both!(self, d => d.list_collections(tenant, database, limit, offset))
    }
    pub fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        both!(self, d => d.count_collections(tenant, database))
    }
    pub fn create_collection(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
        metadata: Option<Value>,
        configuration: Option<Value>,
        get_or_create: bool,
    ) -> Result<Coll> {
        match self {
            Db::Local(d) if get_or_create => d
                .get_or_create_collection(tenant, database, name, metadata, configuration)
                .map(Coll::Local),
            Db::Local(d) => d
                .create_collection(tenant, database, name, metadata, configuration)
                .map(Coll::Local),
            Db::Cluster(d) => d
                .create_collection(
                    tenant,
                    database,
                    name,
                    metadata,
                    configuration,
                    get_or_create,
                )
                .map(Coll::Cluster),
        }
    }
    pub fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Coll> {
        match self {
            Db::Local(d) => d.get_collection(tenant, database, name).map(Coll::Local),
            Db::Cluster(d) => d.get_collection(tenant, database, name).map(Coll::Cluster),
        }
    }
    pub fn get_collection_by_id(&self, id: &str) -> Result<Coll> {
        match self {
            Db::Local(d) => d.get_collection_by_id(id).map(Coll::Local),
            Db::Cluster(d) => d.get_collection_by_id(id).map(Coll::Cluster),
        }
    }
    pub fn modify_collection(
        &self,
        id: &str,
        new_name: Option<String>,
        new_metadata: Option<Value>,
        new_configuration: Option<Value>,
    ) -> Result<CollectionInfo> {
        both!(self, d => d.modify_collection(id, new_name, new_metadata, new_configuration))
    }
    pub fn delete_collection(&self, tenant: &str, database: &str, name: &str) -> Result<()> {
        both!(self, d => d.delete_collection(tenant, database, name))
    }
    /// A copy-on-write fork of collection `id` named `new_name`; `None` where
    /// forks are not served (a cluster frontend built without a log for them).
    pub fn fork_collection(&self, id: &str, new_name: &str) -> Option<Result<CollectionInfo>> {
        match self {
            Db::Local(d) => Some(d.fork_collection(id, new_name).map(|(c, _)| c)),
            Db::Cluster(d) => d.fork_collection(id, new_name),
        }
    }
    pub fn fork_count(&self, id: &str) -> Result<u64> {
        match self {
            Db::Local(d) => d.fork_count(id),
            Db::Cluster(d) => d.fork_count(id),
        }
    }
}

impl Coll {
    pub fn info(&self) -> &CollectionInfo {
        coll!(self, c => c.info())
    }
    pub fn id(&self) -> &str {
        &self.info().id
    }
    pub fn name(&self) -> &str {
        &self.info().name
    }
    pub fn limits(&self) -> &Limits {
        coll!(self, c => c.limits())
    }
    pub fn count(&self) -> Result<u64> {
        coll!(self, c => c.count())
    }
    pub fn write(&self, kind: WriteKind, records: Vec<RecordOp>) -> Result<()> {
        coll!(self, c => c.write(kind, records))
    }
    pub fn delete(&self, sel: &Selection, limit: Option<u32>) -> Result<u64> {
        match self {
            Coll::Local(c) => c.delete_limited(sel, limit),
            Coll::Cluster(c) => {
                self.check_filter(sel)?;
                c.delete(sel, limit)
            }
        }
    }
    pub fn get(&self, req: &GetRequest) -> Result<Records> {
        match self {
            Coll::Local(c) => c.get(req),
            Coll::Cluster(c) => {
                self.check_filter(&req.selection)?;
                c.get(req)
            }
        }
    }
    pub fn query(&self, req: &QueryRequest) -> Result<Vec<Records>> {
        match self {
            Coll::Local(c) => c.query(req),
            Coll::Cluster(c) => {
                self.check_filter(&req.selection)?;
                c.query(req)
            }
        }
    }
    pub fn query_sparse(&self, req: &indigo::SparseQueryRequest) -> Result<Records> {
        match self {
            Coll::Local(c) => c.query_sparse(req),
            Coll::Cluster(c) => {
                self.check_filter(&req.selection)?;
                c.query_sparse(req)
            }
        }
    }
    /// A cluster's frontend refuses filters on indexes the schema switched off
    /// before it routes (the core does so on one node).
    fn check_filter(&self, sel: &Selection) -> Result<()> {
        indigo::schema::check_filter(&self.info().configuration["schema"], sel)
    }
    /// (applied, logged): how far indexing has come.
    pub fn indexing_status(&self) -> Result<(u64, u64)> {
        match self {
            Coll::Local(c) => c.indexing_status(),
            Coll::Cluster(c) => c.indexing_status(),
        }
    }
}
