//! Repair after mass re-insertion: every label of a small graph deleted and
//! inserted again (what `Segment::reconcile` does after a crash with an old
//! checkpoint), then the tombstones repaired away. Repair once left a live node
//! whose in-links had all come from deleted nodes unreachable (seed 84 here; the
//! SIGKILL test of the `indigo` crate found it as a record that no longer found
//! itself).
use indigo_index::{Hnsw, HnswParams, Space};
use rand::{Rng, SeedableRng};

/// Labelled items of `data` (label = row), as `insert_parallel` takes them.
fn items(data: &[Vec<f32>]) -> Vec<(u32, &[f32])> {
    data.iter()
        .enumerate()
        .map(|(i, v)| (i as u32, &v[..]))
        .collect()
}

/// How many rows of `data` are not their own nearest neighbour (each is
/// printed with `what`).
fn misses(idx: &Hnsw, data: &[Vec<f32>], what: &str) -> usize {
    let mut n = 0;
    for (i, v) in data.iter().enumerate() {
        let r = idx.search(v, 1, None).unwrap();
        if r.first().map(|n| n.label) != Some(i as u32) {
            n += 1;
            eprintln!(
                "{what}: {i} not found, got {:?}",
                r.first().map(|n| (n.label, n.distance))
            );
        }
    }
    n
}

#[test]
fn reinserting_everything_keeps_every_vector_findable() {
    let dim = 8;
    let mut fails = 0;
    for seed in 0..100u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = rng.gen_range(20..200);
        let data: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect())
            .collect();
        let p = HnswParams::new(Space::L2, dim);
        let idx = Hnsw::new(p);
        for (i, v) in data.iter().enumerate() {
            idx.insert(i as u32, v).unwrap();
        }
        let items = items(&data);
        idx.insert_parallel(&items, 2).unwrap();
        // Between the re-inserts and the repair, nodes inserted among tombstones
        // may be reachable only through them; after it, every one is found.
        idx.repair().unwrap();
        fails += misses(&idx, &data, &format!("seed {seed} n {n}"));
    }
    assert_eq!(fails, 0);
}

/// Points on one line (`[i, 1, 2]`, the backup test's data), where the
/// neighbour heuristic leaves about one link per side, so one missing link
/// strands a search. Built by two threads, then every point re-inserted by two
/// threads and the tombstones repaired: every point finds itself after each
/// step. Each step failed before its fix (a concurrent insert's links
/// overwritten; neighbours built side by side not seeing each other; repair
/// pruning live links and not looking past dead ones; the heuristic dropping
/// ties).
#[test]
fn collinear_points_stay_findable_through_parallel_builds_and_repair() {
    let data: Vec<Vec<f32>> = (0..500).map(|i| vec![i as f32, 1.0, 2.0]).collect();
    assert_eq!(build_reinsert_repair(&data, 100), 0);
}

/// Builds `data` with two threads, re-inserts it with two threads and repairs,
/// `rounds` times; returns how many points missed themselves after any step.
fn build_reinsert_repair(data: &[Vec<f32>], rounds: usize) -> usize {
    let items = items(data);
    let mut fails = 0;
    for round in 0..rounds {
        let idx = Hnsw::new(HnswParams::new(Space::L2, data[0].len()));
        idx.insert_parallel(&items, 2).unwrap();
        for step in ["build", "re-insert", "repair"] {
            match step {
                "re-insert" => idx.insert_parallel(&items, 2).unwrap(),
                "repair" => {
                    idx.repair().unwrap();
                }
                _ => {}
            }
            fails += misses(&idx, data, &format!("round {round} after {step}"));
        }
    }
    fails
}

/// The same line in 64 dimensions (`[i, 1, 2, 0, …]`), where inserts walk
/// 8-bit codes of each row: the 1 and 2 are coded with a step of i / 255, so
/// the walk's distances are off by up to a unit while neighbours are one unit
/// apart. The links are still chosen on exact distances, and every point
/// finds itself after each step.
#[test]
fn collinear_points_stay_findable_when_builds_walk_codes() {
    let data: Vec<Vec<f32>> = (0..500)
        .map(|i| {
            let mut v = vec![0.0; 64];
            v[..3].copy_from_slice(&[i as f32, 1.0, 2.0]);
            v
        })
        .collect();
    assert_eq!(build_reinsert_repair(&data, 30), 0);
}

/// Many copies of a few vectors (what Chroma's generated test data often holds),
/// built with a large M: copies must not fill every list (each later link would
/// then re-select among all of them), and every distinct vector is still found.
#[test]
fn duplicates_do_not_fill_the_lists() {
    let dim = 4;
    let mut p = HnswParams::new(Space::L2, dim);
    p.max_neighbors = 128;
    let idx = Hnsw::new(p);
    let data: Vec<Vec<f32>> = (0..3000)
        .map(|i| vec![(i % 5) as f32, 1.0, ((i % 5) * 2) as f32, 0.5])
        .collect();
    let items = items(&data);
    idx.insert_parallel(&items, 2).unwrap();
    let stats = idx.stats();
    assert!(
        stats.avg_links0 < 32.0,
        "lists filled with copies: {stats:?}"
    );
    for v in &data[..5] {
        let r = idx.search(v, 1, None).unwrap();
        assert_eq!(r[0].distance, 0.0);
    }
}
