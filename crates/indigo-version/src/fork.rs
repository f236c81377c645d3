//! A fork in the distributed mode: copy-on-write, as on one node.
//!
//! The fork shares the source's current version (its row points at the same
//! manifest, whose immutable files the fork's later versions keep naming until
//! they rewrite them), and gets its own log holding a copy of the source's
//! records not yet folded into that version, numbered as in the source so
//! the fork's reads and compactions continue from the version's offset.
//!
//! Steps, each safe to stop after: (1) the intent is recorded in the catalogue;
//! (2) the source's version is read, then its log up to the head now (every
//! write acknowledged before the fork began); (3) the fork's log is seeded with
//! that tail; (4) one catalogue transaction consumes the intent, checks the
//! source and its version are still there (held until commit), and creates the
//! fork. An intent left by a crash is given up by garbage collection (which
//! removes its log); one given up cannot commit.

use std::sync::Arc;

use indigo_log::{CollectionId, Log, LogError, LogOffset};
use indigo_objlog::ObjectLog;
use indigo_sysdb::{Collection, ForkCommit, SysDb, SysDbError};

/// Why a fork did not happen (nothing of it stays: its intent is given up).
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    #[error(transparent)]
    SysDb(#[from] SysDbError),
    #[error("log: {0}")]
    Log(#[from] LogError),
    /// The source's unfolded tail is larger than a fork copies.
    #[error("{0}")]
    TailTooLarge(String),
}

/// A fork made.
#[derive(Debug, Clone)]
pub struct Forked {
    pub collection: Collection,
    /// Records of the source's log copied into the fork's (not yet folded
    /// into the shared version), and their bytes.
    pub log_records: usize,
    pub log_bytes: u64,
}

fn log_id(id: &str) -> Result<CollectionId, ForkError> {
    CollectionId::parse_uuid(id).ok_or_else(|| {
        ForkError::SysDb(SysDbError::InvalidArgument(format!(
            "{id:?} is not a collection id"
        )))
    })
}

/// Forks collection `source` into a new collection `name` in the same database.
/// `max_tail_bytes` bounds the source's unfolded log a fork copies (past it the
/// compactor is behind: the answer says to retry).
pub fn fork_collection(
    sysdb: &dyn SysDb,
    log: &ObjectLog,
    source: &str,
    name: &str,
    max_tail_bytes: u64,
) -> Result<Forked, ForkError> {
    let src = sysdb.get_collection_by_id(source)?;
    if sysdb
        .get_collection(&src.tenant, &src.database, name)
        .is_ok()
    {
        return Err(
            SysDbError::AlreadyExists(format!("Collection [{name}] already exists")).into(),
        );
    }
    let id = uuid::Uuid::new_v4().to_string();
    let lid = log_id(&id)?;
    let src_lid = log_id(source)?;
    sysdb.begin_fork(&id, source)?;
    let made = (|| {
        // The version first, then the head: the log after the version's offset
        // is still there (truncated records stay readable for a grace period).
        let version = sysdb.latest_index_version(source)?;
        let after = version.as_ref().map_or(0, |v| v.log_offset);
        let head = log.refresh(src_lid)?;
        let mut payloads: Vec<Arc<[u8]>> = Vec::new();
        let mut bytes = 0u64;
        let mut at = LogOffset(after);
        while at < head {
            let recs = log.read(src_lid, at, 256)?;
            if recs.is_empty() {
                break;
            }
            for r in recs.iter().filter(|r| r.offset <= head) {
                bytes += r.payload.len() as u64;
                payloads.push(r.payload.clone());
                at = r.offset;
            }
            if bytes > max_tail_bytes {
                return Err(ForkError::TailTooLarge(format!(
                    "collection {source} has more than {max_tail_bytes} bytes of writes not \
                     yet indexed; fork it again once its compactor has caught up"
                )));
            }
            if recs.last().is_some_and(|r| r.offset >= head) {
                break;
            }
        }
        log.seed(lid, LogOffset(after), &payloads)?;
        let collection = sysdb.commit_fork(&ForkCommit {
            id: &id,
            source,
            name,
            version: version.as_ref(),
        })?;
        Ok(Forked {
            collection,
            log_records: payloads.len(),
            log_bytes: bytes,
        })
    })();
    if made.is_err() {
        // Given up now (or, if this fails, by garbage collection later); if the
        // commit did happen after all, the intent is gone and this does nothing.
        if let Err(e) = sysdb.abandon_forks(Some(&id), u64::MAX) {
            tracing::warn!("fork {id} of {source} failed and could not be given up now ({e}); garbage collection gives it up later");
        }
    }
    made
}
