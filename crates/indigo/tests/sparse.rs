//! Sparse vector search through the embedded API, against a model: top-k by dot
//! product equals brute force over what the collection holds, whether the
//! records are still in the log tail or folded into the index, through
//! updates, deletes and a reopen, with and without a filter; BM25 keys scale
//! query weights by IDF as a reference implementation here computes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use indigo::{
    Collection, Include, Indigo, MetaValue, RecordOp, Scalar, Selection, SparseQueryRequest,
    SparseVector, Where, WriteKind,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

const DIMS: u32 = 300;

/// The model: id → (group, plain sparse vector, BM25 sparse vector).
type Model = BTreeMap<String, (i64, SparseVector, SparseVector)>;

fn random_sparse(rng: &mut impl Rng) -> SparseVector {
    let n = rng.gen_range(1..12);
    let mut idx: Vec<u32> = (0..n)
        // Skewed: low dimensions are common, as frequent terms are.
        .map(|_| (rng.gen::<f32>().powi(3) * DIMS as f32) as u32)
        .collect();
    idx.sort_unstable();
    idx.dedup();
    let values = idx.iter().map(|_| rng.gen_range(0.05f32..3.0)).collect();
    SparseVector {
        indices: idx,
        values,
        tokens: None,
    }
}

fn op(id: &str, g: i64, sp: &SparseVector, bm: &SparseVector) -> RecordOp {
    let mut m = BTreeMap::new();
    m.insert("g".to_string(), Some(MetaValue::Scalar(Scalar::Int(g))));
    m.insert("sp".to_string(), Some(MetaValue::Sparse(sp.clone())));
    m.insert("bm".to_string(), Some(MetaValue::Sparse(bm.clone())));
    RecordOp {
        id: id.to_string(),
        embedding: Some(Arc::from(vec![g as f32, 1.0])),
        metadata: Some(m),
        ..Default::default()
    }
}

fn schema() -> serde_json::Value {
    let sparse = |bm25: bool| {
        json!({"sparse_vector": {"sparse_vector_index": {"enabled": true, "config": {
            "embedding_function": {"type": "unknown"}, "bm25": bm25}}}})
    };
    json!({"schema": {"keys": {"sp": sparse(false), "bm": sparse(true)}}})
}

/// Reference BM25 IDF (Chroma's definition; see docs/sparse.md).
fn idf(n: usize, nt: usize) -> f32 {
    let (n, nt) = (n as f32, nt as f32);
    (1.0 + (n - nt + 0.5) / (nt + 0.5)).ln()
}

/// The expected (id, distance) list for a query on `key`.
fn expected(
    m: &Model,
    key: &str,
    q: &SparseVector,
    k: usize,
    group: Option<i64>,
) -> Vec<(String, f32)> {
    let vec_of = |e: &(i64, SparseVector, SparseVector)| -> SparseVector {
        if key == "sp" {
            e.1.clone()
        } else {
            e.2.clone()
        }
    };
    let mut q = q.clone();
    if key == "bm" {
        for (d, w) in q.indices.iter().zip(q.values.iter_mut()) {
            let nt = m.values().filter(|e| vec_of(e).indices.contains(d)).count();
            *w *= idf(m.len(), nt);
        }
    }
    let mut all: Vec<(String, f32)> = m
        .iter()
        .filter(|(_, e)| group.is_none_or(|g| e.0 == g))
        .filter(|(_, e)| vec_of(e).indices.iter().any(|d| q.indices.contains(d)))
        .map(|(id, e)| (id.clone(), 1.0 - vec_of(e).dot(&q)))
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1));
    all.truncate(k);
    all
}

fn check(c: &Collection, m: &Model, rng: &mut impl Rng, when: &str) {
    for i in 0..40 {
        let key = if i % 2 == 0 { "sp" } else { "bm" };
        let q = random_sparse(rng);
        let k = rng.gen_range(1..25);
        let group = (i % 3 == 0).then(|| rng.gen_range(0..4));
        let mut req = SparseQueryRequest {
            key: key.into(),
            vector: q.clone(),
            n_results: k,
            selection: Selection::default(),
            include: Include {
                distances: true,
                ..Default::default()
            },
        };
        if let Some(g) = group {
            req.selection.where_ = Some(Where::parse(&json!({"g": g})).unwrap());
        }
        let got = c.query_sparse(&req).unwrap();
        let want = expected(m, key, &q, k, group);
        let dists = got.distances.clone().unwrap();
        assert_eq!(
            got.ids.len(),
            want.len(),
            "{when}: {key} query {q:?} k={k} group={group:?}: got {:?}, want {want:?}",
            got.ids
        );
        for (j, (id, d)) in want.iter().enumerate() {
            assert!(
                (dists[j] - d).abs() < 1e-3 * (1.0 + d.abs()),
                "{when}: {key} rank {j}: got {} at {}, want {id} at {d}",
                got.ids[j],
                dists[j]
            );
            // Where scores are apart, the records are the same ones.
            let apart = want.get(j + 1).is_none_or(|n| (n.1 - d).abs() > 1e-3)
                && (j == 0 || (want[j - 1].1 - d).abs() > 1e-3);
            if apart {
                assert_eq!(&got.ids[j], id, "{when}: {key} rank {j}");
            }
        }
    }
}

#[test]
fn sparse_top_k_equals_brute_force_through_changes_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let mut m: Model = BTreeMap::new();
    {
        let db = Indigo::open(dir.path()).unwrap();
        let c = db
            .create_collection(
                "default_tenant",
                "default_database",
                "sparse",
                None,
                Some(schema()),
            )
            .unwrap();
        for batch in 0..6 {
            let mut ops = Vec::new();
            for i in 0..500 {
                let id = format!("r{}", batch * 500 + i);
                let g = rng.gen_range(0..4);
                let (sp, bm) = (random_sparse(&mut rng), random_sparse(&mut rng));
                ops.push(op(&id, g, &sp, &bm));
                m.insert(id, (g, sp, bm));
            }
            c.write(WriteKind::Add, ops).unwrap();
        }
        // Whatever part the compactor has folded so far, the rest in the tail.
        check(&c, &m, &mut rng, "after adds");
        db.compact().unwrap();
        check(&c, &m, &mut rng, "compacted");

        // Updates (new vectors), upserts, deletes, a record losing its vector:
        // first answered from the tail over the index, then folded.
        let ids: Vec<String> = m.keys().cloned().collect();
        let mut ops = Vec::new();
        for id in ids.iter().step_by(7) {
            let (sp, bm) = (random_sparse(&mut rng), random_sparse(&mut rng));
            let g = m[id].0;
            ops.push(op(id, g, &sp, &bm));
            m.insert(id.clone(), (g, sp, bm));
        }
        c.write(WriteKind::Update, ops).unwrap();
        let deleted: Vec<String> = ids.iter().skip(3).step_by(5).cloned().collect();
        c.delete(&Selection {
            ids: Some(deleted.clone()),
            ..Default::default()
        })
        .unwrap();
        for id in &deleted {
            m.remove(id);
        }
        let mut ops = Vec::new();
        for i in 0..300 {
            let id = format!("u{i}");
            let (sp, bm) = (random_sparse(&mut rng), random_sparse(&mut rng));
            ops.push(op(&id, 1, &sp, &bm));
            m.insert(id, (1, sp, bm));
        }
        c.write(WriteKind::Upsert, ops).unwrap();
        check(&c, &m, &mut rng, "changes in the tail");
        db.compact().unwrap();
        check(&c, &m, &mut rng, "changes compacted");
    }
    let db = Indigo::open(dir.path()).unwrap();
    let c = db
        .get_collection("default_tenant", "default_database", "sparse")
        .unwrap();
    check(&c, &m, &mut rng, "reopened");
}

#[test]
fn a_key_without_a_sparse_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open(dir.path()).unwrap();
    let c = db
        .create_collection("default_tenant", "default_database", "plain", None, None)
        .unwrap();
    let req = SparseQueryRequest {
        key: "sp".into(),
        vector: SparseVector {
            indices: vec![1],
            values: vec![1.0],
            tokens: None,
        },
        n_results: 3,
        selection: Selection::default(),
        include: Include::default(),
    };
    let e = c.query_sparse(&req).unwrap_err().to_string();
    assert!(e.contains("indexing is disabled"), "{e}");
    // An unsorted query vector is refused too.
    let c = db
        .create_collection(
            "default_tenant",
            "default_database",
            "sparse",
            None,
            Some(schema()),
        )
        .unwrap();
    let mut bad = req.clone();
    bad.vector.indices = vec![2, 1];
    bad.vector.values = vec![1.0, 1.0];
    let e = c.query_sparse(&bad).unwrap_err().to_string();
    assert!(e.contains("ascending"), "{e}");
    assert!(c.query_sparse(&req).unwrap().ids.is_empty());
}

/// Lowercase alphanumeric runs of 2–40 characters.
fn tokenize(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| (2..=40).contains(&t.chars().count()))
        .map(str::to_lowercase)
        .filter(|t| {
            !["the", "of", "or", "and", "to", "in", "an", "by", "for"].contains(&t.as_str())
        })
        .collect()
}

#[test]
fn bm25_on_real_glosses_equals_a_reference() {
    // 4,000 real WordNet glosses (testdata/wordnet/glosses.txt), weights as
    // Chroma's BM25 embedding function makes them (avg_doc_length set to the mean).
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wordnet/glosses.txt"),
    )
    .unwrap();
    let docs: Vec<Vec<String>> = text.lines().map(tokenize).collect();
    let avgdl = docs.iter().map(Vec::len).sum::<usize>() as f32 / docs.len() as f32;
    let mut dict: std::collections::HashMap<String, u32> = Default::default();
    let mut weights = |toks: &[String], grow: bool| -> SparseVector {
        let mut tf: BTreeMap<u32, f32> = BTreeMap::new();
        for t in toks {
            let n = dict.len() as u32;
            let id = if grow {
                *dict.entry(t.clone()).or_insert(n)
            } else {
                dict[t]
            };
            *tf.entry(id).or_default() += 1.0;
        }
        let len = toks.len() as f32;
        let (k1, b) = (1.2f32, 0.75f32);
        SparseVector {
            indices: tf.keys().copied().collect(),
            values: tf
                .values()
                .map(|&f| f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * len / avgdl)))
                .collect(),
            tokens: None,
        }
    };
    let vecs: Vec<SparseVector> = docs.iter().map(|d| weights(d, true)).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let queries: Vec<SparseVector> = (0..150)
        .filter_map(|_| {
            let d = &docs[rng.gen_range(0..docs.len())];
            if d.is_empty() {
                return None;
            }
            let n = rng.gen_range(1..=3usize).min(d.len());
            let mut q: Vec<String> = (0..n)
                .map(|_| d[rng.gen_range(0..d.len())].clone())
                .collect();
            q.sort();
            q.dedup();
            Some(weights(&q, false))
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open(dir.path()).unwrap();
    let c = db
        .create_collection(
            "default_tenant",
            "default_database",
            "glosses",
            None,
            Some(schema()),
        )
        .unwrap();
    let mut live: BTreeMap<String, SparseVector> = BTreeMap::new();
    for (chunk_no, chunk) in vecs.chunks(500).enumerate() {
        let ops = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let id = format!("g{}", chunk_no * 500 + i);
                live.insert(id.clone(), v.clone());
                op(&id, 0, v, v)
            })
            .collect();
        c.write(WriteKind::Add, ops).unwrap();
    }
    let check = |live: &BTreeMap<String, SparseVector>, when: &str| {
        let n = live.len();
        for q in &queries {
            let mut scaled = q.clone();
            for (d, w) in scaled.indices.iter().zip(scaled.values.iter_mut()) {
                let nt = live
                    .values()
                    .filter(|v| v.indices.binary_search(d).is_ok())
                    .count();
                *w *= idf(n, nt);
            }
            let mut want: Vec<(f32, &String)> = live
                .iter()
                .filter(|(_, v)| v.indices.iter().any(|d| q.indices.binary_search(d).is_ok()))
                .map(|(id, v)| (1.0 - v.dot(&scaled), id))
                .collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0));
            let got = c
                .query_sparse(&SparseQueryRequest {
                    key: "bm".into(),
                    vector: q.clone(),
                    n_results: 10,
                    selection: Selection::default(),
                    include: Include {
                        distances: true,
                        ..Default::default()
                    },
                })
                .unwrap();
            let dists = got.distances.unwrap();
            assert_eq!(got.ids.len(), want.len().min(10), "{when}");
            for (j, (d, id)) in want.iter().take(10).enumerate() {
                assert!(
                    (dists[j] - d).abs() < 1e-4 * (1.0 + d.abs()),
                    "{when}: rank {j}"
                );
                let tied = want
                    .iter()
                    .enumerate()
                    .any(|(i, w)| i != j && (w.0 - d).abs() < 1e-4);
                if !tied {
                    assert_eq!(&&got.ids[j], id, "{when}: rank {j}");
                }
            }
        }
    };
    check(&live, "written");
    db.compact().unwrap();
    check(&live, "compacted");
    let gone: Vec<String> = live.keys().step_by(9).cloned().collect();
    c.delete(&Selection {
        ids: Some(gone.clone()),
        ..Default::default()
    })
    .unwrap();
    for g in &gone {
        live.remove(g);
    }
    check(&live, "after deletes");
}
