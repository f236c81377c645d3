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
