//! Searches run while other threads insert and delete; every answer is well-formed,
//! and the final index agrees with an exact flat index.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use indigo_index::{FlatIndex, Hnsw, HnswParams, Space};
use rand::{Rng, SeedableRng};

fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect()
}

#[test]
fn concurrent_inserts_deletes_and_searches_agree_with_flat() {
    let dim = 32;
    let data = random_vectors(8000, dim, 5);
    let mut p = HnswParams::new(Space::L2, dim);
    p.ef_search = 128;
    let idx = Arc::new(Hnsw::new(p));
    for (i, v) in data.iter().enumerate().take(4000) {
        idx.insert(i as u32, v).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let inserter = {
            let (idx, data) = (idx.clone(), &data);
            s.spawn(move || {
                for (i, v) in data.iter().enumerate().skip(4000) {
                    idx.insert(i as u32, v).unwrap();
                }
            })
        };
        let deleter = {
            let idx = idx.clone();
            s.spawn(move || {
                for i in 0..1500u32 {
                    assert!(idx.delete(i).unwrap());
                    if i % 500 == 499 {
                        idx.repair().unwrap();
                    }
                }
            })
        };
        for t in 0..2 {
            let (idx, data, done) = (idx.clone(), &data, done.clone());
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                let mut n = 0;
                while !done.load(Ordering::Relaxed) || n < 100 {
                    let q = &data[rng.gen_range(0..data.len())];
                    let res = idx.search(q, 10, None).unwrap();
                    assert_eq!(res.len(), 10);
                    assert!(res.windows(2).all(|w| w[0].distance <= w[1].distance));
                    let mut labels: Vec<u32> = res.iter().map(|r| r.label).collect();
                    labels.sort_unstable();
                    labels.dedup();
                    assert_eq!(labels.len(), 10, "duplicate labels in one answer");
                    n += 1;
                }
            });
        }
        inserter.join().unwrap();
        deleter.join().unwrap();
        done.store(true, Ordering::Relaxed);
    });
    idx.repair().unwrap();

    let mut flat = FlatIndex::new(Space::L2, dim);
    for (i, v) in data.iter().enumerate().skip(1500) {
        flat.insert(i as u32, v).unwrap();
    }
    assert_eq!(idx.len(), flat.len());
    let queries = random_vectors(200, dim, 99);
    let got: Vec<Vec<u32>> = queries
        .iter()
        .map(|q| {
            idx.search(q, 10, None)
                .unwrap()
                .iter()
                .map(|n| n.label)
                .collect()
        })
        .collect();
    let want: Vec<Vec<u32>> = queries
        .iter()
        .map(|q| {
            flat.search(q, 10, None)
                .unwrap()
                .iter()
                .map(|n| n.label)
                .collect()
        })
        .collect();
    for g in &got {
        assert!(g.iter().all(|&l| l >= 1500), "a deleted label came back");
    }
    let r = common::recall(&got, &want, 10);
    eprintln!("recall vs flat after concurrent churn: {r:.4}");
    assert!(r >= 0.9, "recall vs flat after concurrent churn: {r}");
}

#[test]
fn bad_vectors_are_rejected_and_change_nothing() {
    use indigo_index::IndexError;
    let idx = Hnsw::new(HnswParams::new(Space::L2, 4));
    idx.insert(1, &[0.0, 1.0, 2.0, 3.0]).unwrap();
    assert!(matches!(
        idx.insert(2, &[0.0; 3]),
        Err(IndexError::Dimension {
            expected: 4,
            got: 3
        })
    ));
    assert!(matches!(
        idx.insert(3, &[0.0, f32::NAN, 0.0, 0.0]),
        Err(IndexError::NotFinite)
    ));
    assert!(matches!(
        idx.insert(4, &[f32::INFINITY; 4]),
        Err(IndexError::NotFinite)
    ));
    assert_eq!(idx.len(), 1, "rejected inserts left nothing behind");
    assert!(matches!(
        idx.search(&[0.0; 5], 1, None),
        Err(IndexError::Dimension { .. })
    ));
    assert!(matches!(
        idx.search(&[f32::NAN; 4], 1, None),
        Err(IndexError::NotFinite)
    ));
    let mut flat = FlatIndex::new(Space::L2, 4);
    assert!(matches!(
        flat.insert(1, &[0.0; 2]),
        Err(IndexError::Dimension { .. })
    ));
    assert!(matches!(
        flat.search(&[f32::NAN; 4], 1, None),
        Err(IndexError::NotFinite)
    ));
}

/// Batch inserts racing repairs and searches: inserts and repairs once took the
/// slot table and the free list in opposite orders and could deadlock. A
/// watchdog turns a hang into a failure.
#[test]
fn batch_inserts_and_repairs_do_not_deadlock() {
    let finished = Arc::new(AtomicBool::new(false));
    {
        let finished = finished.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(120));
            if !finished.load(Ordering::Relaxed) {
                eprintln!("batch inserts and repairs deadlocked");
                std::process::exit(101);
            }
        });
    }
    const B: u32 = 40;
    let dim = 8;
    let data = random_vectors(B as usize, dim, 9);
    let idx = Arc::new(Hnsw::new(HnswParams::new(Space::L2, dim)));
    let rounds = 3000u32;
    std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                idx.search(&data[0], 5, None).unwrap();
            }
        });
        for round in 0..rounds {
            let base = round * B;
            let items: Vec<(u32, &[f32])> = data
                .iter()
                .enumerate()
                .map(|(i, v)| (base + i as u32, &v[..]))
                .collect();
            std::thread::scope(|s| {
                s.spawn(|| idx.insert_parallel(&items, 2).unwrap());
                s.spawn(|| {
                    if round > 0 {
                        for i in 0..B {
                            idx.delete(base - B + i).unwrap();
                        }
                    }
                    idx.repair().unwrap();
                });
            });
        }
        finished.store(true, Ordering::Relaxed);
    });
    assert_eq!(idx.len(), B as usize, "the last round's vectors are live");
}
