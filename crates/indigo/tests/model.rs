//! Model-based tests: random sequences of writes, reads, compactions and reopens,
//! checked against a plain in-memory model (a list of records in collection order,
//! filters by the reference `Where::matches`, brute-force distances in f64).

use std::collections::BTreeMap;

use indigo::{
    Batch, Collection, DocFilter, GetRequest, Include, Indigo, Options, QueryRequest, Selection,
    Where,
};
use indigo_types::{MetaValue, Metadata, Scalar};
use proptest::prelude::*;
use serde_json::{json, Value};

const DIM: usize = 4;

#[derive(Debug, Clone)]
struct Rec {
    id: String,
    emb: Vec<f32>,
    doc: Option<String>,
    meta: Option<Metadata>,
}

/// (id number, embedding, document, metadata JSON)
type NewRec = (u8, Vec<f32>, Option<String>, Option<Value>);
type UpdRec = (u8, Option<Vec<f32>>, Option<String>, Option<Value>);

#[derive(Debug, Clone)]
enum Op {
    Add(Vec<NewRec>),
    Upsert(Vec<NewRec>),
    Update(Vec<UpdRec>),
    Delete(Vec<u8>),
    DeleteWhere(Value),
    Get(
        Option<Vec<u8>>,
        Option<Value>,
        Option<Value>,
        Option<usize>,
        usize,
    ),
    Query(Vec<f32>, usize, Option<Value>, Option<Value>),
    Count,
    Compact,
    Reopen,
}

fn id(n: u8) -> String {
    format!("id{n}")
}

fn emb() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-1.0f32..1.0, DIM)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..4).prop_map(Value::from),
        (0i64..8).prop_map(|i| Value::from(i as f64 / 2.0)),
        prop::sample::select(vec!["x", "y", "z"]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

fn meta(update: bool) -> impl Strategy<Value = Option<Value>> {
    let value = prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(0i64..4, 1..3).prop_map(|v| json!(v)),
        1 => Just(Value::Null),
    ];
    prop::option::of(prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c"]),
        value,
        1..3,
    ))
    .prop_map(move |m| {
        m.map(|m| {
            Value::Object(
                m.into_iter()
                    .filter(|(_, v)| update || !v.is_null())
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        })
        .filter(|v| !v.as_object().unwrap().is_empty())
    })
}

fn doc() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::collection::vec(
            prop::sample::select(vec!["red", "fox", "blue", "sky", "ox"]),
            1..4,
        )
        .prop_map(|w| w.join(" ")),
    )
}

fn where_() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["a", "b", "c"]);
    let leaf = prop_oneof![
        (key.clone(), scalar()).prop_map(|(k, v)| json!({k: v})),
        (
            key.clone(),
            prop::sample::select(vec!["$eq", "$ne"]),
            scalar()
        )
            .prop_map(|(k, op, v)| json!({k: {op: v}})),
        (
            key.clone(),
            prop::sample::select(vec!["$gt", "$gte", "$lt", "$lte"]),
            0i64..8
        )
            .prop_map(|(k, op, v)| json!({k: {op: v as f64 / 2.0}})),
        (
            key.clone(),
            prop::sample::select(vec!["$in", "$nin"]),
            prop::collection::vec(0i64..4, 1..3)
        )
            .prop_map(|(k, op, v)| json!({k: {op: v}})),
        (
            key.clone(),
            prop::sample::select(vec!["$contains", "$not_contains"]),
            0i64..4
        )
            .prop_map(|(k, op, v)| json!({k: {op: v}})),
        doc_filter().prop_map(|d| json!({"#document": d})),
    ];
    leaf.prop_recursive(2, 6, 3, |inner| {
        (
            prop::sample::select(vec!["$and", "$or"]),
            prop::collection::vec(inner, 1..3),
        )
            .prop_map(|(op, v)| json!({op: v}))
    })
}

fn doc_filter() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["$contains", "$not_contains", "$regex", "$not_regex"]),
        prop::sample::select(vec!["fox", "ox", "o", "red sky", "blue", "^re", "x$"]),
    )
        .prop_map(|(op, s)| json!({op: s}))
}

fn op() -> impl Strategy<Value = Op> {
    let rec = || (0u8..12, emb(), doc(), meta(false));
    let upd = (0u8..12, prop::option::of(emb()), doc(), meta(true));
    prop_oneof![
        4 => prop::collection::vec(rec(), 1..5).prop_map(Op::Add),
        2 => prop::collection::vec(rec(), 1..4).prop_map(Op::Upsert),
        2 => prop::collection::vec(upd, 1..4).prop_map(Op::Update),
        1 => prop::collection::vec(0u8..12, 1..3).prop_map(Op::Delete),
        1 => where_().prop_map(Op::DeleteWhere),
        3 => (
            prop::option::of(prop::collection::vec(0u8..12, 1..4)),
            prop::option::of(where_()),
            prop::option::of(doc_filter()),
            prop::option::of(0usize..5),
            0usize..3
        )
            .prop_map(|(i, w, d, l, o)| Op::Get(i, w, d, l, o)),
        3 => (emb(), 1usize..6, prop::option::of(where_()), prop::option::of(doc_filter()))
            .prop_map(|(q, k, w, d)| Op::Query(q, k, w, d)),
        1 => Just(Op::Count),
        3 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// The reference: records in collection order.
#[derive(Default)]
struct Model {
    recs: Vec<Rec>,
}

fn parse_meta(v: &Option<Value>) -> Option<BTreeMap<String, Option<MetaValue>>> {
    v.as_ref()
        .map(|v| indigo_types::metadata::metadata_from_json(v, true).unwrap())
}

impl Model {
    fn find(&self, id: &str) -> Option<usize> {
        self.recs.iter().position(|r| r.id == id)
    }

    fn insert(&mut self, id: String, e: &[f32], d: &Option<String>, m: &Option<Value>) {
        let meta: Option<Metadata> =
            parse_meta(m).map(|m| m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect());
        self.recs.push(Rec {
            id,
            emb: e.to_vec(),
            doc: d.clone(),
            meta: meta.filter(|m| !m.is_empty()),
        });
    }

    fn update(&mut self, i: usize, e: Option<&Vec<f32>>, d: &Option<String>, m: &Option<Value>) {
        let r = &mut self.recs[i];
        if let Some(e) = e {
            r.emb = e.clone();
        }
        if d.is_some() {
            r.doc = d.clone();
        }
        if let Some(changes) = parse_meta(m) {
            let mut cur = r.meta.take().unwrap_or_default();
            for (k, v) in changes {
                match v {
                    Some(v) => cur.insert(k, v),
                    None => cur.remove(&k),
                };
            }
            r.meta = (!cur.is_empty()).then_some(cur);
        }
    }

    fn select(&self, ids: &Option<Vec<u8>>, w: &Option<Value>, d: &Option<Value>) -> Vec<&Rec> {
        let w = w.as_ref().map(|w| Where::parse(w).unwrap());
        let d = d.as_ref().map(|d| DocFilter::parse(d).unwrap());
        self.recs
            .iter()
            .filter(|r| {
                ids.as_ref()
                    .is_none_or(|ids| ids.iter().any(|i| id(*i) == r.id))
            })
            .filter(|r| {
                w.as_ref()
                    .is_none_or(|w| w.matches(r.meta.as_ref(), r.doc.as_deref()))
            })
            .filter(|r| d.as_ref().is_none_or(|d| d.matches(r.doc.as_deref())))
            .collect()
    }
}

fn distance(space: indigo::Space, a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    match space {
        indigo::Space::L2 => a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum(),
        indigo::Space::Ip => 1.0 - dot,
        indigo::Space::Cosine => {
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (na * nb)
        }
    }
}

fn selection(ids: &Option<Vec<u8>>, w: &Option<Value>, d: &Option<Value>) -> Selection {
    Selection {
        ids: ids.as_ref().map(|v| v.iter().map(|i| id(*i)).collect()),
        where_: w.as_ref().map(|w| Where::parse(w).unwrap()),
        where_document: d.as_ref().map(|d| DocFilter::parse(d).unwrap()),
    }
}

fn open(dir: &std::path::Path, background: bool) -> (Indigo, Collection) {
    let db = Indigo::open_with(
        dir,
        Options {
            background_compaction: background,
            exact_search: true,
            ..Default::default()
        },
    )
    .unwrap();
    let c = db
        .get_collection("default_tenant", "default_database", "model")
        .unwrap();
    (db, c)
}

/// The first record of each id: a request's ids must be unique.
fn unique<T>(
    recs: Vec<(u8, T, Option<String>, Option<Value>)>,
) -> Vec<(u8, T, Option<String>, Option<Value>)> {
    let mut seen = std::collections::HashSet::new();
    recs.into_iter().filter(|r| seen.insert(r.0)).collect()
}

/// An add or upsert of `recs`.
fn new_batch(recs: &[NewRec]) -> Batch {
    Batch::new(
        recs.iter().map(|r| id(r.0)).collect(),
        recs.iter().map(|r| r.1.clone()).collect(),
    )
    .documents(recs.iter().map(|r| r.2.clone()).collect())
    .metadatas_json(
        recs.iter()
            .map(|r| r.3.clone().unwrap_or(Value::Null))
            .collect(),
    )
    .unwrap()
}

fn run(ops: Vec<Op>, space: indigo::Space, background: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Indigo::open(dir.path()).unwrap();
        db.create_collection(
            "default_tenant",
            "default_database",
            "model",
            None,
            Some(json!({"hnsw": {"space": space.name()}})),
        )
        .unwrap();
    }
    let (mut db, mut c) = open(dir.path(), background);
    let mut m = Model::default();
    let all_inc = Include {
        embeddings: true,
        documents: true,
        metadatas: true,
        uris: false,
        distances: true,
    };
    for op in ops {
        match op {
            Op::Add(recs) => {
                let recs = unique(recs);
                let b = new_batch(&recs);
                c.add(b).unwrap();
                for r in &recs {
                    if m.find(&id(r.0)).is_none() {
                        m.insert(id(r.0), &r.1, &r.2, &r.3);
                    }
                }
            }
            Op::Upsert(recs) => {
                let recs = unique(recs);
                let b = new_batch(&recs);
                c.upsert(b).unwrap();
                for r in &recs {
                    match m.find(&id(r.0)) {
                        Some(i) => m.update(i, Some(&r.1), &r.2, &r.3),
                        None => m.insert(id(r.0), &r.1, &r.2, &r.3),
                    }
                }
            }
            Op::Update(recs) => {
                let recs = unique(recs);
                // One request gives a field for every record or for none.
                let with_emb = recs.iter().all(|r| r.1.is_some());
                let b = Batch {
                    ids: recs.iter().map(|r| id(r.0)).collect(),
                    embeddings: with_emb
                        .then(|| recs.iter().map(|r| r.1.clone().unwrap()).collect()),
                    documents: Some(recs.iter().map(|r| r.2.clone()).collect()),
                    ..Default::default()
                }
                .metadatas_json(
                    recs.iter()
                        .map(|r| r.3.clone().unwrap_or(Value::Null))
                        .collect(),
                )
                .unwrap();
                c.update(b).unwrap();
                for r in &recs {
                    if let Some(i) = m.find(&id(r.0)) {
                        m.update(i, r.1.as_ref().filter(|_| with_emb), &r.2, &r.3);
                    }
                }
            }
            Op::Delete(ids) => {
                let sel = selection(&Some(ids.clone()), &None, &None);
                let n = c.delete(&sel).unwrap();
                let before = m.recs.len();
                m.recs.retain(|r| !ids.iter().any(|i| id(*i) == r.id));
                prop_assert_eq!(n as usize, before - m.recs.len());
            }
            Op::DeleteWhere(w) => {
                let n = c
                    .delete(&selection(&None, &Some(w.clone()), &None))
                    .unwrap();
                let gone: Vec<String> = m
                    .select(&None, &Some(w), &None)
                    .iter()
                    .map(|r| r.id.clone())
                    .collect();
                m.recs.retain(|r| !gone.contains(&r.id));
                prop_assert_eq!(n as usize, gone.len());
            }
            Op::Get(ids, w, d, limit, offset) => {
                let got = c
                    .get(&GetRequest {
                        selection: selection(&ids, &w, &d),
                        limit,
                        offset,
                        include: all_inc,
                    })
                    .unwrap();
                let want: Vec<&Rec> = m
                    .select(&ids, &w, &d)
                    .into_iter()
                    .skip(offset)
                    .take(limit.unwrap_or(usize::MAX))
                    .collect();
                let want_ids: Vec<&str> = want.iter().map(|r| r.id.as_str()).collect();
                prop_assert_eq!(&got.ids, &want_ids, "get {:?} {:?} {:?}", ids, w, d);
                for (i, r) in want.iter().enumerate() {
                    prop_assert_eq!(&*got.embeddings.as_ref().unwrap()[i], &r.emb[..]);
                    prop_assert_eq!(&got.documents.as_ref().unwrap()[i], &r.doc);
                    prop_assert_eq!(&got.metadatas.as_ref().unwrap()[i], &r.meta);
                }
            }
            Op::Query(q, k, w, d) => {
                let mut req = QueryRequest::new(vec![q.clone()], k);
                req.selection = selection(&None, &w, &d);
                req.include = all_inc;
                let got = c.query(&req).unwrap().remove(0);
                let mut want: Vec<(f64, usize, &Rec)> = m
                    .select(&None, &w, &d)
                    .into_iter()
                    .map(|r| (distance(space, &q, &r.emb), 0, r))
                    .collect();
                want.sort_by(|a, b| a.0.total_cmp(&b.0));
                want.truncate(k);
                prop_assert_eq!(got.ids.len(), want.len(), "query {:?} {:?}", w, d);
                let dists = got.distances.as_ref().unwrap();
                for (i, (wd, _, r)) in want.iter().enumerate() {
                    prop_assert!(
                        (dists[i] as f64 - wd).abs() < 1e-5,
                        "distance {} vs {}",
                        dists[i],
                        wd
                    );
                    if got.ids[i] != r.id {
                        // Only a tie may reorder.
                        let j = want.iter().position(|x| x.2.id == got.ids[i]);
                        prop_assert!(
                            j.is_some_and(|j| (want[j].0 - wd).abs() < 1e-5),
                            "order differs at {}",
                            i
                        );
                    }
                }
            }
            Op::Count => prop_assert_eq!(c.count().unwrap() as usize, m.recs.len()),
            Op::Compact => db.compact().unwrap(),
            Op::Reopen => {
                drop(c);
                drop(db);
                (db, c) = open(dir.path(), background);
            }
        }
    }
    prop_assert_eq!(c.count().unwrap() as usize, m.recs.len());
    Ok(())
}

fn space() -> impl Strategy<Value = indigo::Space> {
    prop::sample::select(vec![
        indigo::Space::L2,
        indigo::Space::Cosine,
        indigo::Space::Ip,
    ])
}

/// `PROPTEST_CASES` raises the count for a longer hunt; CI runs the default.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    /// Compaction only when the sequence asks: reads mix the folded state with
    /// the log tail.
    #[test]
    fn matches_the_model_with_explicit_compaction(ops in prop::collection::vec(op(), 1..40), space in space()) {
        run(ops, space, false)?;
    }

    /// The background compactor races the reads.
    #[test]
    fn matches_the_model_with_background_compaction(ops in prop::collection::vec(op(), 1..40), space in space()) {
        run(ops, space, true)?;
    }
}

#[allow(dead_code)]
fn unused(_: Scalar) {}
