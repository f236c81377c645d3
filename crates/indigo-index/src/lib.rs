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
pub mod sparse;

mod error;
mod persist;
mod topk;

pub use distance::Space;
pub use error::{IndexError, Result};
pub use flat::FlatIndex;
pub use hnsw::{Hnsw, HnswParams, HnswStats};
pub use roaring::RoaringBitmap;
pub use sparse::{SparseChange, SparseHit, SparseIndex};

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

/// Entry points for the fuzz targets (`fuzz/`): an index directory holding
/// untrusted bytes is opened as recovery opens it; a load must fail with an error
/// or give an index that searches, repairs, inserts and condenses without a panic
/// or an out-of-bounds read.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use std::path::Path;
    use std::sync::Arc;

    use indigo_fs::{FaultFs, FileSystem};

    use crate::{Hnsw, HnswParams, RoaringBitmap, Space};

    fn open_with(name: &str, bytes: &[u8]) {
        let fs = Arc::new(FaultFs::new());
        let dir = Path::new("/idx");
        let f = fs.create(&dir.join(name)).unwrap();
        f.append(bytes).unwrap();
        // Take dimension and space from the header when they are plausible, so
        // the fuzzer reaches the records instead of a parameter mismatch.
        let dim = bytes
            .get(12..16)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .filter(|d| (1..=64).contains(d))
            .unwrap_or(4);
        let space = bytes
            .get(16)
            .and_then(|&s| Space::from_u8(s))
            .unwrap_or(Space::L2);
        let mut p = HnswParams::new(space, dim);
        p.max_neighbors = 4;
        p.ef_construction = 8;
        let Ok(idx) = Hnsw::open_with_fs(fs, dir, p) else {
            return;
        };
        let q: Vec<f32> = (0..dim).map(|i| i as f32 * 0.25 - 0.5).collect();
        let _ = idx.search(&q, 5, None);
        let allow: RoaringBitmap = (0..50).collect();
        idx.set_flat_cutoff(0);
        let _ = idx.search(&q, 5, Some(&allow));
        let _ = idx.repair();
        let _ = idx.insert(1_000_000, &q);
        let _ = idx.search(&q, 5, None);
        let _ = idx.condense();
    }

    /// A commit log (`log-0000000000.hnsw`).
    pub fn commit_log(bytes: &[u8]) {
        open_with("log-0000000000.hnsw", bytes);
    }

    /// A snapshot (`snapshot-0000000001.hnsw`).
    pub fn snapshot(bytes: &[u8]) {
        open_with("snapshot-0000000001.hnsw", bytes);
    }
}
