//! Recall on real embeddings (wordnet-minilm-10k, cosine), unfiltered, after
//! deletes and re-inserts, and filtered at several selectivities.

mod common;

use common::{recall, wordnet};
use indigo_index::{FlatIndex, Hnsw, HnswParams, RoaringBitmap, Space};
use rand::seq::SliceRandom;
use rand::SeedableRng;

fn params() -> HnswParams {
    let mut p = HnswParams::new(Space::Cosine, 384);
    p.max_neighbors = 16;
    p.ef_construction = 100;
    p.ef_search = 64;
    p
}

fn build(w: &common::Wordnet) -> Hnsw {
    let idx = Hnsw::new(params());
    let items: Vec<(u32, &[f32])> = w
        .base
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, v.as_slice()))
        .collect();
    // One thread: the graph, and so every recall figure below, is the same on
    // every run (a parallel build's graph depends on the interleaving, and
    // recall floors became coin flips on a loaded machine).
    idx.insert_parallel(&items, 1).unwrap();
    idx
}

fn search_all(
    idx: &Hnsw,
    w: &common::Wordnet,
    k: usize,
    allow: Option<&RoaringBitmap>,
) -> Vec<Vec<u32>> {
    w.queries
        .iter()
        .map(|q| {
            idx.search(q, k, allow)
                .unwrap()
                .into_iter()
                .map(|n| n.label)
                .collect()
        })
        .collect()
}

#[test]
fn recall_at_10_on_wordnet_and_after_deleting_and_reinserting_30_percent() {
    let w = wordnet();
    let idx = build(&w);
    let r = recall(&search_all(&idx, &w, 10, None), &w.truth, 10);
    eprintln!("recall@10 = {r:.4}");
    assert!(r >= 0.95, "recall@10 {r}");

    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut ids: Vec<u32> = (0..w.base.len() as u32).collect();
    ids.shuffle(&mut rng);
    let gone = &ids[..w.base.len() * 3 / 10];
    for &id in gone {
        assert!(idx.delete(id).unwrap());
    }
    // Deleted vectors never come back from a search.
    for q in w.queries.iter().take(50) {
        for n in idx.search(q, 10, None).unwrap() {
            assert!(!gone.contains(&n.label));
        }
    }
    let before = idx.stats();
    let freed = idx.repair().unwrap();
    assert_eq!(freed, gone.len());
    let items: Vec<(u32, &[f32])> = gone
        .iter()
        .map(|&i| (i, w.base[i as usize].as_slice()))
        .collect();
    idx.insert_parallel(&items, 2).unwrap();
    let after = idx.stats();
    assert_eq!(after.live, w.base.len());
    assert_eq!(
        after.slots, before.slots,
        "freed slots are reused, the index does not grow"
    );
    let r = recall(&search_all(&idx, &w, 10, None), &w.truth, 10);
    eprintln!("recall@10 after delete + reinsert = {r:.4}");
    assert!(r >= 0.95, "recall@10 after delete/reinsert {r}");
}

#[test]
fn filtered_recall_at_1_10_50_percent_with_exactly_k_results() {
    let w = wordnet();
    let idx = build(&w);
    let mut flat = FlatIndex::new(Space::Cosine, 384);
    for (i, v) in w.base.iter().enumerate() {
        flat.insert(i as u32, v).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let n = w.base.len() as u32;
    for (pct, allow) in [
        (1, {
            let mut ids: Vec<u32> = (0..n).collect();
            ids.shuffle(&mut rng);
            ids[..(n / 100) as usize]
                .iter()
                .copied()
                .collect::<RoaringBitmap>()
        }),
        (5, (0..n).filter(|i| i % 20 == 7).collect()),
        (10, (0..n).filter(|i| i % 10 == 3).collect()),
        (50, (0..n).filter(|i| i % 2 == 0).collect()),
    ] {
        // The default policy (on this 10k set 1%, 5% and 10% are at most the
        // 3000-id cut-off and scanned exactly; 50% walks the graph), then the
        // walk forced with the cut-off 0: ACORN's at 1%, the ordinary walk from
        // 5% up.
        for (cutoff, floor) in [(3000usize, 0.95), (0, if pct == 1 { 0.90 } else { 0.95 })] {
            idx.set_flat_cutoff(cutoff);
            let got = search_all(&idx, &w, 10, Some(&allow));
            for g in &got {
                assert_eq!(g.len(), 10, "{pct}%: fewer than k results");
                assert!(
                    g.iter().all(|l| allow.contains(*l)),
                    "{pct}%: result outside the filter"
                );
            }
            let want: Vec<Vec<u32>> = w
                .queries
                .iter()
                .map(|q| {
                    flat.search(q, 10, Some(&allow))
                        .unwrap()
                        .into_iter()
                        .map(|n| n.label)
                        .collect()
                })
                .collect();
            let r = recall(&got, &want, 10);
            eprintln!("{pct}% selectivity, cut-off {cutoff}: recall@10 = {r:.4}");
            assert!(
                r >= floor,
                "{pct}% selectivity (cut-off {cutoff}): recall {r} < {floor}"
            );
        }
    }
    // A filter matching fewer than k returns all of them.
    let tiny: RoaringBitmap = [5u32, 77, 9000].into_iter().collect();
    idx.set_flat_cutoff(0);
    let got = idx.search(&w.queries[0], 10, Some(&tiny)).unwrap();
    assert_eq!(got.len(), 3);
}

/// `search_where` (the walk a reader uses to skip labels its snapshot lacks)
/// returns only accepted labels, nearly as well as an exact search over them.
#[test]
fn search_where_skips_rejected_labels_as_stepping_stones() {
    let w = wordnet();
    let idx = build(&w);
    let n = w.base.len() as u32;
    let accept = |l: u32| l < n - 1000 && !l.is_multiple_of(7);
    let allow: RoaringBitmap = (0..n).filter(|&l| accept(l)).collect();
    let mut flat = FlatIndex::new(Space::Cosine, 384);
    for (i, v) in w.base.iter().enumerate() {
        flat.insert(i as u32, v).unwrap();
    }
    let mut got = Vec::new();
    let mut want = Vec::new();
    for q in &w.queries {
        let g: Vec<u32> = idx
            .search_where(q, 10, accept)
            .unwrap()
            .into_iter()
            .map(|n| n.label)
            .collect();
        assert_eq!(g.len(), 10);
        assert!(
            g.iter().all(|&l| accept(l)),
            "a rejected label was returned"
        );
        got.push(g);
        want.push(
            flat.search(q, 10, Some(&allow))
                .unwrap()
                .into_iter()
                .map(|n| n.label)
                .collect(),
        );
    }
    let r = recall(&got, &want, 10);
    eprintln!("search_where recall@10 = {r:.4}");
    assert!(r >= 0.95, "recall {r}");
}
