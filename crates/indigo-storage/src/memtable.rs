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
            (Entry::Set { mut adds, mut dels }, Entry::Set { adds: a2, dels: d2 }) => {
                // In place: a posting list takes one change per batch, and a
                // fresh union each time would copy it whole.
                if !d2.is_empty() {
                    adds -= &d2;
                    dels |= d2;
                }
                adds |= a2;
                if !dels.is_empty() {
                    dels -= &adds;
                }
                Entry::Set { adds, dels }
            }
            (_, newer) => newer,
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

    pub(crate) fn approx_size(&self) -> usize {
        match self {
            Entry::Value(v) => v.len(),
            Entry::Tombstone => 0,
            Entry::Set { adds, dels } => 8 * (adds.len() + dels.len()) as usize,
        }
    }
}

/// A borrowed view of an entry, so segments can be written straight from a
/// memtable's arena or a merge's owned entries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EntryRef<'a> {
    Value(&'a [u8]),
    Tombstone,
    Set {
        adds: &'a RoaringTreemap,
        dels: &'a RoaringTreemap,
    },
}

/// Anything a segment can be written from.
pub(crate) trait AsEntryRef {
    fn entry_ref(&self) -> EntryRef<'_>;
}

impl AsEntryRef for Entry {
    fn entry_ref(&self) -> EntryRef<'_> {
        match self {
            Entry::Value(v) => EntryRef::Value(v),
            Entry::Tombstone => EntryRef::Tombstone,
            Entry::Set { adds, dels } => EntryRef::Set { adds, dels },
        }
    }
}

impl<T: AsEntryRef + ?Sized> AsEntryRef for &T {
    fn entry_ref(&self) -> EntryRef<'_> {
        (**self).entry_ref()
    }
}

impl<'a> EntryRef<'a> {
    /// This entry as seen from the bottom of the tree (see [`Entry::at_bottom`]);
    /// `empty` stands in for a set's dropped removals.
    pub fn at_bottom(self, empty: &'a RoaringTreemap) -> Option<EntryRef<'a>> {
        match self {
            EntryRef::Tombstone => None,
            EntryRef::Set { adds, .. } if adds.is_empty() => None,
            EntryRef::Set { adds, .. } => Some(EntryRef::Set { adds, dels: empty }),
            v => Some(v),
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
    /// `ids` ascending, without repeats, never empty.
    SetAdd {
        bucket: u32,
        key: Vec<u8>,
        ids: Vec<u64>,
    },
    SetRemove {
        bucket: u32,
        key: Vec<u8>,
        ids: Vec<u64>,
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

/// Memtable values are copied into large chunks instead of one allocation each:
/// inserts are cheaper, and freeing a flushed memtable is a few dozen frees rather
/// than a million (which, done by the flush thread, contends with the writer inside
/// allocators such as glibc's).
#[derive(Default)]
struct Arena {
    chunks: Vec<Box<[u8]>>,
    used: usize,
}

const ARENA_CHUNK: usize = 1 << 20;

impl Arena {
    /// Copies `data` into the arena. The slice is valid while the arena lives:
    /// chunks are boxed, so they never move, and are never freed before the arena.
    fn alloc(&mut self, data: &[u8]) -> &'static [u8] {
        if data.is_empty() {
            return &[];
        }
        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() - self.used < data.len())
        {
            self.chunks
                .push(vec![0u8; data.len().max(ARENA_CHUNK)].into_boxed_slice());
            self.used = 0;
        }
        let chunk = self.chunks.last_mut().expect("just ensured");
        let dst = &mut chunk[self.used..self.used + data.len()];
        dst.copy_from_slice(data);
        self.used += data.len();
        // SAFETY: the bytes live in a boxed chunk that is neither moved nor freed
        // until the arena drops; `MemInner` drops its maps (the only holders of these
        // slices) before its arena, and hands out only copies or borrows tied to
        // `&self`.
        unsafe { std::slice::from_raw_parts(dst.as_ptr(), dst.len()) }
    }
}

/// A memtable entry: values point into the arena; tombstones and sets are owned.
/// Opaque outside this module, so an arena slice is only ever seen through
/// [`AsEntryRef`], borrowed for no longer than the entry.
#[derive(Debug)]
pub(crate) struct MemEntry(MemValue);

#[derive(Debug)]
enum MemValue {
    Value(&'static [u8]),
    Other(Entry),
}

impl AsEntryRef for MemEntry {
    fn entry_ref(&self) -> EntryRef<'_> {
        match &self.0 {
            MemValue::Value(v) => EntryRef::Value(v),
            MemValue::Other(e) => e.entry_ref(),
        }
    }
}

impl MemEntry {
    fn to_entry(&self) -> Entry {
        match &self.0 {
            MemValue::Value(v) => Entry::Value(v.to_vec()),
            MemValue::Other(e) => e.clone(),
        }
    }
}

/// Declaration order matters: the maps (which borrow from the arena) drop first.
#[derive(Default)]
struct MemInner {
    buckets: HashMap<u32, BTreeMap<&'static [u8], MemEntry>>,
    bytes: usize,
    arena: Arena,
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
            let (key, new) = match op {
                Op::Put { key, value, .. } => (key, MemValue::Value(inner.arena.alloc(value))),
                Op::Delete { key, .. } => (key, MemValue::Other(Entry::Tombstone)),
                Op::SetAdd { key, ids, .. } | Op::SetRemove { key, ids, .. } => {
                    let set = RoaringTreemap::from_sorted_iter(ids.iter().copied())
                        .unwrap_or_else(|_| ids.iter().copied().collect());
                    let e = if matches!(op, Op::SetAdd { .. }) {
                        Entry::Set {
                            adds: set,
                            dels: RoaringTreemap::new(),
                        }
                    } else {
                        Entry::Set {
                            adds: RoaringTreemap::new(),
                            dels: set,
                        }
                    };
                    (key, MemValue::Other(e))
                }
            };
            let add = match &new {
                MemValue::Value(v) => v.len(),
                MemValue::Other(e) => e.approx_size(),
            };
            let map = inner.buckets.entry(op.bucket()).or_default();
            match map.get_mut(key.as_slice()) {
                // Overestimates for overwrites; the flush trigger only needs a bound.
                Some(old) => {
                    let prev = std::mem::replace(&mut old.0, MemValue::Other(Entry::Tombstone));
                    old.0 = match (prev, new) {
                        (MemValue::Other(o @ Entry::Set { .. }), MemValue::Other(n)) => {
                            MemValue::Other(o.compose(n))
                        }
                        (_, n) => n,
                    };
                    inner.bytes += add;
                }
                None => {
                    inner.bytes += key.len() + add + ENTRY_OVERHEAD;
                    let k = inner.arena.alloc(key);
                    map.insert(k, MemEntry(new));
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
        self.inner
            .read()
            .buckets
            .get(&bucket)?
            .get(key)
            .map(MemEntry::to_entry)
    }

    pub fn range(&self, bucket: u32, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<(Vec<u8>, Entry)> {
        let g = self.inner.read();
        match g.buckets.get(&bucket) {
            Some(m) => m
                .range::<[u8], _>((lo, hi))
                .map(|(k, v)| (k.to_vec(), v.to_entry()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Calls `f` with each non-empty bucket's sorted entries, in bucket-id order,
    /// without copying them; used by flush once the table is frozen.
    pub fn for_each_bucket<E>(
        &self,
        mut f: impl FnMut(u32, &BTreeMap<&[u8], MemEntry>) -> Result<(), E>,
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
