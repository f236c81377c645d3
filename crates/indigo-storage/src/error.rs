use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An operating-system I/O call failed (ENOSPC, EIO, ...). `op` says which.
    #[error("storage I/O error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file's checksum or structure is wrong. Never skipped silently: restore the
    /// file from a backup or remove the data directory to start over.
    #[error("corrupt file {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// A previous write or fsync failed, so what is in memory may not match the disk.
    /// The store refuses further writes; reopen it to recover from the log.
    #[error("store is read-only after an earlier I/O failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// The bucket exists with another strategy.
    #[error("bucket {name:?} exists with strategy {existing:?}, not {requested:?}")]
    StrategyMismatch {
        name: String,
        existing: crate::Strategy,
        requested: crate::Strategy,
    },
    /// The operation does not fit the bucket's strategy (e.g. a set add on a replace bucket).
    #[error("operation not valid on bucket {name:?} with strategy {strategy:?}")]
    WrongStrategy {
        name: String,
        strategy: crate::Strategy,
    },
    #[error("unknown bucket {0:?}")]
    UnknownBucket(String),
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StorageError::Io { op, path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        StorageError::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// The OS error kind, when this is an I/O error (e.g. `StorageFull` for ENOSPC).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StorageError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
