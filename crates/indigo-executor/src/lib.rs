//! Indigo's query executor: every read (get, query, count, and the lookup behind a
//! delete by filter) runs here, on a [`Snapshot`] of the collection's segment with
//! the log tail not yet compacted overlaid on it.
//!
//! Plan of a read:
//! 1. Snapshot the segment at its applied offset X and read the log after X; the
//!    shared [`Resolver`] turns the tail into each touched id's current record.
//!    Base records those ids had are excluded from everything below.
//! 2. Filters run on the inverted index into an exact allow-list of internal ids
//!    (pre-filtering): metadata from posting lists, document `$contains` from
//!    trigram postings confirmed on the text, `$regex` confirmed on the text.
//! 3. KNN runs on the HNSW index with the allow-list (or exactly, when asked);
//!    tail records are scored exactly and merged in.
//! 4. Whole records are fetched for what is returned.
//!
//! Invariant: every read reflects every write acknowledged before it began.

use std::collections::HashMap;
use std::sync::Arc;

use indigo_index::{Neighbor, RoaringBitmap};
use indigo_log::{CollectionId, Log, LogOffset};
use indigo_segment::posting;
use indigo_segment::{decode_records, Changing, Segment, Snapshot};
use indigo_storage::keys::encode_f64;
use indigo_types::{
    DocFilter, FieldOp, MetaValue, Metadata, Record, Resolver, Scalar, SparseVector, Where,
};
use parking_lot::Mutex;

pub type Error = indigo_segment::Error;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which fields a read returns (ids always come back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Include {
    pub embeddings: bool,
    pub documents: bool,
    pub metadatas: bool,
    pub uris: bool,
    pub distances: bool,
}

impl Include {
    pub const GET_DEFAULT: Include = Include {
        embeddings: false,
        documents: true,
        metadatas: true,
        uris: false,
        distances: false,
    };
    pub const QUERY_DEFAULT: Include = Include {
        embeddings: false,
        documents: true,
        metadatas: true,
        uris: false,
        distances: true,
    };
}

/// Which records a read considers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub ids: Option<Vec<String>>,
    pub where_: Option<Where>,
    pub where_document: Option<DocFilter>,
}

/// Records, one entry per returned id, in order; fields not included are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Records {
    pub ids: Vec<String>,
    pub embeddings: Option<Vec<Arc<[f32]>>>,
    pub documents: Option<Vec<Option<String>>>,
    pub uris: Option<Vec<Option<String>>>,
    pub metadatas: Option<Vec<Option<Metadata>>>,
    pub distances: Option<Vec<f32>>,
}

impl Records {
    /// No records, with the included fields present.
    pub fn empty(inc: Include) -> Records {
        Self::new(inc)
    }

    fn new(inc: Include) -> Records {
        Records {
            ids: Vec::new(),
            embeddings: inc.embeddings.then(Vec::new),
            documents: inc.documents.then(Vec::new),
            uris: inc.uris.then(Vec::new),
            metadatas: inc.metadatas.then(Vec::new),
            distances: inc.distances.then(Vec::new),
        }
    }

    fn push(&mut self, r: &Record, distance: Option<f32>) {
        self.ids.push(r.id.clone());
        if let Some(e) = &mut self.embeddings {
            e.push(r.embedding.clone());
        }
        if let Some(d) = &mut self.documents {
            d.push(r.document.clone());
        }
        if let Some(u) = &mut self.uris {
            u.push(r.uri.clone());
        }
        if let Some(m) = &mut self.metadatas {
            m.push(r.metadata.clone());
        }
        if let (Some(ds), Some(d)) = (&mut self.distances, distance) {
            ds.push(d);
        }
    }
}

/// A record's sparse vector under `key`, if it has one.
fn sparse_at<'r>(r: &'r Record, key: &str) -> Option<&'r SparseVector> {
    match r.metadata.as_ref()?.get(key)? {
        MetaValue::Sparse(v) => Some(v),
        _ => None,
    }
}

/// BM25's inverse document frequency as Chroma computes it:
/// `ln(1 + (n − n_t + 0.5) / (n_t + 0.5))`, with `n_t` clamped to `[0, n]`.
pub fn bm25_idf(n: f32, nt: f32) -> f32 {
    let nt = nt.clamp(0.0, n);
    ((n - nt + 0.5) / (nt + 0.5)).ln_1p()
}

/// A snapshot with the log tail overlaid.
pub struct View<'a> {
    snap: Snapshot<'a>,
    tail: Arc<Tail>,
    live: Option<RoaringBitmap>,
}

/// The log tail, resolved.
#[derive(Default)]
struct Tail {
    /// Records the tail leaves in existence, ordered as they will be once
    /// compacted: a changed record keeps its place, new ones follow all others.
    records: Vec<(u64, Arc<Record>)>,
    /// Each record's embedding prepared for the collection's space (normalised
    /// for cosine), made by the first query, so later ones score the tail without
    /// preparing it again (and counts and gets never pay for it).
    /// One row per record, contiguous (a scan streams through memory); a record
    /// whose embedding has another length (none in a valid collection) has a
    /// row of NaN and is never scored.
    prepared: std::sync::OnceLock<Prepared>,
    space: Option<indigo_index::Space>,
    /// Base internal ids the tail touches (their base state no longer holds).
    excluded: RoaringBitmap,
    /// The base records of `excluded` (BM25's statistics discount them).
    bases: Vec<Arc<Record>>,
}

/// One collection's resolved log tail, kept between reads: extended as entries
/// arrive, rebuilt when the compactor moves the segment on. Without it every
/// read during an ingest would re-read and re-resolve the whole tail.
#[derive(Default)]
pub struct TailCache(Mutex<Option<Cached>>, std::sync::atomic::AtomicU64);

impl TailCache {
    /// Forgets the cached resolution (its segment was replaced).
    pub fn clear(&self) {
        *self.0.lock() = None;
        self.1.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// About the bytes the cached tail holds: its records, and their vectors
    /// prepared for scoring (counted whether or not a query made them yet).
    pub fn bytes(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Cached {
    /// The segment offset the resolution is based on.
    applied: u64,
    /// The last log offset resolved.
    upto: u64,
    res: Resolver<u32>,
    tail: Arc<Tail>,
}

const NEW_RECORD: u64 = 1 << 32;

impl Tail {
    fn prepared(&self) -> &Prepared {
        self.prepared.get_or_init(|| {
            let space = self.space.unwrap_or(indigo_index::Space::L2);
            let dim = self.records.first().map_or(0, |(_, r)| r.embedding.len());
            let mut rows = Vec::with_capacity(dim * self.records.len());
            for (_, r) in &self.records {
                if r.embedding.len() == dim {
                    rows.extend_from_slice(&space.prepare_cow(&r.embedding));
                } else {
                    rows.extend(std::iter::repeat_n(f32::NAN, dim));
                }
            }
            Prepared { dim, rows }
        })
    }
}

struct Prepared {
    dim: usize,
    rows: Vec<f32>,
}

impl Prepared {
    /// Record `i`'s prepared vector, if it has the query's dimension.
    fn row(&self, i: usize, dim: usize) -> Option<&[f32]> {
        let r = &self.rows[i * self.dim..(i + 1) * self.dim];
        (dim == self.dim && !r.first().is_some_and(|x| x.is_nan())).then_some(r)
    }
}

fn derive(res: &Resolver<u32>, space: indigo_index::Space) -> Tail {
    let mut excluded = RoaringBitmap::new();
    let mut records = Vec::new();
    let mut bases = Vec::new();
    for r in res.touched.values() {
        if let Some((iid, b)) = &r.base {
            excluded.insert(*iid);
            bases.push(b.clone());
        }
        if let Some(cur) = &r.current {
            let key = match (&r.base, r.created) {
                (_, Some(n)) => NEW_RECORD + n,
                (Some((iid, _)), None) => *iid as u64,
                (None, None) => continue,
            };
            records.push((key, cur.clone()));
        }
    }
    records.sort_unstable_by_key(|t| t.0);
    Tail {
        records,
        prepared: std::sync::OnceLock::new(),
        space: Some(space),
        excluded,
        bases,
    }
}

impl<'a> View<'a> {
    /// Opens a view of `seg` including every entry `log` holds for `log_id`.
    pub fn open(
        seg: &'a Segment,
        log: &dyn Log,
        log_id: CollectionId,
        cache: &TailCache,
    ) -> Result<View<'a>> {
        let snap = seg.snapshot();
        let mut g = cache.0.lock();
        if g.as_ref().is_none_or(|c| c.applied != snap.applied) {
            cache.1.store(0, std::sync::atomic::Ordering::Relaxed);
            *g = Some(Cached {
                applied: snap.applied,
                upto: snap.applied,
                res: Resolver::default(),
                tail: Arc::default(),
            });
        }
        let c = g.as_mut().unwrap();
        let recs = log.read(log_id, LogOffset(c.upto), usize::MAX)?;
        if !recs.is_empty() {
            for (off, e) in decode_records(&recs)? {
                c.res.apply(&e, |id| -> Result<_> {
                    Ok(match snap.lookup(id)? {
                        Some(iid) => snap.record(iid, true)?.map(|r| (iid, Arc::new(r))),
                        None => None,
                    })
                })?;
                c.upto = off;
            }
            c.tail = Arc::new(derive(&c.res, seg.config().space));
            let bytes: usize = c
                .tail
                .records
                .iter()
                .map(|(_, r)| {
                    128 + r.id.len()
                        + 8 * r.embedding.len()
                        + r.document.as_ref().map_or(0, |d| d.len())
                        + r.metadata.as_ref().map_or(0, |m| 64 * m.len())
                })
                .sum();
            cache
                .1
                .store(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let tail = c.tail.clone();
        drop(g);
        Ok(View {
            snap,
            tail,
            live: None,
        })
    }

    fn live(&mut self) -> Result<&RoaringBitmap> {
        if self.live.is_none() {
            self.live = Some(self.snap.live()? - &self.tail.excluded);
        }
        Ok(self.live.as_ref().unwrap())
    }

    /// How many records exist: the snapshot's live records (counted, not read),
    /// less the base records the tail changes (all of them live), plus the
    /// records the tail leaves.
    pub fn count(&mut self) -> Result<u64> {
        let base = self
            .snap
            .live_count()
            .saturating_sub(self.tail.excluded.len());
        Ok(base + self.tail.records.len() as u64)
    }

    /// Base records selected (exactly), and whether a tail record is.
    fn select_base(&mut self, sel: &Selection) -> Result<Option<RoaringBitmap>> {
        if sel.ids.is_none() && sel.where_.is_none() && sel.where_document.is_none() {
            return Ok(None);
        }
        let mut set = match &sel.ids {
            Some(ids) => {
                let mut b = RoaringBitmap::new();
                for id in ids {
                    if let Some(iid) = self.snap.lookup(id)? {
                        b.insert(iid);
                    }
                }
                b & self.live()?
            }
            None => self.live()?.clone(),
        };
        if let Some(w) = &sel.where_ {
            set = self.eval_where(w, &set)?;
        }
        if let Some(d) = &sel.where_document {
            set = self.eval_doc(d, &set)?;
        }
        Ok(Some(set))
    }

    /// The first of `ids` that names no record, if any: Chroma refuses a query
    /// restricted to ids that do not exist ("Error finding id"), and so do we.
    pub fn missing_id<'i>(&mut self, ids: &'i [String]) -> Result<Option<&'i str>> {
        let tail = self.tail.clone();
        let in_tail: std::collections::HashSet<&str> =
            tail.records.iter().map(|(_, r)| r.id.as_str()).collect();
        for id in ids {
            if in_tail.contains(id.as_str()) {
                continue;
            }
            match self.snap.lookup(id)? {
                Some(iid) if self.live()?.contains(iid) => {}
                _ => return Ok(Some(id)),
            }
        }
        Ok(None)
    }

    /// Indices of the tail records `sel` matches.
    fn tail_selected(&self, sel: &Selection) -> Vec<usize> {
        let ids: Option<std::collections::HashSet<&str>> = sel
            .ids
            .as_ref()
            .map(|v| v.iter().map(String::as_str).collect());
        (0..self.tail.records.len())
            .filter(|&i| {
                let r = &self.tail.records[i].1;
                ids.as_ref().is_none_or(|s| s.contains(r.id.as_str()))
                    && sel
                        .where_
                        .as_ref()
                        .is_none_or(|w| w.matches(r.metadata.as_ref(), r.document.as_deref()))
                    && sel
                        .where_document
                        .as_ref()
                        .is_none_or(|d| d.matches(r.document.as_deref()))
            })
            .collect()
    }

    /// Records matching `sel` in collection order, after skipping `offset`, at most
    /// `limit`.
    pub fn get(
        &mut self,
        sel: &Selection,
        limit: Option<usize>,
        offset: usize,
        include: Include,
    ) -> Result<Records> {
        let base = match self.select_base(sel)? {
            Some(b) => b,
            None => self.live()?.clone(),
        };
        let tail: Vec<&(u64, Arc<Record>)> = self
            .tail_selected(sel)
            .into_iter()
            .map(|i| &self.tail.records[i])
            .collect();
        let mut out = Records::new(include);
        let limit = limit.unwrap_or(usize::MAX);
        let (mut bi, mut ti) = (base.iter().peekable(), tail.iter().peekable());
        let mut skipped = 0;
        while out.ids.len() < limit {
            let take_base = match (bi.peek(), ti.peek()) {
                (Some(&b), Some(t)) => (b as u64) < t.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if skipped < offset {
                skipped += 1;
                if take_base {
                    bi.next();
                } else {
                    ti.next();
                }
                continue;
            }
            if take_base {
                let iid = bi.next().unwrap();
                let r = self.fetch_for(iid, include)?;
                out.push(&r, None);
            } else {
                out.push(&ti.next().unwrap().1, None);
            }
        }
        Ok(out)
    }

    /// [`View::fetch`] of what `include` asks for: with nothing but ids, the
    /// record's metadata is not decoded.
    fn fetch_for(&self, iid: u32, include: Include) -> Result<Record> {
        if include.documents || include.metadatas || include.uris || include.embeddings {
            return self.fetch(iid, include.embeddings);
        }
        let id = self.snap.record_id(iid)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "{}: record {iid} is in the postings but not stored",
                self.snap.segment().dir().display()
            ))
        })?;
        Ok(Record {
            id,
            embedding: Arc::from(Vec::new()),
            document: None,
            uri: None,
            metadata: None,
        })
    }

    fn fetch(&self, iid: u32, embedding: bool) -> Result<Record> {
        self.snap.record(iid, embedding)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "{}: record {iid} is in the postings but not stored",
                self.snap.segment().dir().display()
            ))
        })
    }

    /// The ids of the records `sel` matches (for a delete by filter).
    pub fn ids(&mut self, sel: &Selection) -> Result<Vec<String>> {
        Ok(self.get(sel, None, 0, Include::default())?.ids)
    }

    /// The `k` nearest records to each query among those `sel` matches.
    pub fn query(
        &mut self,
        queries: &[Vec<f32>],
        k: usize,
        sel: &Selection,
        include: Include,
    ) -> Result<Vec<Records>> {
        let allow = self.select_base(sel)?;
        let selected = self.tail_selected(sel);
        let tail = self.tail.clone();
        let seg = self.snap.segment();
        let index = seg.index()?;
        let exact = seg.config().exact;
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            let mut found: Vec<(f32, Result<u32, usize>)> = Vec::new();
            if let Some(index) = &index {
                // A chunk may start changing the index during the search; then
                // search again without its labels. Only one can: the next waits
                // for this view's snapshot to be released.
                let mut changing = seg.changing();
                let hits = loop {
                    let hits = self.search_base(index, q, k, allow.as_ref(), exact, &changing)?;
                    let now = seg.changing();
                    if Arc::ptr_eq(&now, &changing) {
                        break hits;
                    }
                    changing = now;
                };
                found.extend(hits.into_iter().map(|n| (n.distance, Ok(n.label))));
                if !changing.vectors.is_empty() {
                    let space = seg.config().space;
                    let pq = space.prepare(q);
                    for (iid, v) in &changing.vectors {
                        let base = match &allow {
                            Some(a) => a.contains(*iid),
                            None => !self.tail.excluded.contains(*iid),
                        };
                        if base && v.len() == q.len() {
                            found.push((space.distance(&pq, v), Ok(*iid)));
                        }
                    }
                }
            }
            if !selected.is_empty() {
                let space = seg.config().space;
                let pq = space.prepare(q);
                let prepared = tail.prepared();
                for &i in &selected {
                    if let Some(v) = prepared.row(i, q.len()) {
                        found.push((space.distance(&pq, v), Err(i)));
                    }
                }
            }
            out.push(self.nearest(found, k, &tail, include)?);
        }
        Ok(out)
    }

    /// The `k` records whose sparse vectors under `key` have the largest dot
    /// product with `query`, among those `sel` matches and that share a
    /// dimension with it; distances are `1 − dot`, as Chroma's. With `bm25`
    /// each query weight is first scaled by its dimension's IDF over the
    /// records as this view sees them (Chroma's definition, see
    /// `docs/sparse.md`).
    pub fn query_sparse(
        &mut self,
        key: &str,
        query: &SparseVector,
        bm25: bool,
        k: usize,
        sel: &Selection,
        include: Include,
    ) -> Result<Records> {
        let allow = self.select_base(sel)?;
        let selected = self.tail_selected(sel);
        let tail = self.tail.clone();
        let mut q: Vec<(u32, f32)> = query
            .indices
            .iter()
            .copied()
            .zip(query.values.iter().copied())
            .collect();
        if bm25 && !q.is_empty() {
            let n = self.count()? as f32;
            let mut df: Vec<i64> = self
                .snap
                .sparse_df(key, &query.indices)?
                .into_iter()
                .map(|d| d as i64)
                .collect();
            let mut count = |r: &Record, by: i64| {
                if let Some(v) = sparse_at(r, key) {
                    for (i, d) in query.indices.iter().enumerate() {
                        if v.indices.binary_search(d).is_ok() {
                            df[i] += by;
                        }
                    }
                }
            };
            for b in &tail.bases {
                count(b, -1);
            }
            for (_, r) in &tail.records {
                count(r, 1);
            }
            for (w, nt) in q.iter_mut().zip(&df) {
                w.1 *= bm25_idf(n, *nt as f32);
            }
        }
        let excluded = &tail.excluded;
        let hits = match &allow {
            Some(a) => self.snap.sparse_search(key, &q, k, |l| a.contains(l))?,
            None => self
                .snap
                .sparse_search(key, &q, k, |l| !excluded.contains(l))?,
        };
        let mut found: Vec<(f32, Result<u32, usize>)> = hits
            .into_iter()
            .map(|h| (1.0 - h.score, Ok(h.label)))
            .collect();
        let scaled = SparseVector {
            indices: q.iter().map(|x| x.0).collect(),
            values: q.iter().map(|x| x.1).collect(),
            tokens: None,
        };
        for &i in &selected {
            if let Some(v) = sparse_at(&tail.records[i].1, key) {
                let shares = scaled
                    .indices
                    .iter()
                    .zip(&scaled.values)
                    .any(|(d, w)| *w != 0.0 && v.indices.binary_search(d).is_ok());
                if shares {
                    found.push((1.0 - v.dot(&scaled), Err(i)));
                }
            }
        }
        self.nearest(found, k, &tail, include)
    }

    /// The `k` nearest of `found` (base internal ids, or indices of tail
    /// records), nearest first, as records.
    fn nearest(
        &self,
        mut found: Vec<(f32, Result<u32, usize>)>,
        k: usize,
        tail: &Tail,
        include: Include,
    ) -> Result<Records> {
        let by_distance =
            |a: &(f32, Result<u32, usize>), b: &(f32, Result<u32, usize>)| a.0.total_cmp(&b.0);
        if found.len() > k && k > 0 {
            found.select_nth_unstable_by(k - 1, by_distance);
        }
        found.truncate(k);
        found.sort_by(by_distance);
        let mut recs = Records::new(include);
        for (d, src) in found {
            match src {
                Ok(iid) => {
                    let r = self.fetch_for(iid, include)?;
                    recs.push(&r, Some(d));
                }
                Err(i) => recs.push(&tail.records[i].1, Some(d)),
            }
        }
        Ok(recs)
    }

    fn search_base(
        &mut self,
        index: &indigo_index::Hnsw,
        q: &[f32],
        k: usize,
        allow: Option<&RoaringBitmap>,
        exact: bool,
        changing: &Changing,
    ) -> Result<Vec<Neighbor>> {
        // Labels the chunk in progress changes are scored from the snapshot instead.
        let narrowed;
        let allow = match allow {
            Some(a) if !changing.iids.is_empty() => {
                narrowed = a - &changing.iids;
                Some(&narrowed)
            }
            a => a,
        };
        if let Some(a) = allow {
            return Ok(if exact {
                index.search_exact(q, k, Some(a))?
            } else {
                index.search(q, k, Some(a))?
            });
        }
        let skipped = self.tail.excluded.len() + changing.iids.len();
        if exact || skipped > 256 {
            let live = self.live()?.clone() - &changing.iids;
            return Ok(if exact {
                index.search_exact(q, k, Some(&live))?
            } else {
                index.search(q, k, Some(&live))?
            });
        }
        // Skip what the snapshot does not hold: labels of a chunk being compacted
        // (new ones are at or above `next_iid`), and base records the tail
        // replaced. They stay stepping stones of the walk; over-fetching by them
        // instead made every query during an ingest search with ef ≥ a chunk.
        let next = self.snap.next_iid;
        let excluded = &self.tail.excluded;
        let mut hits = index.search_where(q, k, |l| {
            (l as u64) < next && !excluded.contains(l) && !changing.iids.contains(l)
        })?;
        if hits.len() < k {
            let live = self.live()?.clone() - &changing.iids;
            if (hits.len() as u64) < live.len() {
                hits = index.search(q, k, Some(&live))?;
            }
        }
        hits.truncate(k);
        Ok(hits)
    }

    /// Base records within `universe` that match `w`, exactly.
    fn eval_where(&self, w: &Where, universe: &RoaringBitmap) -> Result<RoaringBitmap> {
        Ok(match w {
            Where::And(parts) => {
                // Metadata conditions first: document checks read text.
                let mut parts: Vec<&Where> = parts.iter().collect();
                parts.sort_by_key(|p| matches!(p, Where::Document(_)));
                let mut set = universe.clone();
                for p in parts {
                    if set.is_empty() {
                        break;
                    }
                    set = self.eval_where(p, &set)?;
                }
                set
            }
            Where::Or(parts) => {
                let mut set = RoaringBitmap::new();
                for p in parts {
                    set |= self.eval_where(p, universe)?;
                }
                set
            }
            Where::Document(d) => self.eval_doc(d, universe)?,
            Where::Field { key, op } => self.eval_field(key, op, universe)?,
        })
    }

    /// Records whose value for `key` (scalar, or a list element when `list`) is
    /// equal to `x`, by Chroma's rules (ints and floats by value).
    fn equal(&self, list: bool, key: &str, x: &Scalar) -> Result<RoaringBitmap> {
        let ns = if list { posting::LIST } else { posting::SCALAR };
        match x.as_number() {
            None => self.snap.posting(&posting::value_key(ns, key, x)),
            Some(f) => {
                let mut prefix = posting::field_prefix(ns, key);
                prefix.push(posting::NUM);
                prefix.extend_from_slice(&encode_f64(f));
                let mut set = RoaringBitmap::new();
                for (suffix, ids) in self.snap.postings_with_prefix(&prefix)? {
                    let mut whole = vec![posting::NUM];
                    whole.extend_from_slice(&prefix[prefix.len() - 8..]);
                    whole.extend_from_slice(&suffix);
                    if posting::decode_value(&whole).is_some_and(|v| v.equals(x)) {
                        set |= ids;
                    }
                }
                Ok(set)
            }
        }
    }

    fn eval_field(
        &self,
        key: &str,
        op: &FieldOp,
        universe: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        let any_equal = |list: bool, xs: &[Scalar]| -> Result<RoaringBitmap> {
            let mut set = RoaringBitmap::new();
            for x in xs {
                set |= self.equal(list, key, x)?;
            }
            Ok(set)
        };
        Ok(match op {
            FieldOp::Eq(x) => self.equal(false, key, x)? & universe,
            FieldOp::Ne(x) => universe - self.equal(false, key, x)?,
            FieldOp::In(xs) => any_equal(false, xs)? & universe,
            FieldOp::Nin(xs) => universe - any_equal(false, xs)?,
            FieldOp::Contains(x) => self.equal(true, key, x)? & universe,
            FieldOp::NotContains(x) => universe - self.equal(true, key, x)?,
            FieldOp::Gt(x) | FieldOp::Gte(x) | FieldOp::Lt(x) | FieldOp::Lte(x) => {
                let f = x.as_number().unwrap_or(f64::NAN);
                let mut prefix = posting::field_prefix(posting::SCALAR, key);
                prefix.push(posting::NUM);
                let mut bound = prefix.clone();
                bound.extend_from_slice(&encode_f64(f));
                let (lo, hi) = if matches!(op, FieldOp::Gt(_) | FieldOp::Gte(_)) {
                    let mut hi = prefix.clone();
                    hi.extend_from_slice(&[0xff; 18]);
                    (bound, hi)
                } else {
                    bound.extend_from_slice(&[0xff; 10]);
                    (prefix.clone(), bound)
                };
                let field_len = prefix.len() - 1;
                let mut set = RoaringBitmap::new();
                for (k, ids) in self.snap.postings_between(&lo, &hi)? {
                    let Some(v) = posting::decode_value(&k[field_len..]) else {
                        continue;
                    };
                    if op.matches(Some(&MetaValue::Scalar(v))) {
                        set |= ids;
                    }
                }
                set & universe
            }
        })
    }

    /// Base records within `universe` whose document matches `d`, exactly.
    fn eval_doc(&self, d: &DocFilter, universe: &RoaringBitmap) -> Result<RoaringBitmap> {
        Ok(match d {
            DocFilter::And(parts) => {
                let mut set = universe.clone();
                for p in parts {
                    set = self.eval_doc(p, &set)?;
                }
                set
            }
            DocFilter::Or(parts) => {
                let mut set = RoaringBitmap::new();
                for p in parts {
                    set |= self.eval_doc(p, universe)?;
                }
                set
            }
            DocFilter::Contains(s) => {
                let mut cand = self.snap.posting(posting::HAS_DOC)? & universe;
                // Every trigram of the needle must be in the document: intersect
                // their postings, rarest first, then confirm on the text.
                let mut grams: Vec<&[u8]> = s.as_bytes().windows(3).collect();
                grams.sort_unstable();
                grams.dedup();
                for g in grams {
                    if cand.is_empty() {
                        break;
                    }
                    cand &= self.snap.posting(&posting::trigram_key(g))?;
                }
                self.confirm(&cand, |doc| doc.contains(s.as_str()))?
            }
            DocFilter::NotContains(s) => {
                universe - self.eval_doc(&DocFilter::Contains(s.clone()), universe)?
            }
            DocFilter::Regex(r) => {
                let cand = self.snap.posting(posting::HAS_DOC)? & universe;
                self.confirm(&cand, |doc| r.is_match(doc))?
            }
            DocFilter::NotRegex(r) => {
                universe - self.eval_doc(&DocFilter::Regex(r.clone()), universe)?
            }
        })
    }

    fn confirm(&self, cand: &RoaringBitmap, f: impl Fn(&str) -> bool) -> Result<RoaringBitmap> {
        let mut set = RoaringBitmap::new();
        for iid in cand {
            if let Some(r) = self.snap.record(iid, false)? {
                if r.document.as_deref().is_some_and(&f) {
                    set.insert(iid);
                }
            }
        }
        Ok(set)
    }
}

/// Ids in the order given, without repeats (requests may repeat them).
pub fn dedup_ids(ids: &[String]) -> Vec<String> {
    let mut seen = HashMap::new();
    ids.iter()
        .filter(|i| seen.insert(i.as_str(), ()).is_none())
        .cloned()
        .collect()
}
