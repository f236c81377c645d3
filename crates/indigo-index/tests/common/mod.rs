#![allow(dead_code)]
use std::path::{Path, PathBuf};

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/wordnet-minilm-10k")
}

pub fn read_vecs(path: &Path) -> (usize, Vec<Vec<u8>>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dim = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
    let row = 4 + 4 * dim;
    (dim, b.chunks(row).map(|r| r[4..].to_vec()).collect())
}

pub fn fvecs(path: &Path) -> Vec<Vec<f32>> {
    read_vecs(path)
        .1
        .into_iter()
        .map(|r| {
            r.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
        .collect()
}

pub fn ivecs(path: &Path) -> Vec<Vec<u32>> {
    read_vecs(path)
        .1
        .into_iter()
        .map(|r| {
            r.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
        .collect()
}

pub struct Wordnet {
    pub base: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    pub truth: Vec<Vec<u32>>,
}

pub fn wordnet() -> Wordnet {
    let d = data_dir();
    Wordnet {
        base: fvecs(&d.join("base.fvecs")),
        queries: fvecs(&d.join("query.fvecs")),
        truth: ivecs(&d.join("groundtruth.ivecs")),
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
