//! A sparse inverted index: per dimension, the (label, weight) postings sorted by
//! label, in blocks of [`BLOCK`] postings that each keep their largest and
//! smallest weight. Top-k by dot product runs Block-Max MaxScore
//! (document-at-a-time): lists whose upper bounds together cannot lift a record
//! above the k-th score so far are never walked, only probed for records the
//! other lists found, and a probe is skipped when the probed blocks' maxima
//! cannot lift the record either. [`SparseIndex::search_exhaustive`] scores every
//! posting (the reference, and the baseline the benchmark compares against).
//!
//! The index is in memory; its owner keeps it in step with durable postings (the
//! segment's store) and rebuilds it from them on load.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Postings per block: each block keeps its maximum and minimum weight.
pub const BLOCK: usize = 128;

/// One dimension's postings.
#[derive(Debug, Default, Clone)]
pub struct Postings {
    labels: Vec<u32>,
    weights: Vec<f32>,
    block_max: Vec<f32>,
    block_min: Vec<f32>,
    max: f32,
    min: f32,
}

impl Postings {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Recomputes the block bounds from block `from` on.
    fn refresh(&mut self, from: usize) {
        let blocks = self.labels.len().div_ceil(BLOCK);
        self.block_max.truncate(from);
        self.block_min.truncate(from);
        for b in from..blocks {
            let w = &self.weights[b * BLOCK..((b + 1) * BLOCK).min(self.weights.len())];
            self.block_max
                .push(w.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            self.block_min
                .push(w.iter().copied().fold(f32::INFINITY, f32::min));
        }
        self.max = self
            .block_max
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        self.min = self.block_min.iter().copied().fold(f32::INFINITY, f32::min);
    }

    /// Applies `removed` labels and `set` (label, weight) pairs, both sorted by
    /// label; a label in both ends up set.
    fn change(&mut self, removed: &[u32], set: &[(u32, f32)]) {
        let appends_only = removed.is_empty()
            && set
                .first()
                .is_none_or(|s| self.labels.last().is_none_or(|&l| s.0 > l));
        let first_block = if appends_only {
            let from = self.labels.len() / BLOCK;
            for &(l, w) in set {
                self.labels.push(l);
                self.weights.push(w);
            }
            from
        } else {
            let first = removed
                .first()
                .copied()
                .into_iter()
                .chain(set.first().map(|s| s.0))
                .min()
                .unwrap_or(u32::MAX);
            let start = self.labels.partition_point(|&l| l < first);
            let mut labels = Vec::with_capacity(self.labels.len() - start + set.len());
            let mut weights = Vec::with_capacity(labels.capacity());
            let (mut r, mut s) = (0, 0);
            for i in start..self.labels.len() {
                let l = self.labels[i];
                while s < set.len() && set[s].0 < l {
                    labels.push(set[s].0);
                    weights.push(set[s].1);
                    s += 1;
                }
                if s < set.len() && set[s].0 == l {
                    labels.push(l);
                    weights.push(set[s].1);
                    s += 1;
                    continue;
                }
                while r < removed.len() && removed[r] < l {
                    r += 1;
                }
                if r < removed.len() && removed[r] == l {
                    continue;
                }
                labels.push(l);
                weights.push(self.weights[i]);
            }
            for &(l, w) in &set[s..] {
                labels.push(l);
                weights.push(w);
            }
            self.labels.truncate(start);
            self.weights.truncate(start);
            self.labels.extend(labels);
            self.weights.extend(weights);
            start / BLOCK
        };
        self.refresh(first_block);
    }
}

/// A sparse vector as (dimension, weight) pairs sorted by dimension.
pub type SparseQuery<'a> = &'a [(u32, f32)];

/// The index of one sparse key of a collection.
#[derive(Debug, Default, Clone)]
pub struct SparseIndex {
    dims: HashMap<u32, Postings>,
}

/// One change to a record's sparse vector: its label, the dimensions it had
/// (removed) and the (dimension, weight) pairs it has now.
#[derive(Debug, Clone)]
pub struct SparseChange {
    pub label: u32,
    pub old: Vec<u32>,
    pub new: Vec<(u32, f32)>,
}

/// Per dimension: labels removed, and (label, weight) pairs set.
type DimChanges = HashMap<u32, (Vec<u32>, Vec<(u32, f32)>)>;

/// One result: a label and its dot product with the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseHit {
    pub label: u32,
    pub score: f32,
}

/// Heap order: the worst result on top (lowest score; on ties the larger label,
/// so the smaller label wins a tie, as in a scan in label order).
#[derive(PartialEq)]
struct Worst(SparseHit);

impl Eq for Worst {}

impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.score
            .total_cmp(&self.0.score)
            .then(self.0.label.cmp(&o.0.label))
    }
}

impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The score a record must exceed to enter; −∞ while not full.
    fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score)
        }
    }

    fn push(&mut self, label: u32, score: f32) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Worst(SparseHit { label, score }));
        } else if score > self.threshold() {
            self.heap.pop();
            self.heap.push(Worst(SparseHit { label, score }));
        }
    }

    /// Best first; ties by label.
    fn into_sorted(self) -> Vec<SparseHit> {
        let mut v: Vec<SparseHit> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.label.cmp(&b.label)));
        v
    }
}

/// A query term's walk over its postings.
struct Cursor<'a> {
    p: &'a Postings,
    q: f32,
    pos: usize,
    /// The most the term adds to any record (never below 0: a record without
    /// the dimension gets 0 from it).
    ub: f32,
}

impl Cursor<'_> {
    fn label(&self) -> Option<u32> {
        self.p.labels.get(self.pos).copied()
    }

    /// The most the term adds to a record in block `b`.
    fn block_bound(&self, b: usize) -> f32 {
        let w = if self.q >= 0.0 {
            self.p.block_max[b]
        } else {
            self.p.block_min[b]
        };
        (self.q * w).max(0.0)
    }

    /// Moves to the first posting at or after `label` (galloping, then binary
    /// search).
    fn seek(&mut self, label: u32) {
        let labels = &self.p.labels;
        if self.pos >= labels.len() || labels[self.pos] >= label {
            return;
        }
        let mut step = 1;
        let mut lo = self.pos;
        let mut hi = self.pos + 1;
        while hi < labels.len() && labels[hi] < label {
            lo = hi;
            step *= 2;
            hi = (hi + step).min(labels.len());
        }
        let hi = hi.min(labels.len());
        self.pos = lo + labels[lo..hi].partition_point(|&l| l < label);
    }

    /// The bound of the block that would hold `label` (0 when no block of the
    /// list spans it), found without moving the cursor.
    fn bound_at(&self, label: u32) -> f32 {
        let labels = &self.p.labels;
        let blocks = self.p.block_max.len();
        let last = |b: usize| labels[((b + 1) * BLOCK).min(labels.len()) - 1];
        let (mut lo, mut hi) = (self.pos / BLOCK, blocks);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if last(mid) < label {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo >= blocks || labels[lo * BLOCK] > label {
            return 0.0;
        }
        self.block_bound(lo)
    }
}

impl SparseIndex {
    pub fn new() -> SparseIndex {
        SparseIndex::default()
    }

    /// Builds from postings (a scan of durable postings yields them in
    /// (dimension, label) order; any order works).
    pub fn from_postings(postings: impl IntoIterator<Item = (u32, u32, f32)>) -> SparseIndex {
        let mut dims: HashMap<u32, Postings> = HashMap::new();
        for (d, l, w) in postings {
            let p = dims.entry(d).or_default();
            p.labels.push(l);
            p.weights.push(w);
        }
        for p in dims.values_mut() {
            if !p.labels.windows(2).all(|w| w[0] < w[1]) {
                let mut pairs: Vec<(u32, f32)> = p
                    .labels
                    .iter()
                    .copied()
                    .zip(p.weights.iter().copied())
                    .collect();
                pairs.sort_by_key(|x| x.0);
                pairs.dedup_by_key(|x| x.0);
                p.labels = pairs.iter().map(|x| x.0).collect();
                p.weights = pairs.iter().map(|x| x.1).collect();
            }
            p.refresh(0);
        }
        SparseIndex { dims }
    }

    /// Applies a batch of changes (each label at most once).
    pub fn apply(&mut self, changes: &[SparseChange]) {
        let mut per_dim: DimChanges = HashMap::new();
        for c in changes {
            for &d in &c.old {
                per_dim.entry(d).or_default().0.push(c.label);
            }
            for &(d, w) in &c.new {
                per_dim.entry(d).or_default().1.push((c.label, w));
            }
        }
        for (d, (mut removed, mut set)) in per_dim {
            removed.sort_unstable();
            set.sort_unstable_by_key(|s| s.0);
            let p = self.dims.entry(d).or_default();
            p.change(&removed, &set);
            if p.is_empty() {
                self.dims.remove(&d);
            }
        }
    }

    /// How many records have dimension `d` (BM25's document frequency).
    pub fn df(&self, d: u32) -> usize {
        self.dims.get(&d).map_or(0, Postings::len)
    }

    pub fn dimensions(&self) -> usize {
        self.dims.len()
    }

    pub fn postings(&self) -> usize {
        self.dims.values().map(Postings::len).sum()
    }

    /// About the bytes the index holds.
    pub fn memory_bytes(&self) -> usize {
        self.dims
            .values()
            .map(|p| 64 + p.labels.capacity() * 8 + p.block_max.capacity() * 8)
            .sum()
    }

    /// The `k` records with the largest dot product with `query` among those
    /// `allow` admits and that share a dimension with it; best first, ties by
    /// label.
    pub fn search(
        &self,
        query: SparseQuery<'_>,
        k: usize,
        allow: impl Fn(u32) -> bool,
    ) -> Vec<SparseHit> {
        let mut cursors: Vec<Cursor<'_>> = query
            .iter()
            .filter(|(_, q)| *q != 0.0)
            .filter_map(|&(d, q)| {
                let p = self.dims.get(&d)?;
                let w = if q >= 0.0 { p.max } else { p.min };
                Some(Cursor {
                    p,
                    q,
                    pos: 0,
                    ub: (q * w).max(0.0),
                })
            })
            .collect();
        let mut top = TopK::new(k);
        if k == 0 || cursors.is_empty() {
            return Vec::new();
        }
        // Ascending upper bounds: the first `essential` lists are the ones whose
        // bounds together cannot beat the threshold.
        cursors.sort_by(|a, b| a.ub.total_cmp(&b.ub));
        let prefix: Vec<f32> = cursors
            .iter()
            .scan(0.0f32, |s, c| {
                *s += c.ub;
                Some(*s)
            })
            .collect();
        let mut first_essential = 0;
        loop {
            let theta = top.threshold();
            while first_essential < cursors.len() && prefix[first_essential] <= theta {
                first_essential += 1;
            }
            if first_essential == cursors.len() {
                break;
            }
            let (non, ess) = cursors.split_at_mut(first_essential);
            let Some(d) = ess.iter().filter_map(Cursor::label).min() else {
                break;
            };
            let mut score = 0.0f32;
            for c in ess.iter_mut() {
                if c.label() == Some(d) {
                    score += c.q * c.p.weights[c.pos];
                    c.pos += 1;
                }
            }
            if !allow(d) {
                continue;
            }
            if !non.is_empty() {
                // Probe the other lists, largest bound first, while they can
                // still lift the record above the threshold.
                let mut rest = prefix[first_essential - 1];
                if score + rest <= theta {
                    continue;
                }
                let bounds: f32 = non.iter().map(|c| c.bound_at(d)).sum();
                if score + bounds <= theta {
                    continue;
                }
                for c in non.iter_mut().rev() {
                    if score + rest <= theta {
                        break;
                    }
                    rest -= c.ub;
                    c.seek(d);
                    if c.label() == Some(d) {
                        score += c.q * c.p.weights[c.pos];
                    }
                }
                if score <= theta {
                    continue;
                }
            }
            top.push(d, score);
        }
        top.into_sorted()
    }

    /// [`SparseIndex::search`] by scoring every posting of the query's
    /// dimensions (term at a time, into an accumulator per label).
    pub fn search_exhaustive(
        &self,
        query: SparseQuery<'_>,
        k: usize,
        allow: impl Fn(u32) -> bool,
    ) -> Vec<SparseHit> {
        // One accumulator per label (dense: labels are internal ids, handed out
        // in order), and the labels touched.
        let lists: Vec<(&Postings, f32)> = query
            .iter()
            .filter(|(_, q)| *q != 0.0)
            .filter_map(|&(d, q)| Some((self.dims.get(&d)?, q)))
            .collect();
        let max = lists
            .iter()
            .filter_map(|(p, _)| p.labels.last())
            .max()
            .map_or(0, |&m| m as usize + 1);
        let mut acc = vec![0.0f32; max];
        let mut seen = vec![false; max];
        let mut touched = Vec::new();
        for (p, q) in lists {
            for (&l, &w) in p.labels.iter().zip(&p.weights) {
                let l = l as usize;
                acc[l] += q * w;
                if !seen[l] {
                    seen[l] = true;
                    touched.push(l as u32);
                }
            }
        }
        let mut top = TopK::new(k);
        for l in touched {
            if allow(l) {
                top.push_exact(l, acc[l as usize]);
            }
        }
        top.into_sorted()
    }
}

impl TopK {
    /// `push`, with ties broken by label whatever the order of arrival.
    fn push_exact(&mut self, label: u32, score: f32) {
        if self.k == 0 {
            return;
        }
        let hit = Worst(SparseHit { label, score });
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if self.heap.peek().is_some_and(|w| hit < *w) {
            self.heap.pop();
            self.heap.push(hit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The model: label → sparse vector.
    type Model = BTreeMap<u32, Vec<(u32, f32)>>;

    fn brute(m: &Model, q: &[(u32, f32)], k: usize, allow: impl Fn(u32) -> bool) -> Vec<SparseHit> {
        let mut all: Vec<SparseHit> = m
            .iter()
            .filter(|(l, v)| {
                allow(**l)
                    && v.iter()
                        .any(|(d, _)| q.iter().any(|(qd, qw)| qd == d && *qw != 0.0))
            })
            .map(|(l, v)| SparseHit {
                label: *l,
                score: q
                    .iter()
                    .map(|(qd, qw)| v.iter().find(|(d, _)| d == qd).map_or(0.0, |(_, w)| qw * w))
                    .sum(),
            })
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.label.cmp(&b.label)));
        all.truncate(k);
        all
    }

    /// Same results up to float rounding: equal scores in order, and any label
    /// that differs sits at a score the other list ties within rounding.
    fn same(got: &[SparseHit], want: &[SparseHit]) {
        assert_eq!(got.len(), want.len(), "got {got:?}\nwant {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g.score - w.score).abs() <= 1e-3 * (1.0 + w.score.abs()),
                "got {got:?}\nwant {want:?}"
            );
        }
    }

    fn index_of(m: &Model) -> SparseIndex {
        let mut ix = SparseIndex::new();
        let changes: Vec<SparseChange> = m
            .iter()
            .map(|(l, v)| SparseChange {
                label: *l,
                old: Vec::new(),
                new: v.clone(),
            })
            .collect();
        ix.apply(&changes);
        ix
    }

    fn vector(dims: u32) -> impl Strategy<Value = Vec<(u32, f32)>> {
        prop::collection::btree_map(0..dims, -2.0f32..4.0, 0..8)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Block-Max MaxScore equals brute force, through inserts, updates and
        /// deletes, with and without a filter.
        #[test]
        fn search_equals_brute_force(
            initial in prop::collection::vec(vector(40), 0..700),
            updates in prop::collection::vec((0u32..700, prop::option::of(vector(40))), 0..200),
            queries in prop::collection::vec(vector(40), 1..6),
            k in 1usize..30,
            modulo in 1u32..5,
        ) {
            let mut m: Model = initial.into_iter().enumerate().map(|(i, v)| (i as u32, v)).collect();
            let mut ix = index_of(&m);
            // A batch of changes, each label once.
            let mut seen = std::collections::HashSet::new();
            let mut changes: Vec<SparseChange> = Vec::new();
            for (l, new) in updates {
                if !seen.insert(l) { continue; }
                let old: Vec<u32> = m.get(&l).map(|v| v.iter().map(|x| x.0).collect()).unwrap_or_default();
                match new {
                    Some(v) => { m.insert(l, v.clone()); changes.push(SparseChange { label: l, old, new: v }); }
                    None => { m.remove(&l); changes.push(SparseChange { label: l, old, new: Vec::new() }); }
                }
            }
            ix.apply(&changes);
            for q in &queries {
                same(&ix.search(q, k, |_| true), &brute(&m, q, k, |_| true));
                same(&ix.search(q, k, |l| l % modulo == 0), &brute(&m, q, k, |l| l % modulo == 0));
                same(&ix.search_exhaustive(q, k, |_| true), &brute(&m, q, k, |_| true));
            }
            for (d, p) in &ix.dims {
                prop_assert!(!p.is_empty());
                prop_assert!(p.labels.windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(p.len(), m.values().filter(|v| v.iter().any(|x| x.0 == *d)).count());
            }
        }
    }

    #[test]
    fn building_from_postings_equals_inserting() {
        let m: Model = (0..1000u32)
            .map(|l| (l, vec![(l % 7, 1.0 + (l % 13) as f32), (7 + l % 3, 0.5)]))
            .collect();
        let mut rows: Vec<(u32, u32, f32)> = m
            .iter()
            .flat_map(|(l, v)| v.iter().map(move |(d, w)| (*d, *l, *w)))
            .collect();
        rows.sort_by_key(|r| (r.0, r.1));
        let a = SparseIndex::from_postings(rows);
        let b = index_of(&m);
        for q in [vec![(0, 1.0), (8, 2.0)], vec![(3, -1.0), (9, 1.0)]] {
            assert_eq!(a.search(&q, 10, |_| true), b.search(&q, 10, |_| true));
            same(&a.search(&q, 10, |_| true), &brute(&m, &q, 10, |_| true));
        }
        assert_eq!(a.df(0), b.df(0));
        assert_eq!(a.postings(), 2000);
    }

    #[test]
    fn pruning_skips_most_of_a_long_list() {
        // One common low-weight term and one rare high-weight one: the top 10
        // come from the rare term and the common list is only probed.
        let mut m: Model = BTreeMap::new();
        for l in 0..100_000u32 {
            let mut v = vec![(0, 0.01 + (l % 100) as f32 * 1e-4)];
            if l % 1000 == 0 {
                v.push((1, 5.0));
            }
            m.insert(l, v);
        }
        let ix = index_of(&m);
        let q = [(0, 1.0), (1, 1.0)];
        same(&ix.search(&q, 10, |_| true), &brute(&m, &q, 10, |_| true));
    }
}
