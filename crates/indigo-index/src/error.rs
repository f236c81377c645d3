use std::path::PathBuf;

/// What can go wrong in the vector index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("vector has dimension {got}, the index has {expected}")]
    Dimension { expected: usize, got: usize },
    #[error("vector contains NaN or infinity")]
    NotFinite,
    #[error("index I/O error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file's checksum or structure is wrong; never skipped silently.
    #[error("corrupt index file {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("index parameters differ from the ones on disk: {0}")]
    ParamsMismatch(String),
    /// An earlier commit-log write or fsync failed; the in-memory graph may hold
    /// changes the log lacks. Reopen the index to recover from disk.
    #[error(
        "index commit log refuses writes after an earlier I/O failure ({0}); reopen the index"
    )]
    LogFailed(String),
}

impl IndexError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl Fn(std::io::Error) -> Self {
        let path = path.into();
        move |source| IndexError::Io {
            op,
            path: path.clone(),
            source,
        }
    }
    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        IndexError::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;
