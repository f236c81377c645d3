//! Indigo's vector index: distances with Chroma's definitions, an exact flat index,
//! and a concurrent HNSW graph persisted by an append-only commit log that is
//! condensed into snapshots in the background.
//!
//! Invariants:
//! - Every change to a persistent graph is appended to the commit log, in the
//!   order it was made to each node, before the change is visible to `sync`.
//! - Loading = newest valid snapshot + replay of later logs; the result equals the
//!   graph built by the surviving prefix of logged operations.
//! - A filtered search returns min(k, matching live vectors) results.

pub mod distance;
pub mod flat;
pub mod hnsw;

mod error;
mod persist;
mod topk;

pub use distance::Space;
pub use error::{IndexError, Result};
pub use flat::FlatIndex;
pub use hnsw::{Hnsw, HnswParams, HnswStats};
pub use roaring::RoaringBitmap;

/// One search result: the caller's label and its distance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub label: u32,
    pub distance: f32,
}

pub(crate) fn check_vector(dim: usize, v: &[f32]) -> Result<()> {
    if v.len() != dim {
        return Err(IndexError::Dimension {
            expected: dim,
            got: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::NotFinite);
    }
    Ok(())
}

#[cfg(test)]
mod crash_tests;
