#![allow(dead_code)]
//! The wordnet fixture (`testdata/wordnet`) and recall helpers.

pub struct Wordnet {
    pub base: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    /// Exact top-100 base rows per query by cosine distance (ties: smaller row).
    pub truth: Vec<Vec<u32>>,
}

#[path = "../../../indigo-bench/src/fixture.rs"]
mod fixture;

/// Decodes `testdata/wordnet/vectors.bf16` (format in `docs/format.md`).
fn read_fixture() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    // (The path is from this crate's manifest, at the same depth as indigo-bench's.)
    let (_, base, queries) = fixture::read_wordnet_fixture(&fixture::wordnet_fixture_path())
        .unwrap_or_else(|e| panic!("{e}"));
    (base, queries)
}

fn exact_top(base: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u32> {
    let norm = |v: &[f32]| {
        v.iter()
            .map(|x| (*x as f64) * (*x as f64))
            .sum::<f64>()
            .sqrt()
    };
    let qn = norm(q);
    let mut d: Vec<(f64, u32)> = base
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let dot: f64 = v.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum();
            (1.0 - dot / (norm(v) * qn), i as u32)
        })
        .collect();
    d.select_nth_unstable_by(k, |a, b| a.partial_cmp(b).unwrap());
    d.truncate(k);
    d.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap());
    d.into_iter().map(|x| x.1).collect()
}

pub fn wordnet() -> Wordnet {
    let (base, queries) = read_fixture();
    let truth = queries.iter().map(|q| exact_top(&base, q, 100)).collect();
    Wordnet {
        base,
        queries,
        truth,
    }
}

/// Mean |got ∩ want[..k]| / k.
pub fn recall(got: &[Vec<u32>], want: &[Vec<u32>], k: usize) -> f64 {
    let mut hit = 0usize;
    for (g, w) in got.iter().zip(want) {
        let w: std::collections::HashSet<u32> = w.iter().take(k).copied().collect();
        hit += g.iter().take(k).filter(|x| w.contains(x)).count();
    }
    hit as f64 / (k * got.len()) as f64
}
