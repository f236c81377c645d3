//! Indigo's data model and filter language, shared by every component.
//!
//! Invariant: this crate does no I/O and knows nothing about storage or indexes;
//! it defines values, parses requests into typed form (rejecting bad input with a
//! message a client can act on) and gives the reference meaning of every filter.

pub mod filter;
pub mod limits;
pub mod metadata;
pub mod record;

pub use filter::{DocFilter, FieldOp, Where};
pub use limits::{FilterLimits, Limits};
pub use metadata::{MetaValue, Metadata, Scalar, SparseVector};
pub use record::{Record, RecordOp, Resolved, Resolver, WriteEntry, WriteKind};

/// A request could not be understood. The message is shown to the client as
/// Chroma's `InvalidArgumentError`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArgument(pub String);

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T, InvalidArgument> {
    Err(InvalidArgument(msg.into()))
}
