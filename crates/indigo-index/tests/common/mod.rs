#![allow(dead_code)]
//! The wordnet fixture (`testdata/wordnet`) and recall helpers.

use std::path::Path;

pub struct Wordnet {
    pub base: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    /// Exact top-100 base rows per query by cosine distance (ties: smaller row).
    pub truth: Vec<Vec<u32>>,
}

/// Decodes `testdata/wordnet/vectors.bf16` (format in `docs/format.md`).
fn read_fixture() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wordnet/vectors.bf16");
    let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..8], b"IDGVBF16", "{}: bad magic", path.display());
    let (body, crc) = b.split_at(b.len() - 4);
    assert_eq!(
        crc32c::crc32c(body),
        u32::from_le_bytes(crc.try_into().unwrap()),
        "{}: checksum mismatch",
        path.display()
    );
    let u32_at = |p: usize| u32::from_le_bytes(body[p..p + 4].try_into().unwrap()) as usize;
    assert_eq!(u32_at(8), 1, "fixture version");
    let (dim, nb, nq) = (u32_at(12), u32_at(16), u32_at(20));
    let vals: Vec<f32> = body[24..]
        .chunks_exact(2)
        .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
        .collect();
    assert_eq!(vals.len(), (nb + nq) * dim);
    let rows: Vec<Vec<f32>> = vals.chunks(dim).map(<[f32]>::to_vec).collect();
    let (base, queries) = rows.split_at(nb);
    (base.to_vec(), queries.to_vec())
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
