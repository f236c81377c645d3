//! With the HNSW index (not exact search): recall@10 against brute force on the
//! model after random adds, updates, upserts and deletes, with and without
//! filters, while the background compactor runs; get and count stay exact.

use std::collections::HashMap;

use indigo::{Batch, GetRequest, Indigo, QueryRequest, Selection, Where};
use rand::{Rng, SeedableRng};
use serde_json::json;

const DIM: usize = 24;

fn point(rng: &mut impl Rng, centers: &[Vec<f32>]) -> Vec<f32> {
    let c = &centers[rng.gen_range(0..centers.len())];
    c.iter().map(|x| x + rng.gen_range(-0.3f32..0.3)).collect()
}

#[test]
fn recall_and_exact_filters_under_random_changes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let centers: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let db = Indigo::open(dir.path()).unwrap();
    let c = db
        .create_collection("default_tenant", "default_database", "hnsw", None, None)
        .unwrap();
    // The model: id → (vector, group).
    let mut model: HashMap<String, (Vec<f32>, i64)> = HashMap::new();
    let mut next = 0;
    for _ in 0..8 {
        let n = 500;
        let ids: Vec<String> = (next..next + n).map(|i| format!("r{i}")).collect();
        let vecs: Vec<Vec<f32>> = (0..n).map(|_| point(&mut rng, &centers)).collect();
        let groups: Vec<i64> = (next..next + n).map(|i| (i % 10) as i64).collect();
        c.add(
            Batch::new(ids.clone(), vecs.clone())
                .metadatas_json(groups.iter().map(|g| json!({"g": g})).collect())
                .unwrap(),
        )
        .unwrap();
        for i in 0..n {
            model.insert(ids[i].clone(), (vecs[i].clone(), groups[i]));
        }
        next += n;
    }
    let mut keys: Vec<String> = model.keys().cloned().collect();
    keys.sort();
    // Move 500 vectors, delete 500 records, upsert 300 (some new, some moved).
    let moved: Vec<String> = (0..500)
        .map(|_| keys[rng.gen_range(0..keys.len())].clone())
        .collect();
    let mut moved_unique = moved.clone();
    moved_unique.sort();
    moved_unique.dedup();
    let vecs: Vec<Vec<f32>> = moved_unique
        .iter()
        .map(|_| point(&mut rng, &centers))
        .collect();
    c.update(Batch::new(moved_unique.clone(), vecs.clone()))
        .unwrap();
    for (id, v) in moved_unique.iter().zip(&vecs) {
        model.get_mut(id).unwrap().0 = v.clone();
    }
    let mut gone: Vec<String> = (0..500)
        .map(|_| keys[rng.gen_range(0..keys.len())].clone())
        .collect();
    gone.sort();
    gone.dedup();
    c.delete(&Selection {
        ids: Some(gone.clone()),
        ..Default::default()
    })
    .unwrap();
    for id in &gone {
        model.remove(id);
    }
    let ups: Vec<String> = (0..300)
        .map(|i| {
            if i % 2 == 0 {
                format!("r{}", next + i)
            } else {
                keys[rng.gen_range(0..keys.len())].clone()
            }
        })
        .collect();
    let mut ups_unique = ups.clone();
    ups_unique.sort();
    ups_unique.dedup();
    let vecs: Vec<Vec<f32>> = ups_unique
        .iter()
        .map(|_| point(&mut rng, &centers))
        .collect();
    c.upsert(
        Batch::new(ups_unique.clone(), vecs.clone())
            .metadatas_json(ups_unique.iter().map(|_| json!({"g": 3})).collect())
            .unwrap(),
    )
    .unwrap();
    for (id, v) in ups_unique.iter().zip(&vecs) {
        model.insert(id.clone(), (v.clone(), 3));
    }

    // Check twice: while the compactor may still be folding, and after.
    for round in 0..2 {
        if round == 1 {
            db.compact().unwrap();
        }
        assert_eq!(c.count().unwrap() as usize, model.len());
        let g3 = c
            .get(&GetRequest {
                selection: Selection {
                    where_: Some(Where::parse(&json!({"g": 3})).unwrap()),
                    ..Default::default()
                },
                ..Default::default()
            })
            .unwrap();
        let mut want: Vec<&String> = model
            .iter()
            .filter(|(_, v)| v.1 == 3)
            .map(|(k, _)| k)
            .collect();
        want.sort();
        let mut got: Vec<&String> = g3.ids.iter().collect();
        got.sort();
        assert_eq!(got, want);

        for (filter, pick) in [
            (None, Box::new(|_: i64| true) as Box<dyn Fn(i64) -> bool>),
            (Some(json!({"g": 3})), Box::new(|g| g == 3)),
            (
                Some(json!({"g": {"$in": [1, 2, 5, 7, 9]}})),
                Box::new(|g| [1, 2, 5, 7, 9].contains(&g)),
            ),
        ] {
            let mut hits = 0;
            let mut total = 0;
            for _ in 0..100 {
                let q = point(&mut rng, &centers);
                let mut exact: Vec<(f32, &String)> = model
                    .iter()
                    .filter(|(_, v)| pick(v.1))
                    .map(|(k, v)| (v.0.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum(), k))
                    .collect();
                exact.sort_by(|a, b| a.0.total_cmp(&b.0));
                exact.truncate(10);
                let mut req = QueryRequest::new(vec![q], 10);
                req.selection.where_ = filter.as_ref().map(|f| Where::parse(f).unwrap());
                let got = c.query(&req).unwrap().remove(0);
                assert_eq!(got.ids.len(), exact.len());
                for id in &got.ids {
                    assert!(pick(model[id].1), "{id} does not match the filter");
                }
                total += exact.len();
                hits += exact.iter().filter(|e| got.ids.contains(e.1)).count();
            }
            let recall = hits as f64 / total as f64;
            assert!(
                recall >= 0.95,
                "round {round} filter {filter:?}: recall@10 {recall:.3}"
            );
        }
    }
}
