//! Readers for the fvecs/ivecs formats and the data sets the benchmarks use.

use std::io;
use std::path::{Path, PathBuf};

/// Row-major vectors of one dimension.
#[derive(Debug, Clone)]
pub struct Vectors {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Vectors {
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

fn read_vecs<T: Copy>(path: &Path, conv: fn([u8; 4]) -> T) -> io::Result<(usize, Vec<T>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    let mut dim = 0usize;
    let mut pos = 0;
    while pos + 4 <= bytes.len() {
        let d = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if dim == 0 {
            dim = d;
        } else if d != dim {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: rows of dimension {dim} and {d}", path.display()),
            ));
        }
        pos += 4;
        let end = pos + 4 * d;
        if end > bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: truncated row", path.display()),
            ));
        }
        out.extend(
            bytes[pos..end]
                .chunks_exact(4)
                .map(|c| conv(c.try_into().unwrap())),
        );
        pos = end;
    }
    Ok((dim, out))
}

pub fn read_fvecs(path: &Path) -> io::Result<Vectors> {
    let (dim, data) = read_vecs(path, f32::from_le_bytes)?;
    Ok(Vectors { dim, data })
}

/// Rows of ids (ground-truth neighbours).
pub fn read_ivecs(path: &Path) -> io::Result<Vec<Vec<u32>>> {
    let (dim, data) = read_vecs(path, |b| i32::from_le_bytes(b) as u32)?;
    Ok(data.chunks(dim.max(1)).map(|c| c.to_vec()).collect())
}

/// `../shared/data/wordnet-minilm-10k` relative to the repository root, or
/// `$INDIGO_DATA_DIR`.
pub fn wordnet_dir() -> PathBuf {
    if let Ok(d) = std::env::var("INDIGO_DATA_DIR") {
        return PathBuf::from(d);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    root.join("shared/data/wordnet-minilm-10k")
}

/// The wordnet-minilm-10k set: base, queries, exact top-100 (cosine).
pub struct Dataset {
    pub name: String,
    pub base: Vectors,
    pub queries: Vectors,
    pub truth: Vec<Vec<u32>>,
}

pub fn wordnet() -> io::Result<Dataset> {
    let d = wordnet_dir();
    Ok(Dataset {
        name: "wordnet-minilm-10k".into(),
        base: read_fvecs(&d.join("base.fvecs"))?,
        queries: read_fvecs(&d.join("query.fvecs"))?,
        truth: read_ivecs(&d.join("groundtruth.ivecs"))?,
    })
}
