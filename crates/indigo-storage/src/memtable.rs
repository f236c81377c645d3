//! Entries (what one layer knows about a key) and the sorted in-memory table.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use parking_lot::RwLock;
use roaring::RoaringTreemap;

/// What one layer (memtable or segment) records for a key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    Value(Vec<u8>),
    Tombstone,
    /// A change to a set: applied to the older state `S` it gives `(S - dels) ∪ adds`.
    Set {
        adds: RoaringTreemap,
        dels: RoaringTreemap,
    },
}

impl Entry {
    /// Folds a newer layer's entry over this (older) one.
    pub fn compose(self, newer: Entry) -> Entry {
        match (self, newer) {
            (Entry::Set { adds: a1, dels: d1 }, Entry::Set { adds: a2, dels: d2 }) => {
                let adds = (a1 - &d2) | &a2;
                let dels = (d1 | d2) - &adds;
                Entry::Set { adds, dels }
            }
            (_, newer) => newer,
        }
    }

    /// Borrowing form of [`Entry::at_bottom`]; copies only a set's additions.
    pub fn at_bottom_ref(&self) -> Option<std::borrow::Cow<'_, Entry>> {
        use std::borrow::Cow;
        match self {
            Entry::Tombstone => None,
            Entry::Set { adds, .. } if adds.is_empty() => None,
            Entry::Set { dels, .. } if dels.is_empty() => Some(Cow::Borrowed(self)),
            Entry::Set { adds, .. } => Some(Cow::Owned(Entry::Set {
                adds: adds.clone(),
                dels: RoaringTreemap::new(),
            })),
            Entry::Value(_) => Some(Cow::Borrowed(self)),
        }
    }

    /// This entry as seen from the bottom of the tree, where nothing older exists:
    /// `None` if nothing remains (a tombstone, or an empty set).
    pub fn at_bottom(self) -> Option<Entry> {
        match self {
            Entry::Tombstone => None,
            Entry::Set { adds, .. } if adds.is_empty() => None,
            Entry::Set { adds, .. } => Some(Entry::Set {
                adds,
                dels: RoaringTreemap::new(),
            }),
            v => Some(v),
        }
    }

    fn approx_size(&self) -> usize {
        match self {
            Entry::Value(v) => v.len(),
            Entry::Tombstone => 0,
            Entry::Set { adds, dels } => 8 * (adds.len() + dels.len()) as usize,
        }
    }
}

/// One logical change, as carried by a [`crate::WriteBatch`] and the WAL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Put {
        bucket: u32,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        bucket: u32,
        key: Vec<u8>,
    },
    SetAdd {
        bucket: u32,
        key: Vec<u8>,
        id: u64,
    },
    SetRemove {
        bucket: u32,
        key: Vec<u8>,
        id: u64,
    },
}

impl Op {
    pub fn bucket(&self) -> u32 {
        match self {
            Op::Put { bucket, .. }
            | Op::Delete { bucket, .. }
            | Op::SetAdd { bucket, .. }
            | Op::SetRemove { bucket, .. } => *bucket,
        }
    }
}

#[derive(Default)]
struct MemInner {
    buckets: HashMap<u32, BTreeMap<Vec<u8>, Entry>>,
    bytes: usize,
}

/// A sorted table of recent writes, backed by one WAL file (`wal_no`).
pub(crate) struct MemTable {
    pub wal_no: u64,
    inner: RwLock<MemInner>,
}

const ENTRY_OVERHEAD: usize = 48;

impl MemTable {
    pub fn new(wal_no: u64) -> Self {
        MemTable {
            wal_no,
            inner: RwLock::new(MemInner::default()),
        }
    }

    /// Applies a whole batch under one lock, so readers see all of it or none.
    pub fn apply(&self, ops: &[Op]) {
        let mut g = self.inner.write();
        let inner = &mut *g;
        for op in ops {
            let map = inner.buckets.entry(op.bucket()).or_default();
            let (key, e) = match op {
                Op::Put { key, value, .. } => (key, Entry::Value(value.clone())),
                Op::Delete { key, .. } => (key, Entry::Tombstone),
                Op::SetAdd { key, id, .. } => {
                    let mut adds = RoaringTreemap::new();
                    adds.insert(*id);
                    (
                        key,
                        Entry::Set {
                            adds,
                            dels: RoaringTreemap::new(),
                        },
                    )
                }
                Op::SetRemove { key, id, .. } => {
                    let mut dels = RoaringTreemap::new();
                    dels.insert(*id);
                    (
                        key,
                        Entry::Set {
                            adds: RoaringTreemap::new(),
                            dels,
                        },
                    )
                }
            };
            let add = e.approx_size();
            match map.get_mut(key.as_slice()) {
                Some(old) => {
                    // Overestimates for overwrites; the flush trigger only needs a bound.
                    let prev = std::mem::replace(old, Entry::Tombstone);
                    *old = prev.compose(e);
                    inner.bytes += add;
                }
                None => {
                    inner.bytes += key.len() + add + ENTRY_OVERHEAD;
                    map.insert(key.clone(), e);
                }
            }
        }
    }

    pub fn approx_bytes(&self) -> usize {
        self.inner.read().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.inner.read().buckets.values().all(|m| m.is_empty())
    }

    pub fn get(&self, bucket: u32, key: &[u8]) -> Option<Entry> {
        self.inner.read().buckets.get(&bucket)?.get(key).cloned()
    }

    pub fn range(&self, bucket: u32, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<(Vec<u8>, Entry)> {
        let g = self.inner.read();
        match g.buckets.get(&bucket) {
            Some(m) => m
                .range::<[u8], _>((lo, hi))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Calls `f` with each non-empty bucket's sorted entries, in bucket-id order,
    /// without copying them; used by flush once the table is frozen.
    pub fn for_each_bucket<E>(
        &self,
        mut f: impl FnMut(u32, &BTreeMap<Vec<u8>, Entry>) -> Result<(), E>,
    ) -> Result<(), E> {
        let g = self.inner.read();
        let mut ids: Vec<u32> = g
            .buckets
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            f(id, &g.buckets[&id])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(adds: &[u64], dels: &[u64]) -> Entry {
        Entry::Set {
            adds: adds.iter().copied().collect(),
            dels: dels.iter().copied().collect(),
        }
    }

    fn apply(base: &[u64], e: &Entry) -> Vec<u64> {
        let Entry::Set { adds, dels } = e else {
            panic!()
        };
        let s: RoaringTreemap = base.iter().copied().collect();
        ((s - dels) | adds).iter().collect()
    }

    #[test]
    fn composing_set_deltas_equals_applying_them_in_order() {
        let older = set(&[1, 2, 3], &[4, 5]);
        let newer = set(&[4, 9], &[2, 3]);
        let base = [2, 3, 4, 5, 6];
        let step = apply(&apply(&base, &older), &newer);
        assert_eq!(apply(&base, &older.compose(newer)), step);
    }

    #[test]
    fn newer_value_replaces_older() {
        let e = Entry::Value(b"a".to_vec()).compose(Entry::Tombstone);
        assert_eq!(e, Entry::Tombstone);
        assert_eq!(e.at_bottom(), None);
    }
}
